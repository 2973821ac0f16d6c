"""Training input read on demand: the index, the bounded reader, maps drawn from poses on the fly.

Each reader result is compared with a second code path: `read_dataset` (whole Parquet tables) for
stored maps, and batches built from step 1's / step 2's written data sets for poses drawn on the fly.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from ray_gait.data.index import build_index, dataset_kind
from ray_gait.data.reader import SequenceError, SequenceReader
from ray_gait.heatmap.config import load_heatmap_config
from ray_gait.io.dataset import read_dataset
from ray_gait.data.split import model_columns
from ray_gait.config import heatmap_config, load_train_config
from ray_gait.data.batches import BatchMaker

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "skeletongait"


def _ids(data: Path, split: str = "TRAIN_SET") -> list[str]:
    return json.loads((data / "partition.json").read_text())[split]


def test_reader_gives_the_rows_read_dataset_gives(synth_maps):
    data, paired = synth_maps
    ids = _ids(data) + _ids(data, "TEST_SET")
    index = build_index(str(paired), ids, needs_silhouettes=True)
    assert dataset_kind(str(paired)) == "paired" and len(index) > 0
    reader = SequenceReader(index, ("heatmap", "silhouette"), cache_bytes=1 << 20)
    expected = {(r["id"], r["type"], r["view"], r["seq"]): r for r in read_dataset(str(paired))}
    assert set(expected) == set(index.keys)
    for i, key in enumerate(index.keys):
        maps, sil = reader.arrays(i)
        assert np.array_equal(maps, expected[key]["heatmap"]) and np.array_equal(sil, expected[key]["silhouette"])
    assert reader.peak_cached_bytes <= 1 << 20 and reader.reads == len(index)


def test_cache_holds_at_most_its_bound_and_everything_with_cache_true(synth_maps):
    data, paired = synth_maps
    index = build_index(str(paired), _ids(data))
    one = sum(a.nbytes for a in SequenceReader(index, ("heatmap",)).arrays(0))
    bounded = SequenceReader(index, ("heatmap",), cache_bytes=3 * one)
    unbounded = SequenceReader(index, ("heatmap",), cache_bytes=None)
    for _ in range(2):
        for i in range(len(index)):
            bounded.arrays(i)
            unbounded.arrays(i)
    assert bounded.peak_cached_bytes <= 3 * one < sum(a.nbytes for i in range(len(index))
                                                      for a in unbounded.arrays(i))
    assert bounded.reads == 2 * len(index) and unbounded.reads == len(index)
    assert unbounded.hits >= len(index)


def _batches(cfg_path: Path, root: str, data: Path, ids: list[str], steps: int) -> tuple[list, object]:
    cfg = load_train_config(str(cfg_path), {"trainer_cfg.sampler.batch_size": [4, 2]})
    index = build_index(root, ids, dataset_name="synth", silhouette_root=str(data / "sil"),
                        needs_silhouettes="silhouette" in model_columns(cfg))
    reader = SequenceReader(index, model_columns(cfg), heatmap_config=heatmap_config(cfg))
    maker = BatchMaker(reader, cfg.trainer_cfg.sampler, cfg.trainer_cfg.transform, seed=3)
    return [maker.make(step) for step in range(steps)], index


def test_batches_drawn_from_poses_equal_batches_of_step_1_maps(synth_maps):
    data, paired = synth_maps
    maps = next((data.parent / "maps").glob("synth_sigma_8.0_*"))
    ids = _ids(data)
    from_maps, maps_index = _batches(CONFIGS / "skeletongait_synth.yaml", str(maps), data, ids, 3)
    from_poses, pose_index = _batches(CONFIGS / "skeletongait_synth.yaml", str(data / "pose"), data, ids, 3)
    assert pose_index.kind == "pose" and maps_index.keys == pose_index.keys
    for (xa, ya, la), (xb, yb, lb) in zip(from_maps, from_poses):
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and la == lb
    assert from_maps[0][0].abs().sum() > 0


def test_a_pose_data_set_from_ingest_gives_the_batches_of_its_pkl_tree(synth_maps, tmp_path):
    from ray_gait.cli import main
    data, _ = synth_maps
    assert main(["ingest", "--input_path", str(data / "pose"), "--output_path", str(tmp_path / "ingested"),
                 "--format", "pkl"]) == 0
    ids = _ids(data)
    from_parquet, parquet_index = _batches(CONFIGS / "skeletongait_synth.yaml", str(tmp_path / "ingested"), data, ids, 2)
    from_tree, tree_index = _batches(CONFIGS / "skeletongait_synth.yaml", str(data / "pose"), data, ids, 2)
    assert parquet_index.kind == "pose" and parquet_index.refs[0].row_group >= 0
    assert parquet_index.keys == tree_index.keys
    for (xa, ya, _), (xb, yb, _) in zip(from_parquet, from_tree):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_skeletongait_pp_batches_from_poses_and_silhouettes_equal_the_paired_set(synth_maps):
    data, paired = synth_maps
    ids = _ids(data)
    from_paired, _ = _batches(CONFIGS / "skeletongait++_synth.yaml", str(paired), data, ids, 2)
    from_poses, index = _batches(CONFIGS / "skeletongait++_synth.yaml", str(data / "pose"), data, ids, 2)
    assert all(ref.sil for ref in index.refs)
    for (xa, ya, _), (xb, yb, _) in zip(from_paired, from_poses):
        assert xa.shape[2] == 3 and torch.equal(xa, xb) and torch.equal(ya, yb)


def test_on_the_fly_maps_follow_the_heatmap_config(synth_maps):
    data, _ = synth_maps
    index = build_index(str(data / "pose"), _ids(data), dataset_name="synth")
    sharp = SequenceReader(index, ("heatmap",), heatmap_config=load_heatmap_config(
        overrides={"heatmap_generator_args.sigma": 2.0}))
    wide = SequenceReader(index, ("heatmap",))
    frames = [a[:4] for a in sharp.arrays(0)]
    thin, thick = sharp.model_arrays(frames)[0], wide.model_arrays(frames)[0]
    assert thin.shape == thick.shape == (4, 2, 64, 64)
    assert (thin > 0).sum() < (thick > 0).sum()


def test_unpaired_and_mismatched_halves_are_reported_not_fatal(tmp_path, fixture_poses):
    from conftest import write_pose_tree
    walk = next(v for k, v in fixture_poses.items() if v.shape[1] == 17 and len(v) >= 12)[:12]
    poses = {f"{i:03d}/nm/000/000": walk for i in range(3)}
    poses.update({f"{i:03d}/nm/090/090": walk for i in range(3)})
    write_pose_tree(tmp_path / "pose", poses)
    sil = np.zeros((12, 64, 44), dtype=np.uint8)
    for rel in poses:
        if rel == "002/nm/000/000":
            continue                                  # missing silhouette folder
        frames = 11 if rel == "001/nm/090/090" else 12  # one with a frame missing
        path = tmp_path / "sil" / f"{rel}.pkl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pickle.dumps(sil[:frames]))
    index = build_index(str(tmp_path / "pose"), ["000", "001", "002"], silhouette_root=str(tmp_path / "sil"),
                        needs_silhouettes=True)
    assert len(index) == 5 and [u["key"] for u in index.unpaired] == ["002/nm/000"]
    reader = SequenceReader(index, ("heatmap", "silhouette"))
    bad = index.keys.index(("001", "nm", "090", "090"))
    with pytest.raises(SequenceError, match="frame count differs"):
        reader.arrays(bad)
    cfg = load_train_config(str(CONFIGS / "skeletongait++_synth.yaml"), {"trainer_cfg.sampler.batch_size": [3, 2]})
    maker = BatchMaker(reader, cfg.trainer_cfg.sampler, cfg.trainer_cfg.transform)
    for step in range(4):
        x, labels, _ = maker.make(step)
        assert x.shape[0] == 6
    assert list(maker.bad) == [bad]


def test_a_data_set_root_that_holds_nothing_is_named(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no ray_gait data set"):
        dataset_kind(str(tmp_path / "empty"))
