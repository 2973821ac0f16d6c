"""Pickles made to break the loader (tests/hostile.py), run for real: each in a child process where a
crash shows as a signal, then all of them inside `ray-gait heatmap` and `ray-gait ingest`, beside good files."""
from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ray_gait import load_heatmap_config, read_dataset, render_heatmaps
from ray_gait.cli import main
from ray_gait.ingest.formats import PKL, detect_format, load_selection_index
from ray_gait.io.safe_pickle import Limits, UnsafePickleError, loads_arrays
from ray_gait.pose.io import read_pose_dataset

from conftest import write_pose_tree
from hostile import corpus

CORPUS = corpus()
# A child that loads one file with the project's pose loader under a 4 GiB address-space limit and says
# what happened and how much memory the load took beyond what imports and a good file take.
CHILD = """
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
from ray_gait.pose.io import load_pose
load_pose(sys.argv[2])
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    pose = load_pose(sys.argv[1])
    out = {"shape": list(pose.shape)}
except (ValueError, OSError) as exc:
    out = {"error": str(exc)}
out["growth_mib"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
print(json.dumps(out))
"""


@pytest.mark.parametrize("name,data,reason", CORPUS, ids=[c[0] for c in CORPUS])
def test_attack_is_a_clear_error_in_a_child_process(tmp_path, fixture_poses, name, data, reason):
    path = tmp_path / "attack.pkl"
    path.write_bytes(data)
    good = tmp_path / "good.pkl"
    good.write_bytes(pickle.dumps(fixture_poses["walk_a"]))
    before = set(os.listdir(tmp_path))
    result = subprocess.run([sys.executable, "-c", CHILD, str(path), str(good)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, f"{name}: the loader died (exit {result.returncode}): {result.stderr[-500:]}"
    out = json.loads(result.stdout)
    assert "error" in out, f"{name}: accepted as a pose of shape {out.get('shape')}"
    assert str(path) in out["error"] and re.search(reason, out["error"]), out["error"]
    assert out["growth_mib"] < 64, f"{name}: {out['growth_mib']:.0f} MiB to refuse {len(data)} bytes"
    assert set(os.listdir(tmp_path)) == before


def test_limits_are_parameters():
    data = pickle.dumps([np.zeros((2, 17, 3), np.float32)] * 3)
    assert len(loads_arrays(data)) == 3
    with pytest.raises(UnsafePickleError, match="more than the limit of 100"):
        loads_arrays(data, Limits(max_bytes=100))
    with pytest.raises(UnsafePickleError, match="nested deeper than 1"):
        loads_arrays(pickle.dumps([[np.zeros(1)]]), Limits(max_depth=1))
    with pytest.raises(UnsafePickleError, match="more than 2 memo entries"):
        loads_arrays(data, Limits(max_memo=2))


def test_selection_index_refuses_what_pose_files_refuse():
    assert load_selection_index(pickle.dumps({"0001": 1, "0002": np.int64(0)})) == {"0001": 1, "0002": 0}
    for name, data, reason in CORPUS:
        with pytest.raises(ValueError):
            load_selection_index(data)


def test_format_detection_survives_the_corpus(fixture_poses):
    attacks = {f"a/{i:02d}.pkl": data for i, (_, data, _) in enumerate(CORPUS)}
    nested = next(data for name, data, _ in CORPUS if name.startswith("100,000 nested"))
    files = {"a/0.pkl": nested, "a/1.pkl": pickle.dumps(fixture_poses["walk_a"])}
    assert detect_format(sorted(files), files.__getitem__) == PKL
    with pytest.raises(ValueError, match=r"named like pkl but none of the first 5 parse \(a/00.pkl: dtype 'V16'"):
        detect_format(sorted(attacks), attacks.__getitem__)


@pytest.fixture(scope="module")
def hostile_tree(tmp_path_factory, fixture_poses) -> tuple[Path, dict[str, np.ndarray], dict[str, str]]:
    """Four good sequences and every attack as a pose file of id 999."""
    root = tmp_path_factory.mktemp("hostile")
    good = {f"{i:03d}/nm-01/000/{i:03d}-000": fixture_poses[key]
            for i, key in enumerate(["walk_a", "walk_b", "walk_far", "one_frame"])}
    tree = write_pose_tree(root / "pose", good)
    attacks = {}
    for i, (_, data, reason) in enumerate(CORPUS):
        path = tree / "999" / "nm-01" / "000" / f"attack-{i:02d}.pkl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        attacks[path.name] = reason
    return tree, good, attacks


def _files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_heatmap_job_reports_every_attack_and_renders_the_rest(ray_session, tmp_path, hostile_tree):
    tree, good, attacks = hostile_tree
    outside = _files_under(tmp_path)
    status = main(["heatmap", "--pose_data_path", str(tree), "--save_root", str(tmp_path / "out"),
                   "--dataset_name", "Synth", "--ext_name", "h", "--shard-size", "5", "--max-errors", "100"])
    assert status == 0
    out = tmp_path / "out" / "Synth_sigma_8.0_h"
    rows = {r["source"]: r["heatmap"] for r in read_dataset(str(out))}
    assert sorted(rows) == sorted(f"{key}.pkl" for key in good)
    for key, pose in good.items():
        assert np.array_equal(rows[f"{key}.pkl"], render_heatmaps(pose, load_heatmap_config()))
    errors = {Path(e["source"]).name: e["reason"]
              for e in map(json.loads, (out / "errors.jsonl").read_text().splitlines())}
    assert sorted(errors) == sorted(attacks)
    for name, reason in attacks.items():
        assert re.search(reason, errors[name]), (name, errors[name])
    assert {p for p in _files_under(tmp_path) if not p.startswith("out")} == outside


def test_ingest_reports_every_attack_and_keeps_the_rest(ray_session, tmp_path, hostile_tree):
    tree, good, attacks = hostile_tree
    out = tmp_path / "ingested"
    assert main(["ingest", "--input_path", str(tree), "--output_path", str(out), "--max-errors", "100"]) == 0
    kept = {r["id"]: r["pose"] for r in read_pose_dataset(str(out))}
    assert sorted(kept) == sorted(key.split("/")[0] for key in good)
    for key, pose in good.items():
        assert np.array_equal(kept[key.split("/")[0]], pose.astype(np.float32))
    errors = {Path(e["source"]).name: e["reason"]
              for e in map(json.loads, (out / "errors.jsonl").read_text().splitlines())}
    assert set(attacks) <= set(errors)
    for name, reason in attacks.items():
        assert re.search(reason, errors[name]), (name, errors[name])


def test_a_file_beyond_the_size_limit_is_refused_before_it_is_read(tmp_path, fixture_poses):
    big = tmp_path / "big.pkl"
    with open(big, "wb") as handle:   # sparse: 600 MiB that take no disk
        handle.truncate(600 * 2**20)
    good = tmp_path / "good.pkl"
    good.write_bytes(pickle.dumps(fixture_poses["walk_a"]))
    result = subprocess.run([sys.executable, "-c", CHILD, str(big), str(good)], capture_output=True, text=True,
                            timeout=120)
    out = json.loads(result.stdout)
    assert "larger than 536870912 bytes" in out["error"] and str(big) in out["error"]
    assert out["growth_mib"] < 64
