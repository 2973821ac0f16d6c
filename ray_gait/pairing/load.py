"""Load the two halves of a pair and check that they belong together (plain Python, no Ray)."""
from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow.parquet as pq

from ray_gait.io import fs
from ray_gait.io.dataset import check_nonempty, decode_heatmap
from ray_gait.io.safe_pickle import loads_arrays


def load_silhouette(uri: str) -> np.ndarray:
    """A silhouette sequence (T, H, W) uint8 through the restricted loader."""
    arr = loads_arrays(fs.read_bytes(fs.resolve(uri)))
    if not isinstance(arr, np.ndarray) or arr.ndim != 3:
        raise ValueError(f"{uri}: silhouettes must be a (T, H, W) array, "
                         f"got {getattr(arr, 'shape', type(arr).__name__)}")
    check_nonempty(arr, f"silhouettes of {uri}")
    if arr.dtype != np.uint8:
        if arr.dtype.kind not in "fiu" or arr.min() < 0 or arr.max() > 255:
            raise ValueError(f"{uri}: silhouettes must be uint8 gray levels, got dtype {arr.dtype}")
        arr = arr.astype(np.uint8)
    return arr


def load_heatmap_pkl(uri: str) -> np.ndarray:
    """A heatmap sequence (T, 2, H, W) uint8 from OpenGait's pkl tree."""
    arr = loads_arrays(fs.read_bytes(fs.resolve(uri)))
    if not isinstance(arr, np.ndarray) or arr.ndim != 4 or arr.shape[1] != 2 or arr.dtype != np.uint8:
        raise ValueError(f"{uri}: heatmaps must be uint8 (T, 2, H, W), "
                         f"got {getattr(arr, 'shape', type(arr).__name__)}")
    check_nonempty(arr, f"heatmaps of {uri}")
    return arr


def heatmap_rows(heatmap_root: str, part: str) -> list[dict[str, Any]]:
    """All rows of one Parquet part of a heatmap data set."""
    loc = fs.resolve(heatmap_root)
    return pq.read_table(loc.join(part).path, filesystem=loc.fs).to_pylist()


def paired_row(base: dict[str, Any], heatmap: np.ndarray, sil: np.ndarray) -> dict[str, Any]:
    """The paired data set's row of a pair (docs/formats.md), or ValueError when the frame counts differ."""
    if heatmap.shape[0] != sil.shape[0]:
        raise ValueError(f"frame count differs (heatmap {heatmap.shape[0]}, silhouette {sil.shape[0]})")
    check_nonempty(heatmap, f"heatmap of {base.get('source')}")
    check_nonempty(sil, f"silhouettes of {base.get('source')}")
    row = dict(base)
    row.update(frames=heatmap.shape[0], height=heatmap.shape[2], width=heatmap.shape[3],
               heatmap=np.ascontiguousarray(heatmap).tobytes(), sil_frames=sil.shape[0],
               sil_height=sil.shape[1], sil_width=sil.shape[2], silhouette=np.ascontiguousarray(sil).tobytes())
    return row


def pair_group(group: dict[str, Any], with_arrays: bool = True) -> list[dict[str, Any]]:
    """Load and check every pair of a group (one Parquet part, or one pkl file); one row per pair.

    Rows carry `error` ('' when paired).  Without arrays (for symlinks) only the check is kept.
    """
    out = []
    rows = heatmap_rows(group["heatmap_root"], group["parquet"]) if group.get("parquet") else None
    for pair in group["pairs"]:
        base = {k: pair[k] for k in ("id", "type", "view", "seq", "source")}
        try:
            heatmap = decode_heatmap(rows[pair["row"]]) if rows is not None else load_heatmap_pkl(pair["pkl"])
            row = paired_row(base, heatmap, load_silhouette(pair["sil"]))
            row["error"] = ""
        except (ValueError, OSError) as exc:
            row = dict(base, frames=0, height=0, width=0, heatmap=b"", sil_frames=0, sil_height=0, sil_width=0,
                       silhouette=b"", error=str(exc))
        if not with_arrays:
            row["heatmap"], row["silhouette"] = b"", b""
        out.append(row)
    return out
