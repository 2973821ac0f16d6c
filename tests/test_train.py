"""Step 3 on Ray Train for real: 2 CPU workers (gloo), tiny widths, the synthetic data set."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from ray_gait.cli import main
from ray_gait.training.config import config_from_tree, load_train_config
from ray_gait.training.state import read_state
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


def test_loss_decreases_and_with_test_reports_what_ray_gait_test_gives(synth_maps, tmp_path):
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
    # rank 0's test pass at save_iter (with_test) against `ray-gait test` (Ray Data actors) on the same weights
    assert main(["test", *_args(overrides)[1:], "--checkpoint", str(checkpoint), "--out", str(tmp_path / "test")]) == 0
    metrics = json.loads((tmp_path / "test" / "metrics.json").read_text())
    assert set(metrics["results"]) == {"NM", "BG", "CL"}
    for cond, values in metrics["results"].items():
        assert scalar_series(events, f"test/{cond}/rank1") == [(24, pytest.approx(values["rank1"], abs=1e-4))], cond
    assert scalar_series(events, "test/rank1")
    out = tmp_path / "opengait.pt"
    assert main(["export-checkpoint", "--checkpoint", str(checkpoint), "--out", str(out)]) == 0
    from ray_gait.models import build_model, load_opengait_checkpoint
    exported = load_opengait_checkpoint(str(out))
    assert set(exported) >= {"model", "optimizer", "scheduler", "iteration"} and exported["iteration"] == 24
    model = build_model(load_train_config(str(CONFIG), {"model_cfg.SeparateBNNecks.class_num": 4}).model_cfg,
                        weights=str(out), strict=True)
    assert sum(p.numel() for p in model.parameters()) > 0


def test_killed_run_resumes_to_the_uninterrupted_weights(synth_maps, tmp_path, ray_session):
    data, paired = synth_maps
    one = {"ray_cfg.num_workers": 1}      # resume is the subject here; DDP: test_one_ddp_step_...
    straight = _overrides(data, paired, tmp_path, "straight", **one)
    assert main(_args(straight)) == 0
    resumed = _overrides(data, paired, tmp_path, "resumed", **one)
    cmd = [sys.executable, str(ROOT / "jobs" / "train.py")] + _args(resumed)[1:]
    env = dict(os.environ, RAY_ADDRESS=ray_session)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and not list((tmp_path / "resumed").glob("checkpoint_*/state.pt")):
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = _final_state(tmp_path, "resumed")["iteration"]
    assert 2 <= first < 6, "the kill must land mid-run"
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    a, b = _final_state(tmp_path, "straight"), _final_state(tmp_path, "resumed")
    assert a["iteration"] == b["iteration"] == 6
    for key, value in a["model"].items():
        assert torch.allclose(value.float(), b["model"][key].float(), rtol=1e-4, atol=1e-5), key
    # restore_hint as an iteration number names that iteration's checkpoint of the run
    from ray_gait.ray_layer.trainer import _restore_source
    saved = {read_state(str(p))["iteration"]: str(p) for p in (tmp_path / "straight").glob("checkpoint_*")
             if (p / "state.pt").exists()}
    assert sorted(saved) == [2, 4, 6]
    by_number = config_from_tree(apply_overrides(read_yaml(str(CONFIG)), dict(straight, **{
        "trainer_cfg.restore_hint": 2})), str(CONFIG))
    assert _restore_source(by_number, str(tmp_path / "straight")) == saved[2]


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


def test_worker_killed_mid_run_is_restarted_from_checkpoint(synth_maps, tmp_path):
    from ray_gait.ray_layer.trainer import run_training
    data, paired = synth_maps
    overrides = _overrides(data, paired, tmp_path, "killed", **{"ray_cfg.max_failures": 2,
                                                                "trainer_cfg.total_iter": 8})
    tree = apply_overrides(read_yaml(str(CONFIG)), overrides)
    outcome: dict = {}
    thread = threading.Thread(target=lambda: outcome.update(result=run_training(config_from_tree(tree, str(CONFIG)),
                                                                                tree)))
    thread.start()
    deadline = time.time() + 240
    while time.time() < deadline and not list((tmp_path / "killed").glob("checkpoint_*/state.pt")):
        time.sleep(0.5)
    workers = _processes_titled("ray::RayTrainWorker")
    assert workers, "training workers are running"
    os.kill(workers[-1], signal.SIGKILL)
    thread.join(timeout=400)
    result = outcome["result"]
    assert result.error is None
    assert result.metrics["iteration"] == 8
    assert _final_state(tmp_path, "killed")["iteration"] == 8


def test_one_ddp_step_applies_the_mean_of_both_ranks_gradients(synth_maps, tmp_path):
    """The project's own loop on 2 Ray Train workers against the same step done by hand without DDP:
    each rank's share of the batch, its own gradients, their mean, one optimizer step."""
    import copy
    from ray_gait.data.split import make_reader, split_index
    from ray_gait.models import build_model
    from ray_gait.training.data import BatchMaker
    from ray_gait.training.loop import set_train_mode
    from ray_gait.training.losses import LossAggregator
    from ray_gait.training.optim import build_optimizer, build_scheduler
    data, paired = synth_maps
    # plain SGD: the update is proportional to the gradient (Adam's first step is lr * sign(g), which
    # flips on gradients that are zero up to the all-reduce's rounding)
    sgd = {"solver": "SGD", "lr": 0.1, "momentum": 0.0, "weight_decay": 0.0}
    overrides = _overrides(data, paired, tmp_path, "ddp", **{"trainer_cfg.total_iter": 1, "trainer_cfg.save_iter": 1,
                                                             "trainer_cfg.log_iter": 1, "optimizer_cfg": sgd})
    assert main(_args(overrides)) == 0
    trained = _final_state(tmp_path, "ddp")
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
