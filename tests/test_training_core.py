"""Training core without Ray: configs, optimizer and schedule, precision policy, state, batches."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from ray_gait.models import build_model
from ray_gait.config import load_train_config
from ray_gait.data.batches import BatchMaker, prefetch
from ray_gait.data.sources import SequenceSet
from ray_gait.models import input_columns
from ray_gait.models.precision import autocast_dtype
from ray_gait.training.loop import make_scaler, set_train_mode, train_step
from ray_gait.training.losses import LossAggregator
from ray_gait.training.optim import build_optimizer, build_scheduler
from ray_gait.training.state import TrainState, restore_state, save_state
from ray_gait.models.checkpoint import read_state
from ray_gait.yaml_config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SEED_CONFIGS = sorted((ROOT / "configs" / "skeletongait").glob("skeletongait*.yaml"))


@pytest.mark.parametrize("path", SEED_CONFIGS, ids=[p.name for p in SEED_CONFIGS])
def test_every_config_loads_and_builds(path):
    cfg = load_train_config(str(path))
    model = build_model(cfg.model_cfg)
    LossAggregator(cfg.loss_cfg)
    build_scheduler(build_optimizer(model, cfg.optimizer_cfg), dict(cfg.scheduler_cfg), cfg.trainer_cfg.total_iter)
    raw = yaml.safe_load(path.read_text())       # the file's own values reach the typed config unchanged
    assert cfg.model_cfg["model"] == raw["model_cfg"]["model"] and cfg.optimizer_cfg["lr"] == raw["optimizer_cfg"]["lr"]
    assert cfg.trainer_cfg.total_iter == raw["trainer_cfg"]["total_iter"]
    assert list(cfg.trainer_cfg.sampler["batch_size"]) == list(raw["trainer_cfg"]["sampler"]["batch_size"])


def test_seed_table_has_the_nine_reference_configs():
    names = {p.stem for p in SEED_CONFIGS}
    assert {"skeletongait_CCPG", "skeletongait_OUMVLP", "skeletongait_SUSTech1K", "skeletongait_Gait3D",
            "skeletongait_GREW", "skeletongait++_CCPG", "skeletongait++_SUSTech1K", "skeletongait++_Gait3D",
            "skeletongait++_GREW"} <= names
    gait3d = load_train_config(str(ROOT / "configs/skeletongait/skeletongait++_Gait3D.yaml"))
    assert gait3d.trainer_cfg.total_iter == 60000 and gait3d.optimizer_cfg["lr"] == 0.1
    assert gait3d.trainer_cfg.sampler["batch_size"] == [32, 4] and gait3d.trainer_cfg.sync_BN is True


def test_wrong_types_and_solvers_are_named():
    path = str(SEED_CONFIGS[0])
    with pytest.raises(ConfigError, match="ray_cfg.num_workers: expected an integer"):
        load_train_config(path, {"ray_cfg.num_workers": "two"})
    cfg = load_train_config(path, {"optimizer_cfg.solver": "Lion"})
    with pytest.raises(ConfigError, match="optimizer_cfg.solver"):
        build_optimizer(torch.nn.Linear(2, 2), cfg.optimizer_cfg)
    cfg = load_train_config(path, {"optimizer_cfg.betas_typo": 1})
    with pytest.raises(ConfigError, match="optimizer_cfg.betas_typo"):
        build_optimizer(torch.nn.Linear(2, 2), cfg.optimizer_cfg)


def test_warmup_then_cosine_schedule():
    opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=1.0)
    sched = build_scheduler(opt, {"scheduler": "CosineAnnealingLR", "warmup_iter": 4, "eta_min": 0.0}, 14)
    lrs = []
    for _ in range(14):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.25) and lrs[3] == pytest.approx(0.8125)
    assert lrs[4] == pytest.approx(1.0) and lrs[-1] < 0.05
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))


def test_precision_policy():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert autocast_dtype(False, cpu) is None and autocast_dtype(True, cpu) == torch.bfloat16
    assert autocast_dtype("fp16", cuda) == torch.float16 and make_scaler(torch.float16, cuda) is not None
    assert make_scaler(torch.bfloat16, cpu) is None
    with pytest.raises(ValueError):
        autocast_dtype("fp8", cpu)


def _tiny_setup(tmp_path: Path):
    cfg = load_train_config(str(ROOT / "configs/skeletongait/skeletongait_synth.yaml"),
                            {"model_cfg.SeparateBNNecks.class_num": 3, "trainer_cfg.sampler.batch_size": [3, 2],
                             "trainer_cfg.sampler.frames_num_fixed": 6})
    rng = np.random.default_rng(0)
    data = SequenceSet(input_columns("DeepGaitV2", [True, False]))
    for i in range(3):
        for j in range(3):
            data.add({"id": f"{i}", "type": "nm", "view": f"{j}", "seq": "s",
                      "heatmap": rng.integers(0, 255, (10, 2, 64, 64), dtype=np.uint8)})
    maker = BatchMaker(data, cfg.trainer_cfg.sampler, cfg.trainer_cfg.transform, seed=1)
    return cfg, maker


def test_batches_are_a_function_of_the_step(tmp_path):
    _, maker = _tiny_setup(tmp_path)
    a, b = maker.make(5), maker.make(5)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].shape == (6, 6, 2, 64, 44) and a[0].max() <= 1.0
    assert not torch.equal(maker.make(6)[0], a[0])


@pytest.mark.parametrize("workers", [1, 3])
def test_prefetch_yields_every_step_in_order(tmp_path, workers):
    _, maker = _tiny_setup(tmp_path)
    seen = list(prefetch(maker, 2, 9, workers=workers))
    assert [step for step, _, _ in seen] == list(range(2, 9))
    for step, batch, _ in seen:
        assert torch.equal(batch[0], maker.make(step)[0]) and torch.equal(batch[1], maker.make(step)[1])


def test_prefetch_reports_the_time_the_consumer_waited(tmp_path):
    """The first batch is waited for (nothing was built ahead); a slow consumer finds the next ones ready."""
    _, maker = _tiny_setup(tmp_path)
    real_make = maker.make

    def slow(step):
        time.sleep(0.2)
        return real_make(step)
    maker.make = slow
    waits = []
    for _, _, waited in prefetch(maker, 0, 4, workers=1):
        waits.append(waited)
        time.sleep(0.5)                           # the step: longer than a batch takes to build
    assert waits[0] >= 0.15 and all(w < 0.1 for w in waits[2:]), waits


def test_input_threads_follow_the_config_on_cpu_and_use_the_reserved_cpus_on_cuda():
    from ray_gait.data.batches import input_threads
    assert [input_threads(n, "cpu", 8.0) for n in (1, 3)] == [1, 3]
    assert input_threads(1, "cuda", 1.0) == 2, "one thread fed an H200 only 1.5x faster than its step"
    assert input_threads(1, "cuda", 8.0) == 7 and input_threads(12, "cuda", 8.0) == 12
    with pytest.raises(ValueError, match="num_workers"):
        input_threads(0, "cpu", 1.0)


def test_prefetch_surfaces_errors_and_stops_early(tmp_path):
    _, maker = _tiny_setup(tmp_path)
    real_make = maker.make

    def broken(step):
        if step == 4:
            raise RuntimeError("step 4 broke")
        return real_make(step)
    maker.make = broken
    with pytest.raises(RuntimeError, match="step 4 broke"):
        for _ in prefetch(maker, 0, 10, workers=2):
            pass
    maker.make = real_make
    batches = prefetch(maker, 0, 1000, workers=2)
    assert next(batches)[0] == 0
    batches.close()                       # a run that ends early leaves no thread building batches
    deadline = time.monotonic() + 10
    while any(t.name.startswith("batch-prefetch") for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [t.name for t in threading.enumerate() if t.name.startswith("batch-prefetch")]
    with pytest.raises(ValueError, match="num_workers must be >= 1"):
        next(prefetch(maker, 0, 2, workers=0))
    with pytest.raises(ConfigError, match="data_cfg.num_workers"):
        load_train_config(str(ROOT / "configs/skeletongait/skeletongait_synth.yaml"), {"data_cfg.num_workers": 0})


def test_state_round_trip_resumes_exactly(tmp_path):
    cfg, maker = _tiny_setup(tmp_path)

    def fresh():
        torch.manual_seed(0)
        model = build_model(cfg.model_cfg)
        opt = build_optimizer(model, cfg.optimizer_cfg)
        return TrainState(model, opt, build_scheduler(opt, dict(cfg.scheduler_cfg), 6), None)

    losses = LossAggregator(cfg.loss_cfg)
    straight = fresh()
    for step in range(4):
        set_train_mode(straight.model, False)
        train_step(straight.model, losses, straight.optimizer, None, maker.make(step), torch.device("cpu"), None)
        straight.scheduler.step()
    half = fresh()
    for step in range(2):
        set_train_mode(half.model, False)
        train_step(half.model, losses, half.optimizer, None, maker.make(step), torch.device("cpu"), None)
        half.scheduler.step()
    half.iteration = 2
    save_state(str(tmp_path / "ck"), half, {"note": "test"})
    resumed = fresh()
    restore_state(resumed, read_state(str(tmp_path / "ck")))
    assert resumed.iteration == 2
    for step in range(2, 4):
        set_train_mode(resumed.model, False)
        train_step(resumed.model, losses, resumed.optimizer, None, maker.make(step), torch.device("cpu"), None)
        resumed.scheduler.step()
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), name


def test_fix_bn_keeps_running_statistics(tmp_path):
    cfg, maker = _tiny_setup(tmp_path)
    model = build_model(cfg.model_cfg)
    before = {k: v.clone() for k, v in model.state_dict().items() if "running_mean" in k}
    set_train_mode(model, fix_bn=True)
    train_step(model, LossAggregator(cfg.loss_cfg), build_optimizer(model, cfg.optimizer_cfg), None,
               maker.make(0), torch.device("cpu"), None)
    after = {k: v for k, v in model.state_dict().items() if "running_mean" in k}
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_main_py_takes_the_seed_command_line():
    result = subprocess.run([sys.executable, str(ROOT / "jobs" / "main.py"), "--help"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0 and "--phase" in result.stdout and "--log_to_file" in result.stdout


def test_the_worker_loop_runs_without_ray_and_resumes_from_its_own_checkpoint(tmp_path):
    """`train_loop` in-process: reports at log_iter, a checkpoint at save_iter, and a run resumed from the
    checkpoint it reported ends with the weights of the uninterrupted run."""
    import shutil
    from ray_gait.training.worker_loop import LoopContext, train_loop
    cfg, maker = _tiny_setup(tmp_path)
    from dataclasses import replace
    cfg = replace(cfg, trainer_cfg=replace(cfg.trainer_cfg, total_iter=4, save_iter=2, log_iter=1,
                                           enable_float16=False))
    reports: list[tuple[int, bool]] = []

    def report(metrics, folder):
        reports.append((metrics["iteration"], folder is not None))
        if folder is not None:
            shutil.copytree(folder, tmp_path / f"ck{metrics['iteration']}", dirs_exist_ok=True)
    straight = train_loop(cfg, {"note": "t"}, maker.source, {}, LoopContext(), report)
    assert reports == [(1, False), (2, True), (3, False), (4, True)]
    assert straight.iteration == 4
    reports.clear()
    resumed = train_loop(cfg, {"note": "t"}, maker.source, {}, LoopContext(resume_from=str(tmp_path / "ck2")), report)
    assert reports == [(3, False), (4, True)]
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), name


def test_a_checkpoint_restores_every_rng_it_saves(tmp_path):
    import random
    from ray_gait.training.state import rng_states, set_rng_states
    np.random.seed(5)
    random.seed(5)
    torch.manual_seed(5)
    np.random.standard_normal()                  # leaves a cached Gaussian in numpy's state
    saved = rng_states()
    first = (np.random.standard_normal(3), [random.random() for _ in range(3)], torch.rand(3))
    np.random.seed(0)
    random.seed(0)
    torch.manual_seed(0)
    torch.save(saved, tmp_path / "rng.pt")
    set_rng_states(torch.load(tmp_path / "rng.pt", weights_only=True))
    again = (np.random.standard_normal(3), [random.random() for _ in range(3)], torch.rand(3))
    assert np.array_equal(first[0], again[0]) and first[1] == again[1] and torch.equal(first[2], again[2])


def test_the_embedder_leaves_out_unreadable_sequences_and_keeps_the_others_in_place(tmp_path):
    from ray_gait.data.reader import SequenceError
    from ray_gait.evaluation.embed import SequenceEmbedder
    from ray_gait.models import build_model
    cfg, maker = _tiny_setup(tmp_path)
    source = maker.source

    class Damaged:
        """The tiny source with sequence 4 unreadable."""

        def __getattr__(self, name):
            return getattr(source, name)

        def arrays(self, i):
            if i == 4:
                raise SequenceError("4.pkl: corrupt")
            return source.arrays(i)

    torch.manual_seed(0)
    embedder = SequenceEmbedder(build_model(cfg.model_cfg).eval(), cfg, torch.device("cpu"))
    embedded, unreadable = embedder.embed_readable(Damaged())
    assert unreadable == {4: "4.pkl: corrupt"} and sorted(embedded) == [0, 1, 2, 3, 5, 6, 7, 8]
    from ray_gait.data.batches import model_input
    from ray_gait.data.transforms import build_transform
    from ray_gait.models import embed
    transforms = build_transform(cfg.evaluator_cfg.transform)
    for i, emb in embedded.items():              # each is the model's embedding of all its frames, in order
        x = model_input([a[None] for a in source.arrays(i)], transforms, torch.Generator().manual_seed(0))
        assert np.allclose(emb, embed(embedder.model, x)[0].numpy(), rtol=1e-5, atol=1e-6), i


def test_checkpoints_are_listed_from_their_iteration_files_without_loading_them(tmp_path):
    from ray_gait.training.state import ITERATION_FILE, saved_checkpoints
    from ray_gait.models.checkpoint import STATE_FILE
    for name, iteration in (("checkpoint_b", 4), ("checkpoint_a", 2)):
        (tmp_path / "run" / name).mkdir(parents=True)
        (tmp_path / "run" / name / STATE_FILE).write_bytes(b"not a torch file: loading it would fail")
        (tmp_path / "run" / name / ITERATION_FILE).write_text(json.dumps({"iteration": iteration}))
    assert saved_checkpoints(str(tmp_path / "run")) == [(2, str(tmp_path / "run" / "checkpoint_a")),
                                                         (4, str(tmp_path / "run" / "checkpoint_b"))]
    assert saved_checkpoints(str(tmp_path / "nothing")) == []


def test_config_paths_are_made_absolute_once_where_the_config_is_loaded(tmp_path, monkeypatch):
    from ray_gait.config import config_from_tree, load_config
    (tmp_path / "cfgs" / "data").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    config = tmp_path / "cfgs" / "run.yaml"
    config.write_text("data_cfg:\n  dataset_root: data\n  dataset_partition: part.json\n"
                      "ray_cfg:\n  storage_path: s3://bucket/runs\n")
    monkeypatch.chdir(tmp_path / "elsewhere")
    tree, cfg = load_config("../cfgs/run.yaml", {"data_cfg.silhouette_root": "sil"})
    assert cfg.data_cfg.dataset_root == str(tmp_path / "cfgs" / "data")          # exists beside the config
    assert cfg.data_cfg.dataset_partition == str(tmp_path / "elsewhere" / "part.json")   # else the current folder
    assert cfg.data_cfg.silhouette_root == str(tmp_path / "elsewhere" / "sil")
    assert cfg.ray_cfg.storage_path == "s3://bucket/runs" and cfg.source == str(config)
    monkeypatch.chdir(tmp_path)                      # a Tune trial or a Ray worker runs in another folder
    again = config_from_tree(tree, source="../cfgs/run.yaml")
    assert again.data_cfg == cfg.data_cfg and again.ray_cfg == cfg.ray_cfg
