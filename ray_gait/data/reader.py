"""Sequences read when the sampler asks for them, through an LRU cache bounded in bytes.

A worker holds the split's index (`ray_gait.data.index`) and, at most, `cache_bytes` of decoded
sequences: its memory does not grow with the data set, and the workers of a node share nothing but
the files (OpenGait's `cache: false`).  `cache_bytes=None` keeps everything it has read (OpenGait's
`cache: true`, for small sets).  Parquet parts are read one row group at a time (step 1 and step 2
write one sequence per row group), pkl files whole; local paths and object-store URIs alike.

For a pose data set the reader keeps the normalized pose of each sequence (padding and centring
look at the whole sequence) and `model_arrays` draws the maps of the sampled frames only.
"""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ray_gait.data.index import SplitIndex, SequenceRef
from ray_gait.heatmap.config import HeatmapConfig, load_heatmap_config
from ray_gait.io import fs
from ray_gait.io.dataset import decode_heatmap, decode_silhouette
from ray_gait.pairing.load import load_silhouette
from ray_gait.pose.io import decode_pose, load_pose, pose_from_object

log = logging.getLogger(__name__)

OPEN_FILES = 32
ROW_COLUMNS = {
    "maps": ["frames", "height", "width", "heatmap"],
    "paired": ["frames", "height", "width", "heatmap", "sil_frames", "sil_height", "sil_width", "silhouette"],
    "pose": ["source", "frames", "joints", "pose"],
}


def _cell(column: pa.ChunkedArray, row: int) -> Any:
    """One value of a column; binary values as a zero-copy view of Arrow's buffer (decoders copy it once)."""
    if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
        for chunk in column.chunks:
            if row < len(chunk):
                return memoryview(chunk[row].as_buffer())
            row -= len(chunk)
        raise IndexError(f"row {row} is past the end of the row group")
    return column[row].as_py()


class SequenceError(ValueError):
    """A sequence that cannot be used (unreadable, malformed, or its two halves disagree)."""


def require_frames(arrays: list[np.ndarray]) -> None:
    """Raise ValueError unless every array of a sequence has at least one frame (a 0-frame sequence is refused)."""
    if not arrays:
        raise ValueError("no arrays")
    for array in arrays:
        if array.ndim == 0 or array.shape[0] == 0:
            raise ValueError(f"empty sequence (0 frames, shape {array.shape})")


class SequenceReader:
    """The arrays of an index's sequences, read on demand (thread-safe; see the module docstring)."""

    def __init__(self, index: SplitIndex, columns: tuple[str, ...], cache_bytes: int | None = 1 << 30,
                 heatmap_config: HeatmapConfig | None = None, render_device: str | None = None) -> None:
        self.index = index
        self.columns = tuple(columns)
        self.cache_bytes = cache_bytes
        self.heatmap_config = heatmap_config or load_heatmap_config()
        self.render_device = render_device
        self._cache: OrderedDict[int, list[np.ndarray]] = OrderedDict()
        self._files: OrderedDict[str, tuple[pq.ParquetFile, threading.Lock]] = OrderedDict()
        self._lock = threading.Lock()
        self.cached_bytes = 0
        self.peak_cached_bytes = 0
        self.reads = 0
        self.hits = 0

    def __len__(self) -> int:
        return len(self.index)

    @property
    def labels(self) -> list[str]:
        """The identity of every sequence."""
        return self.index.labels

    @property
    def keys(self) -> list[tuple[str, str, str, str]]:
        """(id, type, view, seq) of every sequence."""
        return self.index.keys

    def arrays(self, i: int) -> list[np.ndarray]:
        """Sequence `i` as aligned arrays [T, ...]: maps (and silhouettes), or pose points and values."""
        with self._lock:
            found = self._cache.get(i)
            if found is not None:
                self._cache.move_to_end(i)
                self.hits += 1
                return found
        ref = self.index.refs[i]
        try:
            arrays = self._load(ref)
            require_frames(arrays)
        except (ValueError, OSError, KeyError) as exc:
            raise SequenceError(f"{ref.file}{f' (row group {ref.row_group}, row {ref.row})' if ref.row_group >= 0 else ''}"
                                f": {exc}") from exc
        self._keep(i, arrays)
        return arrays

    def model_arrays(self, collated: list[np.ndarray]) -> list[np.ndarray]:
        """Collated arrays of sampled frames -> what the model input is built from (maps drawn from poses)."""
        if not self.index.renders_maps:
            return collated
        from ray_gait.heatmap.on_the_fly import render_frames
        maps = render_frames(collated[0], collated[1], self.heatmap_config, device=self.render_device)
        return [maps] + list(collated[2:])

    def _keep(self, i: int, arrays: list[np.ndarray]) -> None:
        size = sum(a.nbytes for a in arrays)
        with self._lock:
            self.reads += 1
            if i in self._cache or (self.cache_bytes is not None and size > self.cache_bytes):
                return
            self._cache[i] = arrays
            self.cached_bytes += size
            while self.cache_bytes is not None and self.cached_bytes > self.cache_bytes:
                _, dropped = self._cache.popitem(last=False)
                self.cached_bytes -= sum(a.nbytes for a in dropped)
            self.peak_cached_bytes = max(self.peak_cached_bytes, self.cached_bytes)

    def _parquet_row(self, ref: SequenceRef) -> dict[str, Any]:
        with self._lock:
            entry = self._files.get(ref.file)
            if entry is None:
                loc = fs.resolve(ref.file)
                entry = (pq.ParquetFile(loc.fs.open_input_file(loc.path)), threading.Lock())
                self._files[ref.file] = entry
                if len(self._files) > OPEN_FILES:
                    self._files.popitem(last=False)
            else:
                self._files.move_to_end(ref.file)
        handle, lock = entry
        with lock:
            table = handle.read_row_group(ref.row_group, columns=ROW_COLUMNS[self.index.kind])
        return {name: _cell(table.column(name), ref.row) for name in table.column_names}

    def _load(self, ref: SequenceRef) -> list[np.ndarray]:
        kind = self.index.kind
        if kind != "pose":
            row = self._parquet_row(ref)
            arrays = [np.array(decode_heatmap(row))]
            if "silhouette" in self.columns:
                arrays.append(np.array(decode_silhouette(row)))
                if arrays[1].shape[0] != arrays[0].shape[0]:
                    raise ValueError(f"frame count differs (heatmap {arrays[0].shape[0]}, "
                                     f"silhouette {arrays[1].shape[0]})")
            return arrays
        from ray_gait.heatmap.on_the_fly import prepare_pose
        if ref.row_group >= 0:
            pose = pose_from_object(np.asarray(decode_pose(self._parquet_row(ref))))
        else:
            pose = load_pose(ref.file, self.index.dataset_name)
        pts, values = prepare_pose(pose, self.heatmap_config)
        arrays = [pts, values]
        if "silhouette" in self.columns:
            sil = load_silhouette(ref.sil)
            if sil.shape[0] != pts.shape[0]:
                raise ValueError(f"frame count differs (pose {pts.shape[0]}, silhouette {sil.shape[0]} in {ref.sil})")
            arrays.append(sil)
        return arrays
