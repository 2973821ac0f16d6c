"""`ray-gait link` for real: Parquet pairs, OpenGait's symlink tree, unmatched report, idempotent reruns."""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from ray_gait import read_dataset
from ray_gait.cli import main
from ray_gait.io.safe_pickle import loads_arrays
from ray_gait.pairing.plan import HeatmapEntry, plan_pairs

from conftest import write_pose_tree


@pytest.fixture
def trees(ray_session, tmp_path, fixture_poses):
    poses = {f"{i:03d}/nm-01/000/s": fixture_poses[k] for i, k in enumerate(["walk_a", "walk_b", "walk_far"])}
    poses["003/nm-01/000/s"] = fixture_poses["walk_noisy"]          # no silhouette
    write_pose_tree(tmp_path / "pose", poses)
    sil_root = tmp_path / "sil"
    for rel, pose in poses.items():
        if rel.startswith("003"):
            continue
        frames = len(pose) if not rel.startswith("002") else len(pose) - 1   # 002: frame count differs
        folder = sil_root / Path(rel).parent
        folder.mkdir(parents=True)
        sil = np.full((frames, 64, 44), int(rel[:3]) + 1, dtype=np.uint8)
        (folder / "s.pkl").write_bytes(pickle.dumps(sil))
    (sil_root / "009" / "bg-01" / "090").mkdir(parents=True)                  # silhouette without heatmap
    (sil_root / "009" / "bg-01" / "090" / "x.pkl").write_bytes(pickle.dumps(np.zeros((3, 64, 44), np.uint8)))
    assert main(["heatmap", "--pose_data_path", str(tmp_path / "pose"), "--save_root", str(tmp_path / "maps"),
                 "--dataset_name", "T", "--format", "both"]) == 0
    return tmp_path / "maps" / "T_sigma_8.0_", sil_root


def test_parquet_pairs_and_report(trees, tmp_path, capsys):
    maps, sils = trees
    out = tmp_path / "paired"
    status = main(["link", "--heatmap_data_path", str(maps), "--silhouette_data_path", str(sils),
                   "--output_path", str(out), "--max-unmatched", "3"])
    assert status == 0, capsys.readouterr().err
    rows = list(read_dataset(str(out)))
    assert sorted(r["id"] for r in rows) == ["000", "001"]
    for row in rows:
        assert row["heatmap"].shape[0] == row["silhouette"].shape[0]
        assert row["silhouette"].shape[1:] == (64, 44) and row["silhouette"][0, 0, 0] == int(row["id"]) + 1
    report = [json.loads(line) for line in (out / "link_report.jsonl").read_text().splitlines()]
    reasons = {r["key"]: r["reason"] for r in report}
    assert "frame count differs" in reasons["002/nm-01/000"]
    assert reasons["003/nm-01/000"] == "heatmap without silhouette"
    assert "silhouette without heatmap" in reasons["009/bg-01/090"]
    assert main(["link", "--heatmap_data_path", str(maps), "--silhouette_data_path", str(sils),
                 "--output_path", str(out), "--max-unmatched", "3"]) == 0
    assert "up to date" in capsys.readouterr().out
    assert len(list(read_dataset(str(out)))) == 2
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["kind"] == "paired"
    (out / "_manifest.json").write_text(json.dumps(dict(manifest, inputs_hash="stale")))
    (out / "left_over.txt").write_text("from the previous run")
    assert main(["link", "--heatmap_data_path", str(maps), "--silhouette_data_path", str(sils),
                 "--output_path", str(out), "--max-unmatched", "3"]) == 0
    assert not (out / "left_over.txt").exists() and len(list(read_dataset(str(out)))) == 2
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("paired")) == ["paired"]


def test_unmatched_beyond_limit_fails(trees, tmp_path, capsys):
    maps, sils = trees
    assert main(["link", "--heatmap_data_path", str(maps), "--silhouette_data_path", str(sils),
                 "--output_path", str(tmp_path / "p")]) == 1
    assert "could not be paired" in capsys.readouterr().err


@pytest.mark.parametrize("relative", [False, True])
def test_symlink_tree_is_opengait_layout(trees, tmp_path, relative):
    maps, sils = trees
    out = tmp_path / "links"
    args = ["link", "--heatmap_data_path", str(maps), "--silhouette_data_path", str(sils),
            "--output_path", str(out), "--format", "symlink", "--max-unmatched", "3"]
    assert main(args + (["--relative"] if relative else [])) == 0
    folder = out / "000" / "nm-01" / "000"
    heat, sil = folder / "0_heatmap.pkl", folder / "1_sil.pkl"
    assert heat.is_symlink() and sil.is_symlink()
    assert os.path.isabs(os.readlink(heat)) is not relative
    assert loads_arrays(heat.read_bytes()).shape[1] == 2
    assert loads_arrays(sil.read_bytes()).shape[1:] == (64, 44)
    assert not (out / "002").exists()
    assert main(args + (["--relative"] if relative else [])) == 0


def test_unsafe_keys_never_become_paths():
    entries = [HeatmapEntry(("..", "nm", "000"), "s", 3), HeatmapEntry(("a", "nm", "000"), "s", 3)]
    plan = plan_pairs(entries, {("..", "nm", "000"): ["/x"], ("a", "nm", "000"): ["/y"]})
    assert [e.key for e, _ in plan.pairs] == [("a", "nm", "000")]
    assert "not a safe path component" in plan.unmatched[0]["reason"]


def test_symlink_needs_pkl_heatmaps(ray_session, tmp_path, fixture_poses, capsys):
    write_pose_tree(tmp_path / "pose", {"000/nm/000/s": fixture_poses["walk_a"]})
    write_pose_tree(tmp_path / "sil", {"000/nm/000/s": np.zeros((40, 64, 44), np.uint8)})
    assert main(["heatmap", "--pose_data_path", str(tmp_path / "pose"), "--save_root", str(tmp_path / "m"),
                 "--dataset_name", "T"]) == 0
    assert main(["link", "--heatmap_data_path", str(tmp_path / "m" / "T_sigma_8.0_"), "--silhouette_data_path",
                 str(tmp_path / "sil"), "--output_path", str(tmp_path / "o"), "--format", "symlink"]) == 1
    assert "pkl tree" in capsys.readouterr().err
