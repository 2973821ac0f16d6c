"""Step 3 on Ray Train: SkeletonGait(++) with DDP (NCCL on GPU, gloo on CPU), fed from Parquet.

The driver reads the training split with Ray Data (once, into the object store) and hands every
worker the whole split
(`datasets_to_split=[]`: P x K sampling needs every identity); each worker keeps it in memory and
builds its share of each global P x K batch in a prefetch thread.  Rank 0 saves checkpoints
through `ray.train.report`; a rerun with the same `save_name` and `storage_path` resumes from the
latest one, and Ray Train restarts failed workers from it (`ray_cfg.max_failures`).
"""
from __future__ import annotations

import logging
import os
import tempfile
import time
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import ray
import ray.data
import ray.train
import ray.train.torch
import torch
from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig

from ray_gait.io import fs
from ray_gait.io.dataset import decode_heatmap, decode_silhouette, parquet_files
from ray_gait.models import build_model
from ray_gait.ray_layer.session import ensure_ray
from ray_gait.training.config import TrainConfig, config_from_tree, resolve_path
from ray_gait.training.data import (BatchMaker, build_sequence_set, input_columns, prefetch, read_partition,
                                    split_ids)
from ray_gait.training.losses import LossAggregator
from ray_gait.training.loop import autocast_dtype, make_scaler, set_train_mode, train_step, with_sync_bn
from ray_gait.training.optim import build_optimizer, build_scheduler
from ray_gait.training.state import TrainState, read_state, restore_state, save_state, saved_checkpoints

log = logging.getLogger(__name__)

KEY_COLUMNS = ["id", "type", "view", "seq", "frames", "height", "width"]
SIL_COLUMNS = ["sil_frames", "sil_height", "sil_width"]


def dataset_columns(cfg: TrainConfig) -> list[str]:
    """The Parquet columns the configured model needs; a clear error if the data set lacks them."""
    columns = input_columns(cfg.model_cfg.get("model", ""), cfg.data_cfg.data_in_use)
    root = resolve_path(cfg, cfg.data_cfg.dataset_root)
    parts = parquet_files(root) if fs.is_dir(fs.resolve(root)) else []
    if not parts:
        raise FileNotFoundError(f"data_cfg.dataset_root {root} holds no ray_gait data set (Parquet parts)")
    loc = fs.resolve(root).join(parts[0])
    present = set(pq.read_schema(loc.path, filesystem=loc.fs).names)
    wanted = KEY_COLUMNS + ["heatmap"] + (SIL_COLUMNS + ["silhouette"] if "silhouette" in columns else [])
    missing = [c for c in wanted if c not in present]
    if missing:
        hint = " (pair it with silhouettes first: ray-gait link)" if "silhouette" in missing else ""
        raise ValueError(f"{cfg.model_cfg['model']} needs columns {missing} that {root} lacks{hint}")
    return wanted


def _decoded_rows(shard: Any) -> Any:
    for batch in shard.iter_batches(batch_size=32, batch_format="numpy"):
        for i in range(len(batch["id"])):
            row = {k: batch[k][i] for k in batch}
            row["heatmap"] = decode_heatmap(row)
            if "silhouette" in row:
                row["silhouette"] = decode_silhouette(row)
            yield row


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


class _Tester:
    """Rank 0's evaluation at every save_iter: the test split (OpenGait's `with_test`) or the validation split."""

    def __init__(self, cfg: TrainConfig, columns: tuple[str, ...], device: torch.device, split: str) -> None:
        from ray_gait.data.frames import FrameSampling
        from ray_gait.data.transforms import build_transform
        self.cfg, self.device, self.split = cfg, device, split
        self.data = build_sequence_set(_decoded_rows(ray.train.get_dataset_shard(split)), columns)
        self.transforms = build_transform(cfg.evaluator_cfg.transform)
        self.sampling = FrameSampling.from_config(cfg.evaluator_cfg.sampler)

    def evaluate(self, model: torch.nn.Module) -> dict[str, float]:
        """`<split>/<condition>/rank1` and `<split>/rank1` of the current weights."""
        from ray_gait.evaluation.embed import embed_sequence
        from ray_gait.evaluation.protocols import get_protocol
        from ray_gait.ray_layer.evaluate import protocol_kwargs
        net = model.module if hasattr(model, "module") else model
        was_training = net.training
        net.eval()
        emb = np.stack([embed_sequence(net, arrays, self.transforms, self.sampling, self.device)
                        for arrays in self.data.inputs])
        if was_training:
            net.train()
        keys = np.array(self.data.keys)
        result = get_protocol(self.cfg.evaluator_cfg.eval_func)(emb, keys[:, 0], keys[:, 1], keys[:, 2],
                                                                **protocol_kwargs(self.cfg))
        out = {f"{self.split}/{cond}/rank1": float(v["rank1"]) for cond, v in result["results"].items()
               if "rank1" in v}
        if "rank1" in result.get("overall", {}):
            out[f"{self.split}/rank1"] = float(result["overall"]["rank1"])
        return out


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """What every Ray Train worker runs (plain PyTorch plus prepare_model and report)."""
    cfg = config_from_tree(loop_config["config"], source=loop_config["source"])
    trainer_cfg = cfg.trainer_cfg
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(trainer_cfg.seed)
    columns = input_columns(cfg.model_cfg["model"], cfg.data_cfg.data_in_use)
    data = build_sequence_set(_decoded_rows(ray.train.get_dataset_shard("train")), columns)
    maker = BatchMaker(data, trainer_cfg.sampler, trainer_cfg.transform, seed=trainer_cfg.seed, rank=rank,
                       world_size=world)
    class_num = cfg.model_cfg.get("SeparateBNNecks", {}).get("class_num", 0)
    if class_num < maker.num_classes:
        raise ValueError(f"model_cfg.SeparateBNNecks.class_num {class_num} < {maker.num_classes} training ids")
    model = with_sync_bn(build_model(cfg.model_cfg), trainer_cfg.sync_BN, device, world)
    model = ray.train.torch.prepare_model(
        model, parallel_strategy_kwargs={"find_unused_parameters": trainer_cfg.find_unused_parameters})
    losses = LossAggregator(cfg.loss_cfg).to(device)
    optimizer = build_optimizer(model, cfg.optimizer_cfg)
    scheduler = build_scheduler(optimizer, dict(cfg.scheduler_cfg, warmup_iter=trainer_cfg.warmup_iter),
                                trainer_cfg.total_iter)
    amp_dtype = autocast_dtype(trainer_cfg.enable_float16, device)
    state = TrainState(model, optimizer, scheduler, make_scaler(amp_dtype, device))
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            restore_state(state, read_state(folder))
    elif loop_config.get("restore_path"):
        restore_state(state, read_state(loop_config["restore_path"]), strict=trainer_cfg.restore_ckpt_strict,
                      reset_optimizer=trainer_cfg.optimizer_reset, reset_scheduler=trainer_cfg.scheduler_reset)
    testers = [_Tester(cfg, columns, device, split) for split in loop_config.get("eval_splits", [])] if rank == 0 else []
    writer = None
    if rank == 0 and loop_config.get("tensorboard_dir"):
        from tensorboardX import SummaryWriter
        writer = SummaryWriter(loop_config["tensorboard_dir"], purge_step=state.iteration)
    if rank == 0:
        log.info("training %s on %d sequences of %d ids, %d worker(s) on %s, from iteration %d to %d",
                 cfg.model_cfg["model"], len(data), maker.num_classes, world, device.type, state.iteration,
                 trainer_cfg.total_iter)
    window_started, window_steps, window_seqs, window_wait = time.perf_counter(), 0, 0, 0.0
    sums: dict[str, float] = {}
    for step, batch, waited in prefetch(maker, state.iteration, trainer_cfg.total_iter,
                                        workers=cfg.data_cfg.num_workers):
        set_train_mode(model, trainer_cfg.fix_BN)
        info = train_step(model, losses, optimizer, state.scaler, batch, device, amp_dtype)
        scheduler.step()
        state.iteration = step + 1
        window_steps += 1
        window_seqs += batch[0].shape[0] if batch[2] is None else len(batch[2])
        window_wait += waited
        for key, value in info.items():
            sums[key] = sums.get(key, 0.0) + value
        done = state.iteration == trainer_cfg.total_iter
        saving = state.iteration % trainer_cfg.save_iter == 0 or done
        if not (state.iteration % trainer_cfg.log_iter == 0 or saving):
            continue
        elapsed = time.perf_counter() - window_started
        metrics = {k: v / window_steps for k, v in sums.items()}
        metrics.update(iteration=state.iteration, lr=optimizer.param_groups[0]["lr"],
                       sequences_per_s=window_seqs * world / max(elapsed, 1e-9), data_wait_s=window_wait)
        if writer is not None:
            for key, value in metrics.items():
                writer.add_scalar(key if "/" in key else f"train/{key}", value, state.iteration)
            writer.flush()
        if rank == 0:
            log.info("iter %d/%d  loss %.4f  acc %.3f  lr %.2e  %.1f seq/s  data wait %.2f s", state.iteration,
                     trainer_cfg.total_iter, metrics.get("loss", float("nan")),
                     metrics.get("softmax/accuracy", float("nan")), metrics["lr"], metrics["sequences_per_s"],
                     window_wait)
        for tester in testers if saving else []:
            found = tester.evaluate(model)
            metrics.update(found)
            log.info("iter %d %s: %s", state.iteration, tester.split, "  ".join(f"{k} {v:.2f}" for k, v in found.items()))
        if saving:
            with tempfile.TemporaryDirectory() as folder:
                checkpoint = None
                if rank == 0:
                    save_state(folder, state, loop_config["config"])
                    checkpoint = ray.train.Checkpoint.from_directory(folder)
                ray.train.report(metrics, checkpoint=checkpoint)
        else:
            ray.train.report(metrics)
        window_started, window_steps, window_seqs, window_wait, sums = time.perf_counter(), 0, 0, 0.0, {}
    if writer is not None:
        writer.close()


def partition_splits(cfg: TrainConfig) -> dict[str, list[str]]:
    """TRAIN_SET / VAL_SET / TEST_SET identities of the configured partition and `data_cfg.val_ids`."""
    return split_ids(read_partition(resolve_path(cfg, cfg.data_cfg.dataset_partition)), cfg.data_cfg.val_ids)


def _split_dataset(cfg: TrainConfig, columns: list[str], split: str) -> ray.data.Dataset:
    """The rows of one split (TRAIN_SET, VAL_SET or TEST_SET), read once into the object store."""
    root = resolve_path(cfg, cfg.data_cfg.dataset_root)
    ids = set(partition_splits(cfg)[split])
    ds = ray.data.read_parquet(fs.resolve(root).uri).select_columns(columns)
    # Read once, on the driver's side, into the object store: every worker then iterates these
    # blocks without scheduling read tasks (which would wait forever for the CPUs the training
    # workers hold on a small machine).
    ds = ds.filter(lambda row: str(row["id"]) in ids).materialize()
    if ds.count() == 0:
        raise ValueError(f"no sequence of the partition's {split} found in {root}")
    return ds


def check_training_config(cfg: TrainConfig) -> list[str]:
    """Build what the workers will build (model, losses, optimizer, schedule) and check the data set's columns,
    so that a bad config fails here, before any worker starts; returns the columns to read."""
    columns = dataset_columns(cfg)
    probe = torch.nn.Linear(1, 1)
    build_scheduler(build_optimizer(probe, cfg.optimizer_cfg),
                    dict(cfg.scheduler_cfg, warmup_iter=cfg.trainer_cfg.warmup_iter), cfg.trainer_cfg.total_iter)
    LossAggregator(cfg.loss_cfg)
    build_model(cfg.model_cfg)
    return columns


def make_trainer(cfg: TrainConfig, config_tree: dict[str, Any], storage: str | None = None,
                 callbacks: list[Any] | None = None) -> ray.train.torch.TorchTrainer:
    """A TorchTrainer for `cfg` (run `<storage>/<save_name>`), its data read and its config checked first."""
    columns = check_training_config(cfg)
    ensure_ray()
    ray_cfg = cfg.ray_cfg
    storage = storage or resolve_path(cfg, ray_cfg.storage_path)
    storage = storage if "://" in storage else os.path.abspath(storage)
    name = cfg.trainer_cfg.save_name
    run_dir = os.path.join(storage, name)
    restore_path = _restore_source(cfg, run_dir) if "://" not in storage else None
    resources = dict(ray_cfg.resources_per_worker) or {"CPU": ray_cfg.cpus_per_worker}
    datasets = {"train": _split_dataset(cfg, columns, "TRAIN_SET")}
    eval_splits = []
    if partition_splits(cfg)["VAL_SET"]:
        datasets["val"] = _split_dataset(cfg, columns, "VAL_SET")
        eval_splits.append("val")
    if cfg.trainer_cfg.with_test:
        datasets["test"] = _split_dataset(cfg, columns, "TEST_SET")
        eval_splits.append("test")
    loop_config = {"config": config_tree, "source": cfg.source, "restore_path": restore_path,
                   "eval_splits": eval_splits,
                   "tensorboard_dir": os.path.join(run_dir, "tensorboard") if "://" not in storage else None}
    log.info("Ray Train: %d worker(s)%s, run %s", ray_cfg.num_workers, " on GPU" if ray_cfg.use_gpu else "", run_dir)
    return ray.train.torch.TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=ray_cfg.num_workers, use_gpu=ray_cfg.use_gpu,
                                     resources_per_worker=resources),
        run_config=RunConfig(name=name, storage_path=storage, callbacks=callbacks,
                             failure_config=FailureConfig(max_failures=ray_cfg.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=cfg.trainer_cfg.keep_checkpoints)),
        datasets=datasets,
        dataset_config=DataConfig(datasets_to_split=[]),
    )


def run_training(cfg: TrainConfig, config_tree: dict[str, Any]) -> ray.train.Result:
    """Train with Ray Train as `cfg` says; returns Ray Train's Result (metrics, checkpoint, path)."""
    trainer = make_trainer(cfg, config_tree)
    try:
        return trainer.fit()
    except ray.train.TrainingFailedError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if "Error" in line and ":" in line]
        raise RuntimeError(f"training failed: {lines[-1] if lines else exc}") from exc
