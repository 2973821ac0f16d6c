"""Pose inputs: OpenGait's layout `<id>/<type>/<view>/<seq>.pkl` (read through the restricted loader),
and the Parquet pose data set that `ray-gait ingest` writes (one row per sequence, `_manifest.json`
with `"kind": "pose"`).
"""
from __future__ import annotations

import fnmatch
import posixpath
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ray_gait.io import fs
from ray_gait.io.dataset import (KEY_COLUMNS, MANIFEST, array_from_bytes, check_nonempty, parquet_files, read_json,
                                 row_source)
from ray_gait.io.safe_pickle import loads_arrays

# Data sets whose pose files need a rule of their own (names as OpenGait's --dataset_name).
SUSTECH_NAMES = frozenset({"sustech1k", "sustech-1k"})
GREW_NAMES = frozenset({"grew"})
GREW_LEADING_COLUMNS = 2
# The longest pose sequence accepted (about 55 minutes at 30 fps; gait sequences hold tens to a few
# hundred frames): a longer one is refused before it is copied, so that a file cannot declare an
# array that takes gigabytes once converted (and then rendered into maps).
MAX_POSE_FRAMES = 100_000


@dataclass(frozen=True)
class SequenceKey:
    """Where a sequence sits in OpenGait's layout; `source` is its path relative to the root."""

    id: str
    type: str
    view: str
    seq: str
    source: str


def sequence_key(relpath: str) -> SequenceKey:
    """Parse `<id>/<type>/<view>/<seq>.<ext>` (relative to the data root) into a SequenceKey."""
    parts = relpath.split("/")
    if len(parts) != 4:
        raise ValueError(f"{relpath}: expected <id>/<type>/<view>/<file>, got {len(parts)} levels")
    stem = posixpath.splitext(parts[3])[0]
    return SequenceKey(parts[0], parts[1], parts[2], stem, relpath)


def pose_file_pattern(dataset_name: str) -> str:
    """The file-name pattern of pose files for a data set (SUSTech-1K keeps only `03*.pkl`)."""
    return "03*.pkl" if dataset_name.lower() in SUSTECH_NAMES else "*.pkl"


def list_pose_files(root: str, dataset_name: str = "") -> list[str]:
    """Relative paths of the pose files below `root` (a path or URI), sorted, per the data set's rule."""
    loc = fs.resolve(root)
    if not fs.is_dir(loc):
        raise FileNotFoundError(f"pose data path {root} is not a folder")
    return fs.list_files(loc, depth=4, pattern=pose_file_pattern(dataset_name))


def pose_from_object(obj: object, dataset_name: str = "") -> np.ndarray:
    """Check what a pose pickle held and return it as (T, V, C) float64 (GREW rows reshaped)."""
    if not isinstance(obj, np.ndarray):
        raise ValueError(f"expected a numpy array, found {type(obj).__name__}")
    if obj.dtype.kind not in "fiu":
        raise ValueError(f"expected a numeric array, found dtype {obj.dtype}")
    arr = obj
    if dataset_name.lower() in GREW_NAMES:
        if arr.ndim != 2 or (arr.shape[1] - GREW_LEADING_COLUMNS) % 3 != 0:
            raise ValueError(f"GREW rows must be (T, 2 + V*3), got shape {arr.shape}")
        arr = arr[:, GREW_LEADING_COLUMNS:].reshape(arr.shape[0], -1, 3)
    if arr.ndim != 3:
        raise ValueError(f"expected a (T, V, 3) pose array, got shape {arr.shape}")
    _check_pose_shape(arr.shape)
    return np.ascontiguousarray(arr, dtype=np.float64)


def _check_pose_shape(shape: tuple[int, ...]) -> None:
    """Refuse 0 frames, more than MAX_POSE_FRAMES, 0 joints or 0 values per joint."""
    frames, joints, values = shape
    if frames == 0:
        raise ValueError("empty sequence (0 frames)")
    if frames > MAX_POSE_FRAMES:
        raise ValueError(f"{frames} frames, more than the {MAX_POSE_FRAMES} accepted (pose.io.MAX_POSE_FRAMES)")
    if joints == 0:
        raise ValueError(f"no joints (shape {shape})")
    if values == 0:
        raise ValueError(f"no values per joint (shape {shape})")


def load_pose(path: str, dataset_name: str = "") -> np.ndarray:
    """Read one pose file (path or URI) with the restricted loader; returns (T, V, C) float64."""
    raw = fs.read_bytes(fs.resolve(path))
    try:
        return pose_from_object(loads_arrays(raw), dataset_name)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


# The Parquet pose data set: one row per sequence, `pose` = float32 C-order (frames, joints, 3).
POSE_KIND = "pose"
POSE_SCHEMA = pa.schema([
    ("id", pa.string()), ("type", pa.string()), ("view", pa.string()), ("seq", pa.string()),
    ("source", pa.string()),
    ("frames", pa.int32()), ("joints", pa.int32()),
    ("pose", pa.binary()),
])


def pose_row(key: dict[str, str], pose: np.ndarray) -> dict[str, Any]:
    """A Parquet row of a pose sequence: key columns plus the float32 (T, V, 3) pose bytes."""
    if pose.ndim != 3 or pose.shape[2] != 3:
        raise ValueError(f"pose must be (T, V, 3), got {pose.shape}")
    check_nonempty(pose, f"pose of {key.get('source')}")
    row = {name: key[name] for name in KEY_COLUMNS}
    row.update(frames=pose.shape[0], joints=pose.shape[1],
               pose=np.ascontiguousarray(pose, dtype=np.float32).tobytes())
    return row


def decode_pose(row: dict[str, Any]) -> np.ndarray:
    """The (frames, joints, 3) float32 array of a pose row; ValueError naming the row for a wrong shape or size."""
    shape = (row.get("frames"), row.get("joints"), 3)
    return array_from_bytes(row.get("pose"), np.float32, shape, ("frames", "joints", "values"),
                            f"pose of {row_source(row)}")


def is_pose_dataset(root: str) -> bool:
    """True when `root` holds a Parquet pose data set (its `_manifest.json` has kind "pose")."""
    loc = fs.resolve(root).join(MANIFEST)
    if not fs.exists(loc):
        return False
    manifest = read_json(loc)
    return isinstance(manifest, dict) and manifest.get("kind") == POSE_KIND


def pose_source(row: dict[str, Any]) -> str:
    """The name a row would have in OpenGait's pkl tree: `<id>/<type>/<view>/<seq>.pkl`."""
    return f"{row['id']}/{row['type']}/{row['view']}/{row['seq']}.pkl"


def declared_shape_problem(row: dict[str, Any]) -> str | None:
    """Why a pose row's declared `frames` / `joints` cannot be a sequence (0, negative, too long), or None."""
    frames, joints = row.get("frames"), row.get("joints")
    if frames == 0:
        return "empty sequence (0 frames)"
    for name, value in (("frames", frames), ("joints", joints)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            return f"{name} must be a positive integer, got {value!r}"
    if frames > MAX_POSE_FRAMES:
        return f"{frames} frames, more than the {MAX_POSE_FRAMES} accepted (pose.io.MAX_POSE_FRAMES)"
    return None


def pose_dataset_index(root: str, dataset_name: str = "",
                       refused: list[dict[str, str]] | None = None) -> dict[str, tuple[str, int]]:
    """Map `<id>/<type>/<view>/<seq>.pkl` of every row of a pose data set to (Parquet part, row number).

    A row whose declared shape cannot be a sequence (`declared_shape_problem`, e.g. 0 frames) is left
    out and appended to `refused` as {"source", "reason"}; without `refused` it raises ValueError.
    """
    loc = fs.resolve(root)
    pattern = pose_file_pattern(dataset_name)
    index: dict[str, tuple[str, int]] = {}
    for part in parquet_files(root):
        table = pq.read_table(loc.join(part).path, filesystem=loc.fs,
                              columns=["id", "type", "view", "seq", "frames", "joints"])
        for number, row in enumerate(table.to_pylist()):
            source = pose_source(row)
            if not fnmatch.fnmatchcase(posixpath.basename(source), pattern):
                continue
            if source in index:
                raise ValueError(f"{root}: sequence {source} appears twice ({index[source][0]}, {part})")
            problem = declared_shape_problem(row)
            if problem is not None:
                if refused is None:
                    raise ValueError(f"{root}: {source} ({part}, row {number}): {problem}")
                refused.append({"source": source, "reason": f"{part}, row {number}: {problem}"})
                continue
            index[source] = (part, number)
    return index


def read_pose_rows(root: str, wanted: list[tuple[str, int]], decode: bool = True) -> list[dict[str, Any]]:
    """Rows of a pose data set, given as (Parquet part, row number), in that order, `pose` decoded.

    With `decode=False` the `pose` bytes are left as they are: the caller decodes each row with
    `decode_pose`, so that one malformed row fails alone.
    """
    loc = fs.resolve(root)
    by_part: dict[str, list[int]] = {}
    for part, number in wanted:
        by_part.setdefault(part, []).append(number)
    found: dict[tuple[str, int], dict[str, Any]] = {}
    for part, numbers in by_part.items():
        table = pq.read_table(loc.join(part).path, filesystem=loc.fs).take(numbers)
        for number, row in zip(numbers, table.to_pylist()):
            if decode:
                row["pose"] = decode_pose(row)
            found[(part, number)] = row
    return [found[item] for item in wanted]


def read_pose_dataset(root: str) -> Iterator[dict[str, Any]]:
    """Iterate over the rows of a pose data set, `pose` decoded to float32 (frames, joints, 3)."""
    loc = fs.resolve(root)
    if not is_pose_dataset(root):
        raise FileNotFoundError(f"{root} is not a pose data set (no _manifest.json with kind \"pose\")")
    for part in parquet_files(root):
        for row in pq.read_table(loc.join(part).path, filesystem=loc.fs).to_pylist():
            row["pose"] = decode_pose(row)
            yield row
