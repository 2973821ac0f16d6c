"""`ray-gait heatmap` for real: Ray Data, Parquet, errors, resume after a real kill, pkl tree, CLI."""
from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from ray_gait import load_heatmap_config, read_dataset, render_heatmaps
from ray_gait.cli import main
from ray_gait.io.safe_pickle import loads_arrays

from conftest import write_pose_tree

ROOT = Path(__file__).resolve().parents[1]
KEYS = ["walk_a", "walk_b", "walk_far", "walk_noisy", "joint_always_missing", "one_frame"]


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def _tree(tmp_path: Path, poses: dict, n_ids: int = 6, bad: bool = True) -> Path:
    seqs = {f"{i:03d}/nm-01/{view}/{i:03d}-{view}": poses[KEYS[i % len(KEYS)]]
            for i in range(n_ids) for view in ("000", "090")}
    root = write_pose_tree(tmp_path / "pose", seqs)
    if bad:
        bad_dir = root / "999" / "nm-01" / "000"
        bad_dir.mkdir(parents=True)
        (bad_dir / "truncated.pkl").write_bytes(pickle.dumps(poses["walk_a"])[:200])
        (bad_dir / "exploit.pkl").write_bytes(pickle.dumps(_Exploit()))
        (bad_dir / "shape.pkl").write_bytes(pickle.dumps(np.zeros((4, 5))))
        nan = poses["walk_a"].copy()
        nan[1, 2, 0] = np.nan
        (bad_dir / "nan.pkl").write_bytes(pickle.dumps(nan))
    return root


def _rows(out: Path) -> list[dict]:
    return list(read_dataset(str(out)))


def test_job_writes_dataset_errors_manifest_preview(ray_session, tmp_path, fixture_poses, capsys):
    pose_root = _tree(tmp_path, fixture_poses)
    status = main(["heatmap", "--pose_data_path", str(pose_root), "--save_root", str(tmp_path / "out"),
                   "--dataset_name", "Synth", "--ext_name", "t", "--shard-size", "3", "--max-errors", "4"])
    assert status == 0
    out = tmp_path / "out" / "Synth_sigma_8.0_t"
    rows = _rows(out)
    assert len(rows) == 12
    assert len({(r["id"], r["type"], r["view"], r["seq"]) for r in rows}) == 12
    row = next(r for r in rows if r["id"] == "000" and r["view"] == "090")
    assert row["source"] == "000/nm-01/090/000-090.pkl"
    assert np.array_equal(row["heatmap"], render_heatmaps(fixture_poses["walk_a"], load_heatmap_config()))
    schema = pq.read_schema(next(out.glob("part-*.parquet")))
    assert str(schema.field("frames").type) == "int32" and str(schema.field("heatmap").type) == "binary"
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    reasons = {Path(e["source"]).name: e["reason"] for e in errors}
    assert set(reasons) == {"truncated.pkl", "exploit.pkl", "shape.pkl", "nan.pkl"}
    assert "system" in reasons["exploit.pkl"] and "non-finite" in reasons["nan.pkl"]
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["error_count"] == 4 and manifest["sequences"] == 12
    assert sum(manifest["files"].values()) == 12
    assert manifest["config_hash"] == load_heatmap_config().hash()
    assert len(list((out / "preview").glob("*.png"))) == 4
    assert "12 sequences" in capsys.readouterr().out


def test_errors_above_max_errors_fail_with_one_line(ray_session, tmp_path, fixture_poses, capsys):
    pose_root = _tree(tmp_path, fixture_poses, n_ids=2)
    status = main(["heatmap", "--pose_data_path", str(pose_root), "--save_root", str(tmp_path / "out"),
                   "--dataset_name", "Synth"])
    assert status == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "4 input(s) rejected" in err[0]


def test_pkl_format_is_opengait_tree_equal_to_parquet(ray_session, tmp_path, fixture_poses):
    pose_root = _tree(tmp_path, fixture_poses, n_ids=3, bad=False)
    assert main(["heatmap", "--pose_data_path", str(pose_root), "--save_root", str(tmp_path / "out"),
                 "--dataset_name", "Synth", "--format", "both",
                 "--set", "heatmap_generator_args.sigma=4.0"]) == 0
    out = tmp_path / "out" / "Synth_sigma_4.0_"
    for row in _rows(out):
        pkl = out / "pkl" / row["id"] / row["type"] / row["view"] / f"{row['seq']}.pkl"
        assert np.array_equal(loads_arrays(pkl.read_bytes()), row["heatmap"])


def test_rerun_skips_finished_work_and_refuses_other_config(ray_session, tmp_path, fixture_poses, caplog):
    pose_root = _tree(tmp_path, fixture_poses, n_ids=3, bad=False)
    args = ["heatmap", "--pose_data_path", str(pose_root), "--save_root", str(tmp_path / "out"),
            "--dataset_name", "Synth", "--shard-size", "2"]
    assert main(args) == 0
    out = tmp_path / "out" / "Synth_sigma_8.0_"
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")}
    assert main(args) == 0
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")} == before
    assert len(_rows(out)) == 6
    assert main(args[:-2] + ["--set", "padkeypoints_args.pad_method=simple"]) == 1


def test_killed_job_resumes_to_exactly_one_row_per_input(ray_session, tmp_path, fixture_poses):
    seqs = {f"{i:03d}/nm-01/000/s": fixture_poses[KEYS[i % 4]] for i in range(40)}
    pose_root = write_pose_tree(tmp_path / "pose", seqs)
    out = tmp_path / "out" / "Big_sigma_8.0_"
    cmd = [sys.executable, str(ROOT / "jobs" / "heatmap.py"), "--pose_data_path", str(pose_root),
           "--save_root", str(tmp_path / "out"), "--dataset_name", "Big", "--shard-size", "2"]
    env = dict(os.environ, RAY_ADDRESS=ray_session)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "_shards").glob("*.json")) if out.exists() else []) < 3:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(list((out / "_shards").glob("*.json")))
    assert 3 <= done_before < 20, "the kill must land mid-run"
    assert not (out / "_manifest.json").exists()
    for part in out.glob("part-*.parquet"):
        pq.read_metadata(part)                      # every visible part is complete
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = _rows(out)
    assert len(rows) == 40
    assert len({r["id"] for r in rows}) == 40
    assert not list(out.rglob(".*.tmp-*"))


def test_job_script_has_the_same_flags():
    result = subprocess.run([sys.executable, str(ROOT / "jobs" / "heatmap.py"), "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for flag in ("--pose_data_path", "--save_root", "--dataset_name", "--ext_name", "--heatmap_cfg_path",
                 "--set", "--format", "--max-errors"):
        assert flag in result.stdout


def test_missing_input_folder_is_one_line_error(tmp_path, capsys):
    status = main(["heatmap", "--pose_data_path", str(tmp_path / "nope"), "--save_root", str(tmp_path),
                   "--dataset_name", "X"])
    assert status == 1
    assert "is not a folder" in capsys.readouterr().err


def test_torch_backend_renders_each_shard_in_one_batch(ray_session, tmp_path, fixture_poses):
    pose_root = _tree(tmp_path, fixture_poses)
    common = ["--pose_data_path", str(pose_root), "--save_root", str(tmp_path / "out"), "--dataset_name", "Synth",
              "--shard-size", "5", "--max-errors", "4"]
    assert main(["heatmap", *common, "--ext_name", "batch", "--backend", "torch"]) == 0
    assert main(["heatmap", *common, "--ext_name", "one"]) == 0
    batched = {r["source"]: r["heatmap"] for r in _rows(tmp_path / "out" / "Synth_sigma_8.0_batch")}
    single = {r["source"]: r["heatmap"] for r in _rows(tmp_path / "out" / "Synth_sigma_8.0_one")}
    assert batched.keys() == single.keys() and len(batched) == 12
    pixels = sum(m.size for m in single.values())
    equal = sum(int((batched[k] == single[k]).sum()) for k in single)
    assert all(np.abs(batched[k].astype(int) - single[k].astype(int)).max() <= 1 for k in single)
    assert equal / pixels >= 0.999
    errors = (tmp_path / "out" / "Synth_sigma_8.0_batch" / "errors.jsonl").read_text().splitlines()
    assert sorted(Path(json.loads(e)["source"]).name for e in errors) == ["exploit.pkl", "nan.pkl", "shape.pkl",
                                                                         "truncated.pkl"]


def test_cuda_device_needs_the_torch_backend(tmp_path, fixture_poses, capsys):
    pose_root = _tree(tmp_path, fixture_poses, n_ids=1, bad=False)
    status = main(["heatmap", "--pose_data_path", str(pose_root), "--save_root", str(tmp_path / "out"),
                   "--dataset_name", "Synth", "--device", "cuda", "--backend", "numpy"])
    assert status != 0
    assert "--device cuda renders with the torch backend" in capsys.readouterr().err
