"""`ray-gait ingest`: every raw format written here, detection, tracking, selection index, errors,
resume, and ingest -> heatmap from the Parquet pose data set, on a real Ray."""
from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ray_gait import load_heatmap_config, read_dataset, render_heatmaps
from ray_gait.cli import main
from ray_gait.ingest.formats import (GAIT3D_TXT, GREW, OPENPOSE_JSON, PKL, FrameError, detect_format, frame_key,
                                     load_selection_index, parse_csv_rows, parse_openpose_json)
from ray_gait.ingest.layout import group_sequences
from ray_gait.ingest.tracking import select_track
from ray_gait.io.safe_pickle import UnsafePickleError, loads_arrays
from ray_gait.pose.io import read_pose_dataset

ROOT = Path(__file__).resolve().parents[1]


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def _moved(pose: np.ndarray, dx: float, dy: float = 0.0, scale: float = 1.0) -> np.ndarray:
    """The same skeleton elsewhere (missing joints stay (0, 0, 0))."""
    out = pose.copy()
    seen = (pose[..., 0] != 0) | (pose[..., 1] != 0)
    centre = pose[seen][:, :2].mean(axis=0)
    moved = (pose[..., :2] - centre) * scale + centre + np.array([dx, dy], dtype=np.float32)
    out[..., :2] = np.where(seen[..., None], moved, 0)
    return out


def _person(joints: np.ndarray) -> dict:
    return {"person_id": [-1], "pose_keypoints_2d": [float(v) for v in joints.reshape(-1)]}


def _write_json(path: Path, people: list[np.ndarray], raw: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(raw if raw is not None else json.dumps({"version": 1.3, "people": [_person(p) for p in people]}))


def _rows(out: Path) -> dict[str, dict]:
    return {f"{r['id']}/{r['type']}/{r['view']}": r for r in read_pose_dataset(str(out))}


def _errors(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]


# ---- OU-MVLP-like OpenPose JSON, written once for the module --------------------------------------

@pytest.fixture(scope="module")
def oumvlp(tmp_path_factory, fixture_poses):
    """Raw OU-MVLP tree (`<id>/<view>_<seq>/<frame>_keypoints.json`), its selection index, one ingest."""
    base = tmp_path_factory.mktemp("oumvlp")
    raw, sel = base / "raw", base / "sel"
    a, b = fixture_poses["coco18_a"], fixture_poses["coco18_b"]
    rng = np.random.default_rng(0)
    for t in range(len(a)):             # 00001 000_00: a same-size distractor listed first in frames 0-9
        frame = raw / "00001" / "000_00" / f"{t + 1:04d}_keypoints.json"
        if t in (12, 13):
            _write_json(frame, [])
        elif t == 20:
            _write_json(frame, [], raw="{\"people\": [")
        elif t == 21:
            _write_json(frame, [np.zeros((19, 3), np.float32) + 5])
        elif t == 22:
            nan = a[t].copy()
            nan[3, 0] = np.nan
            _write_json(frame, [nan])
        else:
            _write_json(frame, ([_moved(a[t], 260.0)] if t < 10 else []) + [a[t]])
    for t in range(len(b)):             # 00001 090_00: false detections listed first in odd frames
        false = _moved(b[t], *rng.uniform(-400, 400, 2))
        _write_json(raw / "00001" / "090_00" / f"{t + 1:04d}_keypoints.json", ([false] if t % 2 else []) + [b[t]])
    for t in range(5):                  # 00002 000_01: nobody at all
        _write_json(raw / "00002" / "000_01" / f"{t + 1:04d}_keypoints.json", [])
    for t in range(len(b)):             # 00003 045_00: a large person first, a small one second, every frame
        _write_json(raw / "00003" / "045_00" / f"{t + 1:04d}_keypoints.json", [b[t], _moved(b[t], 500.0, scale=0.5)])
    index = {f"{t + 1:04d}": np.int64(1) for t in range(len(b))}
    (sel / "00003" / "00" / "045").mkdir(parents=True)
    (sel / "00003" / "00" / "045" / "pose_selection_idx.pkl").write_bytes(pickle.dumps(index))
    (sel / "00001" / "00" / "090").mkdir(parents=True)
    (sel / "00001" / "00" / "090" / "pose_selection_idx.pkl").write_bytes(pickle.dumps(_Exploit()))
    return {"raw": raw, "sel": sel, "base": base, "a": a, "b": b}


@pytest.fixture(scope="module")
def oumvlp_out(ray_session, oumvlp):
    """The module's ingest without a selection index (shards of 2 sequences)."""
    out = oumvlp["base"] / "out"
    assert main(["ingest", "--input_path", str(oumvlp["raw"]), "--output_path", str(out), "--shard-size", "2",
                 "--max-errors", "10"]) == 0
    return out


def test_openpose_json_is_detected_tracked_and_keeps_empty_frames(oumvlp, oumvlp_out):
    rows = _rows(oumvlp_out)
    assert set(rows) == {"00001/00/000", "00001/00/090", "00003/00/045"}
    first = rows["00001/00/000"]
    assert first["seq"] == "000" and first["source"] == "00001/000_00" and first["joints"] == 18
    pose = first["pose"]
    assert pose.dtype == np.float32 and pose.shape == oumvlp["a"].shape      # every frame file is a frame
    missing = [12, 13, 20, 21, 22]
    keep = [t for t in range(len(pose)) if t not in missing]
    assert np.array_equal(pose[keep], oumvlp["a"][keep])                    # the subject, not person 0
    assert not pose[missing].any()                                           # nobody / bad file: (0, 0, 0)
    assert np.array_equal(rows["00001/00/090"]["pose"], oumvlp["b"])
    assert np.array_equal(rows["00003/00/045"]["pose"], oumvlp["b"])        # the prominent, continuous one
    manifest = json.loads((oumvlp_out / "_manifest.json").read_text())
    assert manifest["kind"] == "pose" and manifest["format"] == OPENPOSE_JSON and manifest["detected"]
    assert manifest["sequences"] == 3 and manifest["joints"] == {"18": 3}
    assert manifest["empty_frames"] == 5
    for key, row in rows.items():                                            # the pkl tree holds the same poses
        pkl = oumvlp_out / "pkl" / key / f"{row['seq']}.pkl"
        assert np.array_equal(loads_arrays(pkl.read_bytes()), row["pose"])


def test_bad_files_and_empty_sequence_go_to_errors_jsonl(oumvlp_out):
    reasons = {e["source"]: e["reason"] for e in _errors(oumvlp_out)}
    assert "not valid JSON" in reasons["00001/000_00/0021_keypoints.json"]
    assert "wrong joint count 19" in reasons["00001/000_00/0022_keypoints.json"]
    assert "non-finite" in reasons["00001/000_00/0023_keypoints.json"]
    assert "empty sequence" in reasons["00002/000_01"]
    assert len(reasons) == 4
    manifest = json.loads((oumvlp_out / "_manifest.json").read_text())
    assert manifest["error_count"] == 4 and manifest["rejected_sequences"] == 1


def test_pose_selection_index_is_honoured(ray_session, oumvlp, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["ingest", "--input_path", str(oumvlp["raw"]), "--output_path", str(out),
                 "--pose_selection_dir", str(oumvlp["sel"]), "--max-errors", "10"]) == 0
    rows = _rows(out)
    chosen = rows["00003/00/045"]["pose"]
    assert np.array_equal(chosen, np.stack([_moved(f, 500.0, scale=0.5) for f in oumvlp["b"]]))  # person 1
    assert np.array_equal(rows["00001/00/090"]["pose"], oumvlp["b"])        # refused index: tracked instead
    refused = [e for e in _errors(out) if e["source"].endswith("00001/00/090/pose_selection_idx.pkl")]
    assert len(refused) == 1 and "system" in refused[0]["reason"]
    assert f"{len(oumvlp['b'])} chosen by pose_selection_idx" in capsys.readouterr().out


def test_rerun_skips_finished_shards_and_redoes_only_a_lost_one(oumvlp, oumvlp_out, tmp_path, capsys):
    out = tmp_path / "copy"
    shutil.copytree(oumvlp_out, out)
    args = ["ingest", "--input_path", str(oumvlp["raw"]), "--output_path", str(out), "--shard-size", "2",
            "--max-errors", "10"]
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")}
    assert main(args) == 0
    assert "(2/2 shards already done)" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")} == before
    lost = sorted(out.glob("_shards/part-*.json"))[0]
    lost.unlink()
    (out / f"{lost.stem}.parquet").unlink()
    assert main(args) == 0
    assert "(1/2 shards already done)" in capsys.readouterr().out
    rows = list(read_pose_dataset(str(out)))
    assert len(rows) == 3 and len({(r["id"], r["type"], r["view"]) for r in rows}) == 3
    assert main(args + ["--set", "min_frames=3"]) == 1                     # other settings: refused


def test_ingest_then_heatmap_from_parquet_equals_heatmap_from_pkl_tree(oumvlp_out, tmp_path):
    common = ["--dataset_name", "OUMVLP", "--set", "coco18tococo17_args.transfer_to_coco17=true"]
    assert main(["heatmap", "--pose_data_path", str(oumvlp_out), "--save_root", str(tmp_path / "a"), *common]) == 0
    assert main(["heatmap", "--pose_data_path", str(oumvlp_out / "pkl"), "--save_root", str(tmp_path / "b"),
                 *common]) == 0
    from_parquet = {r["source"]: r for r in read_dataset(str(tmp_path / "a" / "OUMVLP_sigma_8.0_"))}
    from_pkl = {r["source"]: r for r in read_dataset(str(tmp_path / "b" / "OUMVLP_sigma_8.0_"))}
    assert set(from_parquet) == set(from_pkl) == {"00001/00/000/000.pkl", "00001/00/090/090.pkl",
                                                  "00003/00/045/045.pkl"}
    config = load_heatmap_config(overrides={"coco18tococo17_args.transfer_to_coco17": True})
    poses = _rows(oumvlp_out)
    for source, row in from_parquet.items():
        assert np.array_equal(row["heatmap"], from_pkl[source]["heatmap"])
        pose = poses[source.rsplit("/", 1)[0]]["pose"]
        assert np.array_equal(row["heatmap"], render_heatmaps(pose, config))


# ---- the other formats ---------------------------------------------------------------------------

def _csv(people: list[np.ndarray], lead: tuple[float, float] = (0, 1)) -> str:
    return "".join(",".join(str(float(v)) for v in (*lead, *p.reshape(-1))) + "\n" for p in people)


def test_gait3d_txt(ray_session, tmp_path, fixture_poses):
    walk = fixture_poses["walk_b"]
    seq = tmp_path / "raw" / "2D_Poses" / "0000" / "camid0_videoid2" / "seq0"
    seq.mkdir(parents=True)
    numbers = list(range(995, 995 + len(walk)))                            # f999 then f1000: numeric order
    for t, n in enumerate(numbers):
        people = [_moved(walk[t], -300.0), walk[t]] if t % 3 == 0 else [walk[t]]
        (seq / f"human_crop_f{n}.txt").write_text(_csv(people) if t != 7 else "1,2,three\n")
    out = tmp_path / "raw" / "ingested"                                    # inside the input: left out of it
    args = ["ingest", "--input_path", str(tmp_path / "raw"), "--output_path", str(out), "--max-errors", "1"]
    assert main(args) == 0 and main(args) == 0
    (row,) = read_pose_dataset(str(out))
    assert (row["id"], row["type"], row["view"], row["seq"]) == ("0000", "camid0_videoid2", "seq0", "seq0")
    expected = walk.copy()
    expected[7] = 0
    assert row["joints"] == 17 and np.array_equal(row["pose"], expected)
    (error,) = _errors(out)
    assert error["source"].endswith(f"human_crop_f{numbers[7]}.txt") and "not comma-separated" in error["reason"]
    assert json.loads((out / "_manifest.json").read_text())["format"] == GAIT3D_TXT


def test_grew_raw_layout(ray_session, tmp_path, fixture_poses):
    walk = fixture_poses["walk_b"][:6]
    raw = tmp_path / "GREW"
    folders = [raw / "train" / "00001" / "4XPn5Z28", raw / "test" / "gallery" / "00002" / "t16VLaQf",
               raw / "test" / "gallery" / "00002" / "79XJefi8", raw / "test" / "probe" / "01DdvEHX"]
    for folder in folders:
        folder.mkdir(parents=True)
        for t in range(len(walk)):
            (folder / f"{t + 1:05d}_2d_pose.txt").write_text(_csv([walk[t]], lead=(t + 1, 0)))
            (folder / f"{t + 1:05d}_3d_pose.txt").write_text("1,2,3\n")
            (folder / f"{t + 1:05d}.png").write_bytes(b"\x89PNG")
    out = tmp_path / "out"
    assert main(["ingest", "--input_path", str(raw), "--output_path", str(out)]) == 0
    rows = _rows(out)
    assert set(rows) == {"00001train/00/4XPn5Z28", "00002/01/79XJefi8", "00002/02/t16VLaQf", "probe/03/01DdvEHX"}
    assert all(np.array_equal(r["pose"], walk) for r in rows.values())
    assert json.loads((out / "_manifest.json").read_text())["format"] == GREW


def test_pkl_sequences_as_they_are(ray_session, tmp_path, fixture_poses):
    raw = tmp_path / "pkl"
    coco18 = fixture_poses["coco18_a"].astype(np.float64)
    walk = fixture_poses["walk_b"]
    grew_rows = np.concatenate([np.zeros((len(walk), 2)), walk.reshape(len(walk), -1)], axis=1)
    nan = walk.copy()
    nan[0, 0, 0] = np.nan
    files = {"001/nm-01/000/000.pkl": coco18, "002/00/abc/abc.pkl": grew_rows, "003/nm-01/000/000.pkl": nan,
             "004/nm-01/000/000.pkl": _Exploit()}
    for rel, obj in files.items():
        (raw / rel).parent.mkdir(parents=True)
        (raw / rel).write_bytes(pickle.dumps(obj))
    out = tmp_path / "out"
    assert main(["ingest", "--input_path", str(raw), "--output_path", str(out), "--max-errors", "2"]) == 0
    rows = _rows(out)
    assert set(rows) == {"001/nm-01/000", "002/00/abc"}
    assert np.array_equal(rows["001/nm-01/000"]["pose"], coco18.astype(np.float32))
    assert np.array_equal(rows["002/00/abc"]["pose"], walk)
    reasons = {e["source"]: e["reason"] for e in _errors(out)}
    assert "non-finite" in reasons["003/nm-01/000/000.pkl"] and "system" in reasons["004/nm-01/000/000.pkl"]
    assert json.loads((out / "_manifest.json").read_text())["format"] == PKL


# ---- pieces without Ray --------------------------------------------------------------------------

def test_detection_by_names_and_content(tmp_path):
    def read(data: dict):
        return lambda rel: data[rel]
    frame = json.dumps({"people": [_person(np.ones((25, 3)))]}).encode()
    assert detect_format(["a/b/c/1.json"], read({"a/b/c/1.json": frame})) == OPENPOSE_JSON
    row = _csv([np.ones((17, 3))]).encode()
    assert detect_format(["a/b/c/1.txt"], read({"a/b/c/1.txt": row})) == GAIT3D_TXT
    grew = {"train/1/s/00001_2d_pose.txt": row, "train/1/s/00001_3d_pose.txt": b"1,2,3"}
    assert detect_format(sorted(grew), read(grew)) == GREW
    with pytest.raises(ValueError, match="several formats"):
        detect_format(["a/b/c/1.json", "a/b/c/2.txt"], read({}))
    with pytest.raises(ValueError, match="none of the first"):
        detect_format(["a/b/c/1.json"], read({"a/b/c/1.json": b"<html>"}))


def test_parsers_and_frame_keys():
    assert parse_openpose_json(b'{"people": [{"pose_keypoints_2d": []}]}') == [None]
    with pytest.raises(FrameError, match="wrong joint count"):
        parse_openpose_json(json.dumps({"people": [{"pose_keypoints_2d": [1.0] * 20}]}).encode())
    people = parse_csv_rows(_csv([np.full((17, 3), 2.0), np.full((17, 3), 3.0)]).encode())
    assert [p[0, 0] for p in people] == [2.0, 3.0]
    assert parse_csv_rows(b"") == []
    assert frame_key("0001_keypoints.json") == "0001" and frame_key("00012.json") == "00012"
    with pytest.raises(UnsafePickleError):
        load_selection_index(pickle.dumps(_Exploit()))
    assert load_selection_index(pickle.dumps({"0003": np.int64(2), "0004": 1})) == {"0003": 2, "0004": 1}


def test_layouts():
    seqs, errors = group_sequences(["00001/000_00/0002.json", "00001/000_00/0010.json", "x.json",
                                    "9/00/045/0001.json"], OPENPOSE_JSON)
    assert [(s.key, s.files) for s in seqs] == [
        ("00001/00/000/000", ("00001/000_00/0002.json", "00001/000_00/0010.json")),
        ("9/00/045/045", ("9/00/045/0001.json",))]
    assert [e["source"] for e in errors] == ["x.json"]


def test_tracking_follows_continuity_not_list_order(fixture_poses):
    walk = fixture_poses["walk_b"]
    frames = [[_moved(walk[t], 300.0), walk[t]] if t < 5 else [walk[t]] for t in range(len(walk))]
    assert select_track(frames) == [1] * 5 + [0] * (len(walk) - 5)
    assert select_track([[], [walk[0]]]) == [None, 0]
    assert select_track([[walk[0], walk[0]]], forced={0: 1}) == [1]


def test_job_script_has_the_same_flags():
    result = subprocess.run([sys.executable, str(ROOT / "jobs" / "ingest.py"), "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for flag in ("--input_path", "--output_path", "--format", "--pose_selection_dir", "--set", "--max-errors"):
        assert flag in result.stdout


def test_one_line_errors(tmp_path, capsys):
    assert main(["ingest", "--input_path", str(tmp_path / "nope"), "--output_path", str(tmp_path / "o")]) == 1
    assert "is not a folder" in capsys.readouterr().err
    assert main(["ingest", "--input_path", str(tmp_path), "--output_path", str(tmp_path / "o"),
                 "--set", "tracking.speed=2"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown key" in err[0]
