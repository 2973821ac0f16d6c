"""The whole pipeline with its inputs and outputs in a bucket of a real S3-protocol server (moto's, on
127.0.0.1, started by the test session): ingest, heatmap, link, a Ray Train run restored from a checkpoint in
the bucket, test; nothing is written to the local working folder (a sweep with its storage in a bucket:
tests/test_tune.py)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs

from ray_gait.cli import main

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "skeletongait" / "skeletongait++_synth.yaml"


def _upload(s3: pafs.S3FileSystem, local: Path, target: str) -> None:
    pafs.copy_files(str(local), target, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=s3)


def _objects(s3: pafs.S3FileSystem, prefix: str) -> list[str]:
    return sorted(i.path[len(prefix) + 1:] for i in s3.get_file_info(pafs.FileSelector(prefix, recursive=True))
                  if i.type == pafs.FileType.File)


def _train_overrides(bucket: str, name: str) -> dict:
    values = {"data_cfg.dataset_root": f"s3://{bucket}/paired", "data_cfg.dataset_name": "synth",
              "data_cfg.dataset_partition": f"s3://{bucket}/in/partition.json",
              "data_cfg.dataset_protocol": f"s3://{bucket}/in/protocol.json",
              "ray_cfg.storage_path": f"s3://{bucket}/runs", "ray_cfg.num_workers": 1,
              "trainer_cfg.save_name": name, "evaluator_cfg.save_name": name,
              "model_cfg.Backbone.C": 0.5, "model_cfg.SeparateBNNecks.class_num": 4,
              "trainer_cfg.sampler.batch_size": [2, 2], "trainer_cfg.sampler.frames_num_fixed": 8,
              "trainer_cfg.total_iter": 2, "trainer_cfg.save_iter": 2, "trainer_cfg.log_iter": 1,
              "trainer_cfg.warmup_iter": 0, "trainer_cfg.enable_float16": True}
    return values


def _train_args(bucket: str, name: str, *extra: str) -> list[str]:
    args = ["--cfgs", str(CONFIG)]
    for key, value in _train_overrides(bucket, name).items():
        args += ["--set", f"{key}={json.dumps(value) if not isinstance(value, str) else value}"]
    return args + list(extra)


def _train_two_iterations_into(s3: pafs.S3FileSystem, target: str, overrides: dict) -> None:
    """Train 2 iterations with `train_loop` in this process (no Ray) and copy its checkpoint to `target`."""
    import tempfile

    from ray_gait.data.split import make_reader, split_index
    from ray_gait.config import load_config
    from ray_gait.training.worker_loop import LoopContext, train_loop
    tree, cfg = load_config(str(CONFIG), overrides)
    saved = []

    def report(metrics: dict, folder: str | None) -> None:
        if folder is not None:
            _upload(s3, Path(folder), target.split("://", 1)[1])
            saved.append(metrics["iteration"])
    with tempfile.TemporaryDirectory() as scratch:
        train_loop(cfg, tree, make_reader(cfg, split_index(cfg, "TRAIN_SET")), {},
                   LoopContext(tensorboard_dir=scratch), report)
    assert saved == [2]


def test_the_pipeline_runs_from_and_into_a_bucket(ray_session, s3_bucket, tmp_path, monkeypatch, capsys):
    from ray_gait.models.checkpoint import read_state
    from ray_gait.training.state import saved_checkpoints
    s3, bucket = s3_bucket
    local = tmp_path / "local"
    assert main(["synth", "--out", str(local), "--ids", "6", "--train-ids", "4", "--views", "0,90",
                 "--frames", "16:24", "--no-preview"]) == 0
    for part in ("pose", "sil", "partition.json", "protocol.json"):
        _upload(s3, local / part, f"{bucket}/in/{part}")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    uri = f"s3://{bucket}"

    assert main(["ingest", "--input_path", f"{uri}/in/pose", "--output_path", f"{uri}/poses"]) == 0
    assert main(["heatmap", "--pose_data_path", f"{uri}/poses", "--save_root", f"{uri}/maps",
                 "--dataset_name", "synth", "--ext_name", "s3"]) == 0
    assert main(["link", "--heatmap_data_path", f"{uri}/maps/synth_sigma_8.0_s3",
                 "--silhouette_data_path", f"{uri}/in/sil", "--output_path", f"{uri}/paired"]) == 0
    sequences = len(_objects(s3, f"{bucket}/in/pose"))
    manifest = json.loads(s3.open_input_stream(f"{bucket}/paired/_manifest.json").read())
    assert manifest["paired"] == sequences == 6 * 2 * 8

    # a checkpoint of iteration 2 in the bucket, from the training loop run here without Ray (reading the bucket)
    first = f"{uri}/elsewhere/checkpoint_2"
    _train_two_iterations_into(s3, first, _train_overrides(bucket, "first"))

    # a Ray Train run (bf16, as that one) restored from the bucket's checkpoint continues at iteration 2: it saves
    # only iteration 4, into the bucket
    assert main(["train", *_train_args(bucket, "second", "--set", "trainer_cfg.total_iter=4",
                                       "--set", f"trainer_cfg.restore_hint={first}")]) == 0
    second = saved_checkpoints(f"{uri}/runs/second")
    assert [it for it, _ in second] == [4] and second[0][1].startswith(f"{uri}/runs/second/checkpoint_")
    assert read_state(second[0][1])["config"]["data_cfg"]["dataset_root"] == f"{uri}/paired"
    files = _objects(s3, f"{bucket}/runs/second")
    assert any(f.endswith("/iteration.json") for f in files)
    assert any(f.startswith("tensorboard/events.out.tfevents") for f in files), files
    from ray_gait.training.events import run_scalars
    assert [step for step, _ in run_scalars(f"{uri}/runs/second/tensorboard")["train/loss"]] == [3, 4]

    assert main(["export-checkpoint", "--checkpoint", second[0][1], "--out", f"{uri}/export/GaitModel-4.pt"]) == 0
    from ray_gait.models.checkpoint import load_opengait_checkpoint
    exported = load_opengait_checkpoint(f"{uri}/export/GaitModel-4.pt")
    saved = read_state(second[0][1])
    assert exported["iteration"] == 4 and all(
        np.array_equal(exported["model"][k].numpy(), v.numpy()) for k, v in saved["model"].items())

    assert main(["test", *_train_args(bucket, "second"), "--out", f"{uri}/test"]) == 0
    assert "test: 32 sequences" in capsys.readouterr().out
    metrics = json.loads(s3.open_input_stream(f"{bucket}/test/metrics.json").read())
    assert metrics["checkpoint"] == second[0][1] and metrics["sequences"] == 32
    with s3.open_input_file(f"{bucket}/test/embeddings.npz") as handle:
        embeddings = np.load(handle)["embeddings"]
    assert embeddings.shape[0] == 32
    assert {"metrics.json", "embeddings.npz", "cmc.png"} <= set(_objects(s3, f"{bucket}/test"))

    assert os.listdir(work) == [], "nothing is written to the working folder"
    assert not list(tmp_path.glob("**/s3:*")), "no local folder named after a URI"
