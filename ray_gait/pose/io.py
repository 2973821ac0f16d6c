"""Pose files in OpenGait's layout `<id>/<type>/<view>/<seq>.pkl`, read through the restricted loader."""
from __future__ import annotations

import posixpath
from dataclasses import dataclass

import numpy as np

from ray_gait.io import fs
from ray_gait.io.safe_pickle import loads_arrays

# Data sets whose pose files need a rule of their own (names as OpenGait's --dataset_name).
SUSTECH_NAMES = frozenset({"sustech1k", "sustech-1k"})
GREW_NAMES = frozenset({"grew"})
GREW_LEADING_COLUMNS = 2


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
    return np.ascontiguousarray(arr, dtype=np.float64)


def load_pose(path: str, dataset_name: str = "") -> np.ndarray:
    """Read one pose file (path or URI) with the restricted loader; returns (T, V, C) float64."""
    raw = fs.read_bytes(fs.resolve(path))
    try:
        return pose_from_object(loads_arrays(raw), dataset_name)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
