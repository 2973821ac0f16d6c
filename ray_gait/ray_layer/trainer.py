"""Step 3 on Ray Train: SkeletonGait(++) with DDP (NCCL on GPU, gloo on CPU), read on demand.

The driver indexes the splits (key columns and file positions only, `ray_gait.data.index`) and
checks the config against them before any worker starts; every worker runs the plain loop of
`ray_gait.training.worker_loop` over a `SequenceReader` of the index, which reads the sequences
its sampler draws (from local disk or object storage) into a cache bounded by `data_cfg.cache_mb`,
and draws maps on the fly when the data set holds poses.  Rank 0 saves checkpoints through
`ray.train.report`; a rerun with the same `save_name` and `storage_path` resumes from the latest
one, and Ray Train restarts failed workers from it (`ray_cfg.max_failures`).
"""
from __future__ import annotations

import contextlib
import logging
import posixpath
import re
import signal
import threading
from typing import Any, Iterator

import ray
import ray.train
import ray.train.torch
import torch
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig, UserCallback
from ray.train.v2._internal.execution.callback import ControllerCallback
from ray.train.v2._internal.execution.controller.state import ReschedulingState, RestartingState
from ray.util.queue import Empty, Queue
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ray_gait.console import Stage, stage
from ray_gait.data.index import SplitIndex
from ray_gait.models.weights import check_state_fits
from ray_gait.evaluation.plots import training_curves_figure, write_figure
from ray_gait.io import fs
from ray_gait.data.sampler import TripletSampler
from ray_gait.data.split import make_reader, partition_splits, split_index
from ray_gait.models import build_model
from ray_gait.ray_layer.session import ensure_ray
from ray_gait.config import TrainConfig
from ray_gait.training.events import run_scalars
from ray_gait.training.losses import LossAggregator
from ray_gait.training.optim import build_optimizer, build_scheduler
from ray_gait.models.checkpoint import read_state
from ray_gait.training.state import saved_checkpoints
from ray_gait.training.worker_loop import LoopContext, train_loop

log = logging.getLogger(__name__)

CURVES = "train_curves.png"


def _restore_source(cfg: TrainConfig, run_dir: str) -> str | None:
    """A checkpoint folder for `restore_hint` (a path, or an iteration saved under this run)."""
    hint = cfg.trainer_cfg.restore_hint
    if isinstance(hint, str):
        return hint
    if not hint:
        return None
    for iteration, folder in saved_checkpoints(run_dir):
        if iteration == hint:
            return folder
    raise FileNotFoundError(f"trainer_cfg.restore_hint: no checkpoint of iteration {hint} under {run_dir}")


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """What every Ray Train worker runs: the plain loop, with Ray's DDP wrapping and `report`."""
    cfg: TrainConfig = loop_config["cfg"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    render_device = str(device) if device.type == "cuda" else None
    indices: dict[str, SplitIndex] = loop_config["indices"]
    train = make_reader(cfg, indices["train"], render_device)
    evaluations = {name: make_reader(cfg, index, render_device, once=True) for name, index in indices.items()
                   if name != "train"} if rank == 0 else {}

    def report(metrics: dict[str, float], folder: str | None) -> None:
        checkpoint = ray.train.Checkpoint.from_directory(folder) if folder else None
        ray.train.report(metrics, checkpoint=checkpoint)

    def wrap(model: torch.nn.Module) -> torch.nn.Module:
        return ray.train.torch.prepare_model(
            model, parallel_strategy_kwargs={"find_unused_parameters": cfg.trainer_cfg.find_unused_parameters})

    checkpoint = ray.train.get_checkpoint()
    with checkpoint.as_directory() if checkpoint is not None else contextlib.nullcontext() as resume:
        ctx = LoopContext(rank, world, device, wrap_model=wrap, resume_from=resume,
                          restore_from=loop_config.get("restore_path"), tensorboard_dir=loop_config.get("tensorboard_dir"))
        train_loop(cfg, loop_config["config"], train, evaluations, ctx, report)


def check_training_config(cfg: TrainConfig) -> None:
    """Build what the workers will build (model, losses, optimizer, schedule), so that a bad config fails
    here, before any worker starts."""
    probe = torch.nn.Linear(1, 1)
    build_scheduler(build_optimizer(probe, cfg.optimizer_cfg),
                    dict(cfg.scheduler_cfg, warmup_iter=cfg.trainer_cfg.warmup_iter), cfg.trainer_cfg.total_iter)
    LossAggregator(cfg.loss_cfg)
    build_model(cfg.model_cfg)


def training_indices(cfg: TrainConfig) -> dict[str, SplitIndex]:
    """The indices of the splits a run reads ("train", "val" when held out, "test" with `with_test`),
    checked against the config: class_num and the P x K split over the workers."""
    indices = {"train": split_index(cfg, "TRAIN_SET")}
    if partition_splits(cfg)["VAL_SET"]:
        indices["val"] = split_index(cfg, "VAL_SET")
    if cfg.trainer_cfg.with_test:
        indices["test"] = split_index(cfg, "TEST_SET")
    labels = indices["train"].labels
    ids = len(set(labels))
    class_num = cfg.model_cfg.get("SeparateBNNecks", {}).get("class_num", 0)
    if class_num < ids:
        raise ValueError(f"model_cfg.SeparateBNNecks.class_num {class_num} < {ids} training ids in "
                         f"{indices['train'].root}")
    TripletSampler(labels, cfg.trainer_cfg.sampler.get("batch_size", [0, 0]), rank=0,
                   world_size=cfg.ray_cfg.num_workers)
    return indices


def run_folder(cfg: TrainConfig, storage: str | None = None) -> str:
    """The run's folder (path or URI): `<storage, else ray_cfg.storage_path>/<trainer_cfg.save_name>`."""
    return posixpath.join(fs.absolute(storage) if storage else cfg.ray_cfg.storage_path, cfg.trainer_cfg.save_name)


def training_bundle(cfg: TrainConfig) -> dict[str, float]:
    """What Ray reserves for one training worker (a GPU each with ray_cfg.use_gpu)."""
    bundle = cfg.ray_cfg.worker_resources()
    if cfg.ray_cfg.use_gpu:
        bundle.setdefault("GPU", 1.0)
    return bundle


def make_trainer(cfg: TrainConfig, config_tree: dict[str, Any], storage: str | None = None,
                 callbacks: list[Any] | None = None) -> ray.train.torch.TorchTrainer:
    """A TorchTrainer for `cfg` (run `<storage>/<save_name>`), its config and splits checked first."""
    check_training_config(cfg)
    indices = training_indices(cfg)
    run_dir = run_folder(cfg, storage)
    restore_path = _restore_source(cfg, run_dir)
    if restore_path:
        try:
            saved = read_state(restore_path)
        except FileNotFoundError as err:
            raise FileNotFoundError(f"trainer_cfg.restore_hint: {err}") from err
        check_state_fits(cfg.model_cfg, saved["model"], cfg.trainer_cfg.restore_ckpt_strict, restore_path)
    ray_cfg = cfg.ray_cfg
    ensure_ray(shared={"data_cfg.dataset_root": cfg.data_cfg.dataset_root, "ray_cfg.storage_path": run_dir},
               resources=training_bundle(cfg), what="training (ray_cfg.num_workers, use_gpu, resources_per_worker)")
    name = cfg.trainer_cfg.save_name
    resources = ray_cfg.worker_resources()
    loop_config = {"cfg": cfg, "config": config_tree, "indices": indices, "restore_path": restore_path,
                   "tensorboard_dir": posixpath.join(run_dir, "tensorboard")}
    log.info("Ray Train: %d worker(s)%s, %d training sequences (%s), run %s", ray_cfg.num_workers,
             " on GPU" if ray_cfg.use_gpu else "", len(indices["train"]), indices["train"].kind, run_dir)
    return ray.train.torch.TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=ray_cfg.num_workers, use_gpu=ray_cfg.use_gpu,
                                     resources_per_worker=resources),
        run_config=RunConfig(name=name, storage_path=posixpath.dirname(run_dir), callbacks=callbacks,
                             failure_config=FailureConfig(max_failures=ray_cfg.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=cfg.trainer_cfg.keep_checkpoints)),
    )


RESTART_EVENT = "_ray_gait_restart"


_NODE_ADDRESS = re.compile(r"(?<![\d.])((?:\d{1,3}\.){3}\d{1,3})(?::\d+)?(?![\d.])")


def failure_summary(error: BaseException | None, limit: int = 300) -> str:
    """One line of a worker group's failure: the node it names, if any, and its last line that names an error
    (Ray's messages are long)."""
    message = str(error or "")
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    named = [line for line in lines if "Error" in line or "died" in line or "unavailable" in line]
    text = (named or lines or [type(error).__name__])[-1]
    text = text if len(text) <= limit else text[:limit - 3] + "..."
    nodes = list(dict.fromkeys(_NODE_ADDRESS.findall(message)))
    return f"a worker on node {', '.join(nodes)} was lost: {text}" if nodes else text


CHECKPOINT_KEY = "_ray_gait_checkpoint"


class _RunEvents(UserCallback):
    """Rank 0's metrics of every report (with the name of its checkpoint folder), put by Ray Train's controller
    (where this callback runs) on a queue that a driver thread reads: reports move the training's progress
    stage, and a restart of the worker group (`_RestartWatch`, on the same queue) is one console line."""

    def __init__(self) -> None:
        self.queue: Queue | None = None
        self.restarts = _RestartWatch(self)

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        """Pass rank 0's metrics on, and the checkpoint's folder name."""
        if metrics and self.queue is not None:
            name = posixpath.basename(checkpoint.path.rstrip("/")) if checkpoint is not None else None
            self.queue.put({**metrics[0], CHECKPOINT_KEY: name})

    @contextlib.contextmanager
    def shown_in(self, progress: Stage, run_dir: str) -> Iterator[None]:
        """Create the queue (Ray is up) and show each report and restart until the block ends."""
        # on the driver's node, beside Ray Train's controller: a worker node's loss must not take the queue with it
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        self.queue = self.restarts.queue = queue = Queue(actor_options={"num_cpus": 0, "scheduling_strategy": here})
        finished = threading.Event()
        latest: list[tuple[int, str]] = []

        def follow() -> None:
            while True:
                try:
                    item = queue.get(timeout=0.5)
                    if RESTART_EVENT in item:
                        show_restart(item[RESTART_EVENT], run_dir, latest[-1] if latest else None)
                        continue
                    if item.get(CHECKPOINT_KEY) and "iteration" in item:
                        latest.append((int(item["iteration"]), item[CHECKPOINT_KEY]))
                    show_report(progress, item)
                except Empty:
                    if finished.is_set():
                        return
                except ray.exceptions.RayError:                     # the queue is gone: nothing more to show
                    return

        thread = threading.Thread(target=follow, name="ray_gait-train-progress", daemon=True)
        thread.start()
        try:
            yield
        finally:
            finished.set()
            thread.join(timeout=10)
            queue.shutdown(force=True)
            self.queue = self.restarts.queue = None


class _RestartWatch(ControllerCallback):
    """Puts each restart of the worker group after a failure (Ray Train's controller state) on the run's queue."""

    def __init__(self, events: _RunEvents) -> None:
        self.queue: Queue | None = events.queue

    def after_controller_state_update(self, previous_state: Any, current_state: Any) -> None:
        """Pass on a restart: the worker group failed and is started again from the latest checkpoint."""
        if isinstance(current_state, (RestartingState, ReschedulingState)) and self.queue is not None:
            self.queue.put({RESTART_EVENT: failure_summary(current_state.training_failed_error)})


def show_report(progress: Stage, metrics: dict[str, Any]) -> None:
    """Move the training stage to a report's iteration, with its loss and Rank-1 values; warn of left-out sequences."""
    info = {"loss": float(metrics["loss"])} if "loss" in metrics else {}
    for key in sorted(metrics):
        split, _, name = key.partition("/")
        if name == "rank1":
            info[key] = float(metrics[key])
        elif name == "unreadable" and metrics[key]:
            log.warning("iteration %s: %d %s sequence(s) left out of the evaluation (unreadable)",
                        metrics.get("iteration"), int(metrics[key]), split)
    progress.advance_to(int(metrics.get("iteration", progress.done)), **info)


def show_restart(failure: str, run_dir: str, latest: tuple[int, str] | None) -> None:
    """One console line for a restart of the worker group: what failed, and where the run goes on from."""
    if latest:
        iteration, name = latest
        where = f"checkpoint {posixpath.join(run_dir, name)} (iteration {iteration})"
    else:
        found = saved_checkpoints(run_dir)
        where = (f"checkpoint {found[-1][1]} (iteration {found[-1][0]})" if found
                 else "the start (no checkpoint saved yet)")
    log.warning("training: the worker group failed (%s); restarting from %s", failure, where)


def _resumed_from(run_dir: str) -> tuple[int, str | None]:
    """(iteration, folder) of the run's latest checkpoint (where a rerun resumes); (0, None) for a new run."""
    found = saved_checkpoints(run_dir)
    return found[-1] if found else (0, None)


def result_checkpoint(cfg: TrainConfig, result: ray.train.Result) -> str | None:
    """The URI (or local path) of a Result's checkpoint: Ray Train returns object-store paths without their scheme."""
    if result.checkpoint is None:
        return None
    return posixpath.join(run_folder(cfg), posixpath.basename(result.checkpoint.path.rstrip("/")))


def write_training_curves(run_dir: str) -> str | None:
    """`<run>/train_curves.png`: loss and Rank-1 per iteration from the run's TensorBoard events; None without them."""
    figure = training_curves_figure(run_scalars(posixpath.join(run_dir, "tensorboard")), posixpath.basename(run_dir))
    return None if figure is None else write_figure(posixpath.join(run_dir, CURVES), figure)


def run_training(cfg: TrainConfig, config_tree: dict[str, Any]) -> ray.train.Result:
    """Train with Ray Train as `cfg` says, shown as one progress stage of iterations; writes the run's training
    curves. Returns Ray Train's Result (metrics, checkpoint, path)."""
    run_dir = run_folder(cfg)
    events = _RunEvents()
    trainer = make_trainer(cfg, config_tree, callbacks=[events, events.restarts])
    resumed, folder = _resumed_from(run_dir)
    if folder:
        log.info("resuming run %s from checkpoint %s (iteration %d of %d)", run_dir, folder, resumed,
                 cfg.trainer_cfg.total_iter)
    sigint = signal.getsignal(signal.SIGINT)
    try:
        with stage("train", total=cfg.trainer_cfg.total_iter, unit="iter",
                   initial=resumed) as progress, events.shown_in(progress, run_dir):
            result = trainer.fit()
    except ray.train.TrainingFailedError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if "Error" in line and ":" in line]
        raise RuntimeError(f"training failed: {lines[-1] if lines else exc}") from exc
    finally:
        # fit() leaves a Ctrl-C handler that holds the finished run's TrainController actor (~500 MB) alive
        if sigint is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, sigint)
    curves = write_training_curves(run_dir)
    if curves:
        log.info("training curves: %s", curves)
    return result
