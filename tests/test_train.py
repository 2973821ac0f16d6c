"""Step 3 on Ray Train for real: 2 CPU workers (gloo), tiny widths, the synthetic data set."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ray_gait.cli import main
from ray_gait.config import config_from_tree, load_train_config
from ray_gait.models.checkpoint import read_state
from ray_gait.training.state import saved_checkpoints
from ray_gait.yaml_config import apply_overrides, read_yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "skeletongait" / "skeletongait_synth.yaml"


def _overrides(data: Path, paired: Path, runs: Path, name: str, **extra) -> dict:
    values = {
        "data_cfg.dataset_root": str(paired), "data_cfg.dataset_partition": str(data / "partition.json"),
        "ray_cfg.storage_path": str(runs), "trainer_cfg.save_name": name, "model_cfg.SeparateBNNecks.class_num": 4,
        "trainer_cfg.sampler.batch_size": [4, 2], "trainer_cfg.sampler.frames_num_fixed": 8,
        "trainer_cfg.total_iter": 6, "trainer_cfg.log_iter": 2, "trainer_cfg.save_iter": 2,
        "trainer_cfg.warmup_iter": 0, "trainer_cfg.enable_float16": False,
        "scheduler_cfg": {"scheduler": "MultiStepLR", "milestones": [4]},
        "ray_cfg.num_workers": 2, "ray_cfg.max_failures": 0,
    }
    values.update(extra)
    return values


def _args(overrides: dict) -> list[str]:
    out = ["train", "--cfgs", str(CONFIG)]
    for key, value in overrides.items():
        out += ["--set", f"{key}={json.dumps(value) if not isinstance(value, str) else value}"]
    return out


def _final_state(runs: Path, name: str) -> dict:
    states = [read_state(str(p)) for p in (runs / name).glob("checkpoint_*") if (p / "state.pt").exists()]
    return max(states, key=lambda s: s["iteration"])


def test_config_loader_names_bad_keys():
    tree = apply_overrides(read_yaml(str(CONFIG)), {"trainer_cfg.totl_iter": 3})
    with pytest.raises(ValueError, match="trainer_cfg: unknown key.*totl_iter"):
        config_from_tree(tree, str(CONFIG))
    with pytest.raises(ValueError, match="trainer_cfg.log_iter: expected an integer"):
        load_train_config(str(CONFIG), {"trainer_cfg.log_iter": "often"})


def test_missing_model_input_is_an_error_before_workers_start(synth_maps, tmp_path, capsys):
    data, _ = synth_maps
    maps_only = next((data.parent / "maps").glob("synth_sigma_*"))
    args = _args(_overrides(data, maps_only, tmp_path, "pp"))
    args[2] = str(CONFIG.with_name("skeletongait++_synth.yaml"))
    assert main(args) == 1
    assert "ray-gait link" in capsys.readouterr().err


def test_too_few_classes_fail_on_the_driver_before_any_worker(synth_maps, tmp_path, capsys):
    data, paired = synth_maps
    assert main(_args(_overrides(data, paired, tmp_path, "few", **{"model_cfg.SeparateBNNecks.class_num": 3}))) == 1
    assert "class_num 3 < 4 training ids" in capsys.readouterr().err
    assert not (tmp_path / "few").exists(), "no Ray Train run was started"


def test_restore_weights_that_do_not_fit_fail_on_the_driver_before_any_worker(synth_maps, tmp_path, capsys):
    """trainer_cfg.restore_hint naming weights of another class_num is refused with the file and the key, before
    a Ray Train run starts (each worker used to fail on it, `max_failures` times)."""
    from ray_gait.models import build_model, export_opengait_checkpoint
    data, paired = synth_maps
    weights = tmp_path / "five.pt"
    export_opengait_checkpoint(build_model(load_train_config(str(CONFIG), {
        "model_cfg.SeparateBNNecks.class_num": 5}).model_cfg).state_dict(), str(weights))
    assert main(_args(_overrides(data, paired, tmp_path, "fine", **{"trainer_cfg.restore_hint": str(weights)}))) == 1
    assert f"{weights} does not fit DeepGaitV2: shape mismatch for BNNecks.fc_bin" in capsys.readouterr().err
    missing = {"trainer_cfg.restore_hint": str(tmp_path / "no")}
    assert main(_args(_overrides(data, paired, tmp_path, "fine", **missing))) == 1
    assert f"trainer_cfg.restore_hint: no checkpoint at {tmp_path / 'no'}" in capsys.readouterr().err
    # the workers restore with read_state: a bare state_dict (no iteration) is refused by it, here
    bare = tmp_path / "bare.pt"
    torch.save(build_model(load_train_config(str(CONFIG), {"model_cfg.SeparateBNNecks.class_num": 4}).model_cfg)
               .state_dict(), bare)
    assert main(_args(_overrides(data, paired, tmp_path, "fine", **{"trainer_cfg.restore_hint": str(bare)}))) == 1
    assert f"{bare}: not a ray_gait checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "fine").exists(), "no Ray Train run was started"


def test_loss_decreases_and_with_test_reports_the_rank1_of_the_saved_weights(synth_maps, tmp_path):
    data, paired = synth_maps
    overrides = _overrides(data, paired, tmp_path, "learn", **{"trainer_cfg.total_iter": 24,
                                                               "trainer_cfg.log_iter": 4, "trainer_cfg.save_iter": 24,
                                                               "trainer_cfg.with_test": True,
                                                               "scheduler_cfg": {"scheduler": "MultiStepLR",
                                                                                 "milestones": [100]}})
    assert main(_args(overrides)) == 0
    events = list((tmp_path / "learn" / "tensorboard").glob("events.out.tfevents.*"))
    assert events, "TensorBoard event files are written"
    from ray_gait.training.events import scalar_series, scalars
    losses = scalars(events, "train/loss")
    assert len(losses) == 6
    assert sum(losses[-2:]) / 2 < 0.9 * sum(losses[:2]) / 2, losses
    assert (tmp_path / "learn" / "train_curves.png").stat().st_size > 2000
    checkpoint = next(p for p in (tmp_path / "learn").glob("checkpoint_*") if (p / "state.pt").exists())
    # rank 0's test pass at save_iter (with_test) against the saved weights evaluated here, in a fresh model in this
    # process (that the Ray Data evaluation gives the same: test_train_streaming's SkeletonGait++ run)
    from ray_gait.data.split import make_reader, split_index
    from ray_gait.models.weights import load_eval_weights
    from ray_gait.models import build_model
    from ray_gait.training.worker_loop import _evaluate
    cfg = config_from_tree(apply_overrides(read_yaml(str(CONFIG)), overrides), str(CONFIG))
    model = build_model(cfg.model_cfg)
    assert load_eval_weights(model, str(checkpoint))["iteration"] == 24
    source = make_reader(cfg, split_index(cfg, "TEST_SET"), once=True)
    assert len(source.keys) == 64
    here = _evaluate(model, cfg, torch.device("cpu"), "test", source)
    assert here.pop("test/unreadable") == 0
    assert set(here) == {"test/NM/rank1", "test/BG/rank1", "test/CL/rank1", "test/rank1"}
    for tag, value in here.items():
        assert scalar_series(events, tag) == [(24, pytest.approx(value, abs=1e-4))], tag
    out = tmp_path / "opengait.pt"
    assert main(["export-checkpoint", "--checkpoint", str(checkpoint), "--out", str(out)]) == 0
    from ray_gait.models import build_model, load_opengait_checkpoint
    exported = load_opengait_checkpoint(str(out))
    assert set(exported) >= {"model", "optimizer", "scheduler", "iteration"} and exported["iteration"] == 24
    model = build_model(load_train_config(str(CONFIG), {"model_cfg.SeparateBNNecks.class_num": 4}).model_cfg,
                        weights=str(out), strict=True)
    assert sum(p.numel() for p in model.parameters()) > 0


# plain SGD: the update is proportional to the gradient (Adam's first step is lr * sign(g), which flips on
# gradients that are zero up to the all-reduce's rounding)
SGD = {"solver": "SGD", "lr": 0.1, "momentum": 0.0, "weight_decay": 0.0}
REFERENCE_ITERS = 10


@pytest.fixture(scope="module")
def straight(synth_maps, tmp_path_factory):
    """An uninterrupted 2-worker run (plain SGD, a checkpoint at every iteration, all kept): the reference of
    the DDP step and of the interrupted runs. Returns (runs folder, its overrides)."""
    data, paired = synth_maps
    runs = tmp_path_factory.mktemp("runs")
    overrides = _overrides(data, paired, runs, "straight", **{
        "optimizer_cfg": SGD, "trainer_cfg.total_iter": REFERENCE_ITERS, "trainer_cfg.save_iter": 1,
        "trainer_cfg.log_iter": 1, "trainer_cfg.keep_checkpoints": REFERENCE_ITERS})
    assert main(_args(overrides)) == 0
    return runs, overrides


def _saved(run: Path) -> dict[int, str]:
    """{iteration: checkpoint folder} of a finished run."""
    return dict(saved_checkpoints(str(run)))


def _registered(run: Path) -> int:
    """The iteration of the latest checkpoint Ray Train has registered for the run, from the state its controller
    persists beside the checkpoints (what a restarted worker group or a rerun resumes from); 0 before any.
    A checkpoint folder is on disk up to a poll interval before it is registered: a worker killed in between
    takes its report with it."""
    from ray.train.v2._internal.constants import CHECKPOINT_MANAGER_SNAPSHOT_FILENAME
    try:
        latest = json.loads((run / CHECKPOINT_MANAGER_SNAPSHOT_FILENAME).read_text())["latest_checkpoint_result"]
        return int(latest["metrics"]["iteration"]) if latest else 0
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def _wait(condition, what: str, process: subprocess.Popen, timeout: float = 240.0, every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the run ended ({process.returncode}) before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)


def test_killed_worker_and_killed_run_resume_to_the_uninterrupted_weights(straight, ray_session):
    """The reference config run as a Ray job entry point: a Train worker is SIGKILLed once Ray Train has registered
    a checkpoint (it restarts the worker group from its latest, `ray_cfg.max_failures`), then the whole driver once
    the restarted group has had one registered; a rerun resumes from the latest. The end state must equal the
    uninterrupted run's."""
    runs, reference = straight
    run = runs / "resumed"
    args = _args(dict(reference, **{"trainer_cfg.save_name": "resumed", "ray_cfg.max_failures": 1}))
    cmd = [sys.executable, str(ROOT / "jobs" / "train.py")] + args[1:]
    env = dict(os.environ, RAY_ADDRESS=ray_session)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        _wait(lambda: _registered(run) >= 1, "a registered checkpoint", proc)
        first_group = _processes_titled("ray::RayTrainWorker")
        assert len(first_group) == 2, first_group
        os.kill(first_group[-1], signal.SIGKILL)
        assert _registered(run) < REFERENCE_ITERS, "the worker kill must land mid-run"
        _wait(lambda: len(set(_processes_titled("ray::RayTrainWorker")) - set(first_group)) == 2,
              "a restarted worker group", proc)
        restored_from = _registered(run)
        _wait(lambda: _registered(run) > restored_from, "a registered checkpoint of the restarted group", proc,
              every=0.05)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 60          # the job's actors end with its driver: then nothing more is saved
    while _processes_titled("ray::RayTrainWorker") and time.monotonic() < deadline:
        time.sleep(0.2)
    stopped_at = _registered(run)
    assert restored_from < stopped_at < REFERENCE_ITERS, "the driver kill must land mid-run"
    assert main(args) == 0, "the rerun finishes the run"
    # one TensorBoard file per worker group: the first group's, the restarted group's, the rerun's; each later
    # group's first step follows the checkpoint registered before it (neither started from scratch)
    from ray_gait.training.events import series_from_events
    groups = [series_from_events([path.read_bytes()])
              for path in sorted((run / "tensorboard").glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime)]
    firsts = [group["train/loss"][0][0] if "train/loss" in group else None for group in groups]
    assert firsts == [1, restored_from + 1, stopped_at + 1] and restored_from >= 1, \
        (firsts, restored_from, stopped_at, [{tag: steps[:3] for tag, steps in group.items()} for group in groups])
    a, b = _final_state(runs, "straight"), _final_state(runs, "resumed")
    assert a["iteration"] == b["iteration"] == REFERENCE_ITERS
    for key, value in a["model"].items():
        assert torch.allclose(value.float(), b["model"][key].float(), rtol=1e-4, atol=1e-5), key
    # restore_hint as an iteration number names that iteration's checkpoint of the run
    from ray_gait.ray_layer.trainer import _restore_source
    saved = _saved(runs / "straight")
    assert sorted(saved) == list(range(1, REFERENCE_ITERS + 1))
    by_number = config_from_tree(apply_overrides(read_yaml(str(CONFIG)), dict(reference, **{
        "trainer_cfg.restore_hint": 2})), str(CONFIG))
    assert _restore_source(by_number, str(runs / "straight")) == saved[2]


def _processes_titled(prefix: str) -> list[int]:
    """PIDs of processes whose title (Ray sets it to ray::<Actor>...) starts with prefix."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            except OSError:
                continue
            if title.startswith(prefix):
                found.append(int(entry.name))
    return sorted(found)


def test_one_ddp_step_applies_the_mean_of_both_ranks_gradients(straight):
    """The project's own loop on 2 Ray Train workers (the reference run's first checkpoint) against the same
    step done by hand without DDP: each rank's share of the batch, its own gradients, their mean, one
    optimizer step."""
    import copy
    from ray_gait.data.split import make_reader, split_index
    from ray_gait.models import build_model
    from ray_gait.data.batches import BatchMaker
    from ray_gait.training.loop import set_train_mode
    from ray_gait.training.losses import LossAggregator
    from ray_gait.training.optim import build_optimizer, build_scheduler
    runs, overrides = straight
    trained = read_state(_saved(runs / "straight")[1])
    assert trained["iteration"] == 1
    cfg = config_from_tree(apply_overrides(read_yaml(str(CONFIG)), overrides), str(CONFIG))
    reader = make_reader(cfg, split_index(cfg, "TRAIN_SET"))
    torch.manual_seed(cfg.trainer_cfg.seed)
    model = build_model(cfg.model_cfg)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    # What DDP must compute: the triplet loss over the global batch (each rank's embeddings, its own
    # BatchNorm statistics) and the cross-entropy averaged over ranks, i.e. the aggregated loss of the
    # concatenated outputs, differentiated through each rank's replica and summed.
    replicas, outputs, labels = [copy.deepcopy(model) for _ in range(2)], [], []
    for rank, replica in enumerate(replicas):
        set_train_mode(replica, False)
        x, y, lengths = BatchMaker(reader, cfg.trainer_cfg.sampler, cfg.trainer_cfg.transform,
                                   seed=cfg.trainer_cfg.seed, rank=rank, world_size=2).make(0)
        outputs.append(replica(x, lengths))
        labels.append(y)
    joined = type(outputs[0])(*(torch.cat(parts) for parts in zip(*outputs)))
    total, _ = LossAggregator(cfg.loss_cfg)(joined, torch.cat(labels))
    total.backward()
    optimizer = build_optimizer(model, cfg.optimizer_cfg)
    build_scheduler(optimizer, dict(cfg.scheduler_cfg, warmup_iter=cfg.trainer_cfg.warmup_iter), 1)
    grads = [[p.grad for p in replica.parameters()] for replica in replicas]
    for param, g0, g1 in zip(model.parameters(), *grads):
        param.grad = g0 + g1
    optimizer.step()
    names = [name for name, _ in model.named_parameters()]
    moved = 0
    for name, param in zip(names, model.parameters()):
        assert torch.allclose(trained["model"][name].float(), param.detach().float(), rtol=1e-4, atol=1e-6), name
        moved += int(not torch.equal(param.detach(), initial[name]))
    assert moved > len(names) // 2, "the step changed the weights"
    assert max((g0 - g1).abs().max() for g0, g1 in zip(*grads)) > 1e-4, \
        "the two ranks' shares give different gradients (else the check proves nothing)"


@pytest.mark.gpu
def test_ray_train_on_gpus_with_fp16_and_sync_bn(synth_maps, tmp_path):
    data, paired = synth_maps
    workers = min(2, torch.cuda.device_count())     # 2 GPUs: NCCL and SyncBatchNorm across ranks
    overrides = _overrides(data, paired, tmp_path, "gpu", **{
        "trainer_cfg.total_iter": 4, "trainer_cfg.save_iter": 4, "trainer_cfg.enable_float16": "fp16",
        "trainer_cfg.sync_BN": True, "ray_cfg.num_workers": workers, "ray_cfg.use_gpu": True})
    args = _args(overrides)
    args[2] = str(CONFIG.with_name("skeletongait++_synth.yaml"))
    assert main(args) == 0
    state = _final_state(tmp_path, "gpu")
    assert state["iteration"] == 4
    assert state["scaler"], "the fp16 GradScaler's state is checkpointed"
