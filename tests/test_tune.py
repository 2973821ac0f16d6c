"""Ray Tune sweeps: the sweep file, the report, and real small sweeps on CPU (maps rendered per sigma, a sweep
killed and rerun; sigma drawn on the fly from poses, stored in a bucket)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest
import yaml

from ray_gait.evaluation.plots import figure_image
from ray_gait.tuning.report import TrialRow, best_config_tree, rank1_figure, trials_table
from ray_gait.tuning.space import heatmap_configs, search_spec_from_dict
from ray_gait.yaml_config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "skeletongait" / "skeletongait++_synth.yaml"
SPACE = {"optimizer_cfg.lr": {"grid_search": [0.002]},
         "heatmap_generator_args.sigma": {"grid_search": [4.0, 8.0]}}


def _spec(**tree):
    return search_spec_from_dict({"space": SPACE, "data": {"pose_data_path": "p"}, **tree}, source="space.yaml")


def test_search_space_splits_heatmap_and_training_keys():
    spec = _spec()
    assert spec.heatmap_keys == ["heatmap_generator_args.sigma"] and spec.train_keys == ["optimizer_cfg.lr"]
    configs = heatmap_configs(spec)
    assert [c.sigma for _, c in configs] == [4.0, 8.0]
    assert len({c.hash() for _, c in configs}) == 2


def test_equal_heatmap_configs_are_rendered_once():
    spec = search_spec_from_dict({"space": {"heatmap_generator_args.sigma": {"choice": [8.0, 8, 4.0]},
                                            "norm_args.heatmap_image_height": {"grid_search": [128]}},
                                  "data": {"pose_data_path": "p"}})
    assert sorted(c.sigma for _, c in heatmap_configs(spec)) == [4.0, 8.0]


@pytest.mark.parametrize("tree, message", [
    ({"space": SPACE, "data": {"pose_data_path": "p"}, "metrik": "x"}, "unknown key(s) metrik"),
    ({"space": {"heatmap_generator_args.sigma": {"uniform": [2, 8]}}, "data": {"pose_data_path": "p"}},
     "need grid_search or choice"),
    ({"space": SPACE}, "needs data.pose_data_path"),
    ({"space": {"optimizer_cfg.lr": {"loguniform": [0, 1]}}}, "bounds must be > 0"),
    ({"space": {"optimizer_cfg.lr": {"normal": [0, 1]}}}, "unknown distribution 'normal'"),
    ({"space": {"optimizer_cfg.lr": {"uniform": [1]}}}, "expected 2 numbers"),
    ({"space": {"optimizer_cfg.lr": 0.1}}, "expected one distribution"),
    ({"space": {}}, "`space` must map"),
    ({"space": {"heatmap_generator_args.sigma": {"grid_search": [-1.0]}}, "data": {"pose_data_path": "p"}},
     "sigma must be > 0"),
    ({"space": SPACE, "data": {"pose_data_path": "p"}, "mode": "best"}, "mode must be max or min"),
])
def test_bad_search_spaces_are_rejected_with_the_key(tree, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        search_spec_from_dict(tree, source="space.yaml")


def test_report_table_best_config_and_plot():
    rows = [TrialRow("a", {"optimizer_cfg.lr": 1e-3, "heatmap_generator_args.sigma": 4.0}, 6, 50.0, 55.0, "completed"),
            TrialRow("b", {"optimizer_cfg.lr": 1e-2, "heatmap_generator_args.sigma": 4.0}, 2, 20.0, 20.0,
                     "stopped early"),
            TrialRow("c", {"optimizer_cfg.lr": 1e-3, "heatmap_generator_args.sigma": 8.0}, 6, 60.0, 60.0, "completed")]
    table = trials_table(rows, ["optimizer_cfg.lr", "heatmap_generator_args.sigma"], "val/rank1")
    assert table.splitlines()[0].split()[:3] == ["trial", "optimizer_cfg.lr", "heatmap_generator_args.sigma"]
    assert "stopped early" in table and "60.00" in table
    tree = best_config_tree({"optimizer_cfg": {"lr": 0.1, "solver": "Adam"}}, rows[2].params, ["optimizer_cfg.lr"],
                            {"data_cfg.dataset_root": "/maps"})
    assert tree == {"optimizer_cfg": {"lr": 1e-3, "solver": "Adam"}, "data_cfg": {"dataset_root": "/maps"}}
    image = figure_image(rank1_figure(rows, ["optimizer_cfg.lr"], ["heatmap_generator_args.sigma"], "val/rank1"))
    assert image.ndim == 3 and image.shape[2] == 3 and (image < 250).any()


def test_a_trial_row_says_how_the_trial_ended():
    from ray_gait.tuning.report import trial_row
    assert trial_row("a", {}, [40.0, 55.0, 50.0], 6, False, 6, "max") == TrialRow("a", {}, 6, 50.0, 55.0, "completed")
    assert trial_row("b", {}, [40.0, 30.0], 2, False, 6, "min") == TrialRow("b", {}, 2, 30.0, 30.0, "stopped early")
    assert trial_row("c", {}, [], 0, False, 6, "max").status == "not run"
    assert trial_row("d", {}, [40.0], 6, True, 6, "max").status == "error"


def test_best_trial_prefers_trials_that_ran_to_the_end():
    from ray_gait.tuning.report import best_trial
    rows = [TrialRow("a", {}, 2, 90.0, 90.0, "stopped early"), TrialRow("b", {}, 6, 70.0, 75.0, "completed"),
            TrialRow("c", {}, 6, 72.0, 72.0, "completed")]
    assert best_trial(rows, "max").trial_id == "c"
    assert best_trial(rows, "min").trial_id == "b"
    assert best_trial([TrialRow("x", {}, 0, None, None, "error")], "max") is None


@pytest.fixture(scope="module")
def tune_data(ray_session, tmp_path_factory):
    from ray_gait.cli import main
    root = tmp_path_factory.mktemp("tune")
    assert main(["synth", "--out", str(root / "data"), "--ids", "8", "--train-ids", "6", "--views", "0,90",
                 "--frames", "12:16", "--no-preview"]) == 0
    return root


def _sweep_args(root: Path, space: Path) -> list[str]:
    values = {"data_cfg.dataset_partition": str(root / "data" / "partition.json"), "data_cfg.val_ids": 2,
              "ray_cfg.storage_path": str(root / "runs"), "ray_cfg.num_workers": 1,
              "model_cfg.Backbone.C": 0.5, "model_cfg.SeparateBNNecks.class_num": 4,
              "trainer_cfg.sampler.batch_size": [2, 2], "trainer_cfg.sampler.frames_num_fixed": 8,
              "trainer_cfg.total_iter": 4, "trainer_cfg.save_iter": 2, "trainer_cfg.log_iter": 2,
              "trainer_cfg.warmup_iter": 0, "trainer_cfg.enable_float16": False}
    args = ["tune", "--cfgs", str(CONFIG), "--search", str(space)]
    for key, value in values.items():
        args += ["--set", f"{key}={json.dumps(value) if not isinstance(value, str) else value}"]
    return args


def _kill_when_a_trial_has_saved(args: list[str], runs: Path, address: str, timeout: float = 400.0) -> None:
    """Run `ray-gait tune` in its own process on the tests' Ray and SIGKILL it once a trial has saved."""
    env = dict(os.environ, RAY_ADDRESS=address)
    process = subprocess.Popen([sys.executable, "-m", "ray_gait.cli", *args], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while not list(runs.glob("small/trials/*/checkpoint_*/state.pt")):
            assert process.poll() is None, f"the sweep ended ({process.returncode}) before it could be killed"
            assert time.monotonic() < deadline, "no trial saved a checkpoint in time"
            time.sleep(0.5)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(30)


def test_a_real_sweep_killed_and_rerun_renders_each_sigma_once(ray_session, tune_data, capsys):
    """A small SkeletonGait++ sweep with ASHA on the validation Rank-1, sigma a `choice` of two values: both are
    rendered (and paired) before its trial starts, whichever the trial draws. The sweep is killed for real after
    the trial's first checkpoint, then rerun, which restores it, renders nothing and finishes the trial (one
    trial: the per-trial values of a grid are the poses sweep's subject, below)."""
    from ray_gait.cli import main
    from ray_gait.config import config_from_tree
    from ray_gait.ray_layer.trainer import check_training_config
    root = tune_data
    space = root / "space.yaml"
    space.write_text(yaml.safe_dump({
        "name": "small", "metric": "val/rank1", "mode": "max",
        "scheduler": {"type": "asha", "grace_period": 2, "reduction_factor": 2},
        "space": {"optimizer_cfg.lr": {"grid_search": [0.002]}, "heatmap_generator_args.sigma": {"choice": [4.0, 8.0]}},
        "data": {"pose_data_path": "data/pose", "silhouette_data_path": "data/sil", "dataset_name": "synth"}}))
    _kill_when_a_trial_has_saved(_sweep_args(root, space), root / "runs", ray_session)
    assert not (root / "runs" / "small" / "sweep.json").exists()
    # each sigma was rendered (and paired) exactly once, into its own hash-keyed folder, before any trial
    cache = root / "runs" / "heatmap_cache"
    assert sorted(p.name.split("_")[2] for p in cache.iterdir() if not p.name.endswith("_paired")) == ["4.0", "8.0"]
    assert main(_sweep_args(root, space)) == 0
    out = capsys.readouterr().out
    summary = json.loads((root / "runs" / "small" / "sweep.json").read_text())
    assert summary["restored"], out
    assert len(summary["renders"]) == 2
    assert all(r["rendered_frames"] == 0 and not r["paired"] for r in summary["renders"]), summary["renders"]
    trials = summary["trials"]
    assert len(trials) == 1 and trials[0]["best"] is not None, out
    assert trials[0]["params"]["optimizer_cfg.lr"] == 0.002
    assert trials[0]["params"]["heatmap_generator_args.sigma"] in (4.0, 8.0)
    assert trials[0]["iteration"] == 4 and trials[0]["status"] == "completed", trials
    assert "val/rank1 (last)" in out and "best:" in out
    best = yaml.safe_load((root / "runs" / "small" / "best_config.yaml").read_text())
    cfg = config_from_tree(best, source=str(root / "runs" / "small" / "best_config.yaml"))
    assert cfg.optimizer_cfg["lr"] == summary["best"]["params"]["optimizer_cfg.lr"]
    assert f"sigma_{summary['best']['params']['heatmap_generator_args.sigma']}_" in cfg.data_cfg.dataset_root
    check_training_config(cfg)
    image = cv2.imread(str(root / "runs" / "small" / "rank1_vs_lr.png"))
    assert image is not None and image.shape[0] > 100


def test_a_validation_metric_needs_a_validation_split(tmp_path):
    from ray_gait.ray_layer.tune_job import run_sweep
    from ray_gait.config import config_from_tree
    from ray_gait.yaml_config import read_yaml
    (tmp_path / "partition.json").write_text(json.dumps({"TRAIN_SET": ["1", "2"], "TEST_SET": ["3"]}))
    tree = dict(read_yaml(str(CONFIG)), data_cfg={"dataset_partition": str(tmp_path / "partition.json")})
    with pytest.raises(ValueError, match="set data_cfg.val_ids"):
        run_sweep(_spec(), config_from_tree(tree, str(CONFIG)), tree)


def test_split_ids_holds_out_the_last_training_ids():
    from ray_gait.data.partition import split_ids
    part = {"TRAIN_SET": ["3", "1", "2", "4"], "TEST_SET": ["9"]}
    assert split_ids(part, 1) == {"TRAIN_SET": ["1", "2", "3"], "VAL_SET": ["4"], "TEST_SET": ["9"]}
    assert split_ids(part)["VAL_SET"] == []
    assert split_ids(dict(part, VAL_SET=["2"]), 3)["TRAIN_SET"] == ["1", "3", "4"]
    with pytest.raises(ValueError, match="leaves no training identity"):
        split_ids(part, 4)


def test_a_sigma_sweep_from_poses_renders_nothing_to_disk(ray_session, tune_data, s3_bucket, monkeypatch):
    """`heatmap_cfg.*` keys on a pose data set: every trial draws its maps on the fly with its own sigma.
    Data are given relative to the current folder (each trial runs in a folder of its own); the sweep's
    storage (trials, checkpoints, summary, best config) is a bucket of the session's S3 server."""
    import pyarrow.fs as pafs
    from ray_gait.cli import main
    from ray_gait.models.checkpoint import read_state
    s3, bucket = s3_bucket
    root = tune_data
    monkeypatch.chdir(root)
    space = root / "space_poses.yaml"
    space.write_text(yaml.safe_dump({
        "name": "poses", "metric": "val/rank1", "mode": "max",
        "space": {"heatmap_cfg.heatmap_generator_args.sigma": {"grid_search": [4.0, 8.0]}}}))
    args = _sweep_args(root, space) + [
        "--set", "data_cfg.dataset_root=data/pose", "--set", "data_cfg.silhouette_root=data/sil",
        "--set", "data_cfg.dataset_partition=data/partition.json",
        "--set", "data_cfg.dataset_name=synth", "--set", "trainer_cfg.total_iter=2",
        "--set", f"ray_cfg.storage_path=s3://{bucket}/tune"]
    before = sorted(p.name for p in root.iterdir())
    assert main(args) == 0
    objects = sorted(i.path[len(bucket) + 1:] for i in s3.get_file_info(pafs.FileSelector(bucket, recursive=True))
                     if i.type == pafs.FileType.File)
    summary = json.loads(s3.open_input_stream(f"{bucket}/tune/poses/sweep.json").read())
    assert summary["renders"] == [] and not any("heatmap_cache" in o for o in objects)
    assert "tune/poses/best_config.yaml" in objects
    assert sorted(t["params"]["heatmap_cfg.heatmap_generator_args.sigma"] for t in summary["trials"]) == [4.0, 8.0]
    assert all(t["best"] is not None and t["iteration"] == 2 for t in summary["trials"])
    states = [o for o in objects if o.startswith("tune/poses/trials/") and o.endswith("/state.pt")]
    sigmas = [read_state(f"s3://{bucket}/{o}")["config"]["heatmap_cfg"]["heatmap_generator_args"]["sigma"]
              for o in states]
    assert sorted(sigmas) == [4.0, 8.0], "each trial trained with its own sigma"
    assert sorted(p.name for p in root.iterdir()) == before, "nothing is written beside the data"
