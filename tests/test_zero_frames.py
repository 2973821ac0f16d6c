"""Non-positive shapes and 0-frame sequences: refused with a reason at every step.

Decoders refuse a row whose shape is not positive or whose bytes are not exactly that shape; a
0-frame sequence is refused at ingest, at step 1 and at step 2, and is left out of the training
index or refused by the reader instead of ending a run.  Plain functions only (the ones the Ray
jobs call); step 1 runs its shards in this process.
"""
from __future__ import annotations

import json
import pickle
import re
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from ray_gait.data.index import SequenceRef, SplitIndex, build_index
from ray_gait.data.reader import SequenceError, SequenceReader
from ray_gait.heatmap.config import load_heatmap_config
from ray_gait.ingest.formats import OPENPOSE_JSON, PKL
from ray_gait.ingest.layout import RawSequence
from ray_gait.ingest.shards import IngestSettings, ingest_shard
from ray_gait.io.dataset import (HEATMAP_SCHEMA, MANIFEST, decode_heatmap, decode_silhouette, heatmap_row,
                                 write_json_atomic, write_parquet_atomic)
from ray_gait.io import fs
from ray_gait.pairing.load import pair_group
from ray_gait.pairing.plan import HeatmapEntry, plan_pairs
from ray_gait.pose.io import (MAX_POSE_FRAMES, POSE_KIND, POSE_SCHEMA, decode_pose, pose_dataset_index,
                              pose_from_object, pose_row)
from ray_gait.ray_layer import heatmap_job, sharded_job
from ray_gait.config import load_train_config
from ray_gait.data.batches import BatchMaker
from ray_gait.data.sources import SequenceSet
from ray_gait.models import input_columns

ROOT = Path(__file__).resolve().parents[1]
SOURCE = "001/nm/000/000.pkl"
KEY = {"id": "001", "type": "nm", "view": "000", "seq": "000", "source": SOURCE}
EMPTY_REASON = r"empty sequence|0 frames|T = 0"


@pytest.fixture
def walk(fixture_poses) -> np.ndarray:
    """A COCO-17 walk of 8 frames."""
    return next(v for v in fixture_poses.values() if v.shape[1] == 17 and len(v) >= 8)[:8].astype(np.float32)


def _maps(frames: int) -> np.ndarray:
    return np.random.default_rng(frames).integers(0, 255, (frames, 2, 8, 8), dtype=np.uint8)


def _heatmap_row(key: dict, frames: int, data: bytes | None = None) -> dict:
    """A heatmap row as a hostile file could hold it: shape columns and bytes as given."""
    return dict(key, frames=frames, height=8, width=8, heatmap=_maps(max(frames, 0)).tobytes() if data is None else data)


def _pose_row(key: dict, frames: int, joints: int, data: bytes) -> dict:
    return dict(key, frames=frames, joints=joints, pose=data)


# Decoders ----------------------------------------------------------------------------------------------------

GOOD_MAPS = _maps(3)


@pytest.mark.parametrize("frames, height, data, reason", [
    (0, 8, b"", EMPTY_REASON),
    (-1, 8, GOOD_MAPS.tobytes(), "frames must be a positive integer, got -1"),
    (3, -8, GOOD_MAPS.tobytes(), "height must be a positive integer, got -8"),
    (3.0, 8, GOOD_MAPS.tobytes(), "frames must be a positive integer, got 3.0"),
    (None, 8, GOOD_MAPS.tobytes(), "frames must be a positive integer, got None"),
    (True, 8, GOOD_MAPS.tobytes()[:128], "frames must be a positive integer, got True"),
    (2, 8, GOOD_MAPS.tobytes(), "384 data bytes, not the 256"),
    (4, 8, GOOD_MAPS.tobytes(), "384 data bytes, not the 512"),
    (3, 8, None, "NoneType, not bytes"),
])
def test_decode_heatmap_refuses_shapes_that_are_not_its_bytes(frames, height, data, reason):
    row = dict(KEY, frames=frames, height=height, width=8, heatmap=data)
    with pytest.raises(ValueError, match=f"heatmap of {SOURCE}: .*({reason})"):
        decode_heatmap(row)


def test_decode_heatmap_round_trips_a_valid_row_and_names_keyless_rows():
    assert np.array_equal(decode_heatmap(heatmap_row(KEY, GOOD_MAPS)), GOOD_MAPS)
    row = {"id": "007", "type": "bg", "view": "090", "seq": "s", "frames": -1, "height": 8, "width": 8,
           "heatmap": GOOD_MAPS.tobytes()}
    with pytest.raises(ValueError, match="heatmap of 007/bg/090/s: frames must be"):
        decode_heatmap(row)
    with pytest.raises(ValueError, match=EMPTY_REASON):
        heatmap_row(KEY, GOOD_MAPS[:0])


@pytest.mark.parametrize("frames, data, reason", [
    (0, b"", EMPTY_REASON),
    (-2, bytes(2 * 8 * 8), "sil_frames must be a positive integer, got -2"),
    (2, bytes(2 * 8 * 8 + 1), "129 data bytes, not the 128"),
])
def test_decode_silhouette_refuses_non_positive_shapes(frames, data, reason):
    row = dict(KEY, sil_frames=frames, sil_height=8, sil_width=8, silhouette=data)
    with pytest.raises(ValueError, match=f"silhouette of {SOURCE}: .*({reason})"):
        decode_silhouette(row)


@pytest.mark.parametrize("frames, joints, data, reason", [
    (0, 17, b"", EMPTY_REASON),
    (-1, 17, bytes(4 * 17 * 3), "frames must be a positive integer, got -1"),
    (-1, -17, bytes(4 * 17 * 3), "frames must be a positive integer, got -1"),
    (2, 0, b"", "joints must be a positive integer, got 0"),
    (2, 17, bytes(4 * 17 * 3), "204 data bytes, not the 408"),
])
def test_decode_pose_refuses_non_positive_shapes(frames, joints, data, reason):
    with pytest.raises(ValueError, match=f"pose of {SOURCE}: .*({reason})"):
        decode_pose(_pose_row(KEY, frames, joints, data))


def test_decode_pose_round_trips_a_valid_row(walk):
    assert np.array_equal(decode_pose(pose_row(KEY, walk)), walk)


@pytest.mark.parametrize("make, reason", [
    (lambda: np.zeros((0, 17, 3)), "empty sequence"),
    (lambda: np.broadcast_to(np.float32(1), (MAX_POSE_FRAMES + 1, 17, 3)), "more than the 100000 accepted"),
    (lambda: np.zeros((5, 0, 3)), "no joints"),
])
def test_pose_from_object_refuses_empty_or_too_long_sequences(make, reason):
    with pytest.raises(ValueError, match=reason):
        pose_from_object(make())


def test_pose_from_object_refuses_grew_rows_without_joints():
    with pytest.raises(ValueError, match="no joints"):
        pose_from_object(np.zeros((4, 2)), "GREW")


# Ingest (step 0) --------------------------------------------------------------------------------------------

def _ingest(raw: Path, out: Path, fmt: str, sequences: list[RawSequence]) -> tuple[dict, dict[str, str]]:
    """Run one ingest shard of `sequences`; (its result, its errors by source)."""
    shard = {"name": "part-00000-x", "sequences": json.dumps([asdict(s) for s in sequences])}
    result = ingest_shard(shard, IngestSettings(str(raw), str(out), fmt, {}))
    record = json.loads((out / "_shards" / "part-00000-x.json").read_text())
    return result, {e["source"]: e["reason"] for e in record["errors"]}


def test_a_zero_frame_pose_is_refused_at_ingest(tmp_path, walk):
    folder = tmp_path / "raw" / "001" / "nm" / "000"
    folder.mkdir(parents=True)
    for seq, pose in (("000", walk), ("001", walk[:0])):
        (folder / f"{seq}.pkl").write_bytes(pickle.dumps(pose))
    sequences = [RawSequence("001", "nm", "000", seq, f"001/nm/000/{seq}.pkl", (f"001/nm/000/{seq}.pkl",))
                 for seq in ("000", "001")]
    result, reasons = _ingest(tmp_path / "raw", tmp_path / "out", PKL, sequences)
    assert result["rows"] == 1 and list(reasons) == ["001/nm/000/001.pkl"]
    assert "empty sequence (0 frames)" in reasons["001/nm/000/001.pkl"]
    assert sorted(p.name for p in (tmp_path / "out").rglob("*.pkl")) == ["000.pkl"]


@pytest.mark.parametrize("fmt", [PKL, OPENPOSE_JSON])
def test_a_sequence_without_frame_files_is_refused_at_ingest(tmp_path, fmt):
    (tmp_path / "raw").mkdir()
    result, reasons = _ingest(tmp_path / "raw", tmp_path / "out", fmt,
                              [RawSequence("002", "nm", "000", "000", "002/000_00", ())])
    assert result["rows"] == 0 and "empty sequence" in reasons["002/000_00"]
    assert not list((tmp_path / "out").rglob("*.pkl")) and not list((tmp_path / "out").glob("*.parquet"))


# Step 1 -------------------------------------------------------------------------------------------------------

def _serial_shards(monkeypatch) -> None:
    """Run the shards of step 1 one after the other in this process, as a Ray Data actor would run them."""
    monkeypatch.setattr(sharded_job, "ensure_ray", lambda **_: None)
    monkeypatch.setattr(sharded_job, "map_shards",
                        lambda shards, fn, settings, workers=None, gpus=0.0: (fn(s, settings) for s in shards))


def _errors(out: Path) -> dict[str, str]:
    lines = (out / "errors.jsonl").read_text().splitlines()
    return {e["source"]: e["reason"] for e in map(json.loads, lines)}


def test_a_zero_frame_pose_file_is_refused_at_step_1(tmp_path, walk, monkeypatch):
    from conftest import write_pose_tree
    _serial_shards(monkeypatch)
    pose_root = write_pose_tree(tmp_path / "pose", {"001/nm/000/000": walk, "001/nm/000/001": walk[:0]})
    summary = heatmap_job.run_heatmap_job(str(pose_root), str(tmp_path / "maps"), "synth", load_heatmap_config())
    assert summary.sequences == 1 and summary.errors == 1
    reasons = _errors(Path(summary.output))
    assert list(reasons) == ["001/nm/000/001.pkl"]
    assert re.search(EMPTY_REASON, reasons["001/nm/000/001.pkl"])


def test_zero_frame_rows_of_a_pose_data_set_are_refused_at_step_1(tmp_path, walk, monkeypatch):
    _serial_shards(monkeypatch)
    root = tmp_path / "poses"
    keys = [dict(KEY, seq=seq, source=f"001/nm/000/{seq}.pkl") for seq in ("000", "001", "002")]
    rows = [pose_row(keys[0], walk), _pose_row(keys[1], 0, 17, b""),
            _pose_row(keys[2], -1, 17, np.zeros((1, 17, 3), np.float32).tobytes())]
    write_parquet_atomic(fs.resolve(str(root / "part-00000.parquet")), rows, POSE_SCHEMA)
    write_json_atomic(fs.resolve(str(root / MANIFEST)), {"kind": POSE_KIND})
    refused: list[dict[str, str]] = []
    assert list(pose_dataset_index(str(root), "", refused)) == ["001/nm/000/000.pkl"]
    assert [r["source"] for r in refused] == ["001/nm/000/001.pkl", "001/nm/000/002.pkl"]
    summary = heatmap_job.run_heatmap_job(str(root), str(tmp_path / "maps"), "synth", load_heatmap_config())
    assert summary.sequences == 1 and summary.errors == 2
    reasons = _errors(Path(summary.output))
    assert "empty sequence (0 frames)" in reasons["001/nm/000/001.pkl"]
    assert "frames must be a positive integer, got -1" in reasons["001/nm/000/002.pkl"]


# Step 2 -------------------------------------------------------------------------------------------------------

def test_a_zero_frame_heatmap_is_not_planned_for_pairing():
    key = ("001", "nm", "000")
    plan = plan_pairs([HeatmapEntry(key, "000", 0, parquet="part-00000.parquet", row=3)], {key: ["sil/000.pkl"]})
    assert plan.pairs == []
    assert plan.unmatched == [{"key": "001/nm/000",
                               "reason": "heatmap 000 (part-00000.parquet, row 3): empty sequence (0 frames)"}]


def _pair(seq: str, sil: Path, **where) -> dict:
    return dict(KEY, seq=seq, source=f"001/nm/{seq}/{seq}.pkl", view=seq, sil=str(sil), row=None, pkl=None, **where)


def test_zero_frame_halves_are_refused_at_step_2(tmp_path):
    maps_root = tmp_path / "maps"
    rows = [_heatmap_row(dict(KEY, view="000", source="001/nm/000/000.pkl"), 3),
            _heatmap_row(dict(KEY, view="001", source="001/nm/001/001.pkl"), 0)]
    write_parquet_atomic(fs.resolve(str(maps_root / "part-00000.parquet")), rows, HEATMAP_SCHEMA)
    sils = {}
    for name, frames in (("three", 3), ("none", 0)):
        sils[name] = tmp_path / f"{name}.pkl"
        sils[name].write_bytes(pickle.dumps(np.zeros((frames, 8, 8), np.uint8)))
    empty_pkl = tmp_path / "empty_heatmap.pkl"
    empty_pkl.write_bytes(pickle.dumps(_maps(0)))
    parquet_group = {"heatmap_root": str(maps_root), "parquet": "part-00000.parquet",
                     "pairs": [_pair("000", sils["three"], ), _pair("001", sils["none"])]}
    parquet_group["pairs"][0]["row"], parquet_group["pairs"][1]["row"] = 0, 1
    good, bad = pair_group(parquet_group)
    assert good["error"] == "" and good["frames"] == 3
    assert "heatmap of 001/nm/001/001.pkl: empty sequence (0 frames)" in bad["error"]
    pkl_group = {"heatmap_root": str(tmp_path), "parquet": None,
                 "pairs": [_pair("002", sils["none"], ) | {"pkl": str(empty_pkl)}]}
    (row,) = pair_group(pkl_group)
    assert f"heatmaps of {empty_pkl}: empty sequence (0 frames)" in row["error"]
    sil_group = {"heatmap_root": str(maps_root), "parquet": "part-00000.parquet",
                 "pairs": [_pair("000", sils["none"]) | {"row": 0}]}
    (row,) = pair_group(sil_group)
    assert row["error"] and row["frames"] == 0


# Training and evaluation --------------------------------------------------------------------------------------

def _maps_dataset(root: Path) -> None:
    """Two good sequences, then a 0-frame row and a row with frames = -1, each part one row group."""
    good = [_heatmap_row(dict(KEY, id=i, source=f"{i}/nm/000/000.pkl"), 4) for i in ("001", "002")]
    write_parquet_atomic(fs.resolve(str(root / "part-00000.parquet")), good, HEATMAP_SCHEMA)
    empty = _heatmap_row(dict(KEY, seq="bad", source="001/nm/000/bad.pkl"), 0)
    write_parquet_atomic(fs.resolve(str(root / "part-00001.parquet")), [empty], HEATMAP_SCHEMA)
    negative = _heatmap_row(dict(KEY, id="002", seq="neg", source="002/nm/000/neg.pkl"), -1, _maps(4).tobytes())
    write_parquet_atomic(fs.resolve(str(root / "part-00002.parquet")), [negative], HEATMAP_SCHEMA)


def test_the_index_refuses_zero_frame_rows_with_a_reason(tmp_path):
    _maps_dataset(tmp_path)
    index = build_index(str(tmp_path), ["001", "002"])
    assert index.keys == [("001", "nm", "000", "000"), ("002", "nm", "000", "000")]
    reasons = {item["key"]: item["reason"] for item in index.refused}
    assert set(reasons) == {"001/nm/000/bad", "002/nm/000/neg"}
    assert "part-00001.parquet (row group 0, row 0): empty sequence (0 frames)" in reasons["001/nm/000/bad"]
    assert "frames must be a positive integer, got -1" in reasons["002/nm/000/neg"]
    assert len(build_index(str(tmp_path), ["002"]).refused) == 1


def test_the_reader_refuses_a_zero_frame_row_as_a_bad_sequence(tmp_path):
    _maps_dataset(tmp_path)
    part = fs.resolve(str(tmp_path / "part-00001.parquet")).uri
    index = SplitIndex("maps", str(tmp_path), (SequenceRef("001", "nm", "000", "bad", part, 0, 0),))
    with pytest.raises(SequenceError, match=r"part-00001.parquet \(row group 0, row 0\): .*empty sequence"):
        SequenceReader(index, ("heatmap",)).arrays(0)


def test_training_skips_a_zero_frame_sequence_with_a_reason(tmp_path):
    cfg = load_train_config(str(ROOT / "configs/skeletongait/skeletongait_synth.yaml"),
                            {"trainer_cfg.sampler.batch_size": [3, 2], "trainer_cfg.sampler.frames_num_fixed": 6})
    data = SequenceSet(input_columns("DeepGaitV2", [True, False]))
    rng = np.random.default_rng(0)
    for i in range(3):
        for j in range(3):
            frames = 0 if (i, j) == (1, 2) else 10
            data.add({"id": f"{i}", "type": "nm", "view": f"{j}", "seq": "s",
                      "heatmap": rng.integers(0, 255, (frames, 2, 64, 64), dtype=np.uint8)})
    maker = BatchMaker(data, cfg.trainer_cfg.sampler, cfg.trainer_cfg.transform, seed=1)
    for step in range(4):
        x, labels, _ = maker.make(step)
        assert x.shape[:2] == (6, 6)
    assert list(maker.bad) == [5] and "sequence 1/nm/2/s: empty sequence (0 frames" in maker.bad[5]
