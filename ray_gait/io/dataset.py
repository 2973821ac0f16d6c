"""The heatmap data set on disk (docs/formats.md): Parquet parts, `_manifest.json`, `errors.jsonl`.

One row per sequence.  Parts are written whole under a temporary name and renamed into place
(or uploaded in one piece on object stores), so a reader never sees a partial file.
"""
from __future__ import annotations

import io
import json
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ray_gait.io import fs

MANIFEST = "_manifest.json"
ERRORS = "errors.jsonl"
KEY_COLUMNS = ("id", "type", "view", "seq", "source")
ROW_GROUP_BYTES = 256 << 10

HEATMAP_SCHEMA = pa.schema([
    ("id", pa.string()), ("type", pa.string()), ("view", pa.string()), ("seq", pa.string()),
    ("source", pa.string()),
    ("frames", pa.int32()), ("height", pa.int32()), ("width", pa.int32()),
    ("heatmap", pa.binary()),
])

PAIRED_SCHEMA = pa.schema(list(HEATMAP_SCHEMA) + [
    ("sil_frames", pa.int32()), ("sil_height", pa.int32()), ("sil_width", pa.int32()),
    ("silhouette", pa.binary()),
])


def row_source(row: dict[str, Any]) -> str:
    """What names a row in an error: its `source`, else its key columns."""
    if row.get("source"):
        return str(row["source"])
    key = [str(row[name]) for name in ("id", "type", "view", "seq") if row.get(name) is not None]
    return "/".join(key) if key else "a row without key columns"


def _dimension(value: Any) -> int | None:
    """A shape entry as a positive int, or None (bools, floats, nulls, 0 and negatives are none)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        return None
    return int(value) if value > 0 else None


def array_from_bytes(data: Any, dtype: Any, shape: tuple[Any, ...], names: tuple[str, ...], source: str) -> np.ndarray:
    """`data` viewed as `shape` of `dtype`: every dimension a positive int, the byte count exactly their product."""
    dims = [_dimension(value) for value in shape]
    if dims and dims[0] is None and shape[0] == 0 and not isinstance(shape[0], bool):
        raise ValueError(f"{source}: empty sequence (0 frames)")
    for name, value, dim in zip(names, shape, dims):
        if dim is None:
            raise ValueError(f"{source}: {name} must be a positive integer, got {value!r}")
    try:
        size = memoryview(data).nbytes
    except TypeError:
        raise ValueError(f"{source}: the data is {type(data).__name__}, not bytes") from None
    item = np.dtype(dtype)
    expected = item.itemsize * int(np.prod(dims, dtype=object))
    if size != expected:
        raise ValueError(f"{source}: {size} data bytes, not the {expected} of {item} {tuple(dims)}")
    return np.frombuffer(data, dtype=item).reshape(dims)


def check_nonempty(array: np.ndarray, what: str) -> None:
    """Raise ValueError naming `what` when a sequence array has 0 frames or another dimension of 0."""
    if array.ndim == 0 or array.shape[0] == 0:
        raise ValueError(f"{what}: empty sequence (0 frames)")
    if array.size == 0:
        raise ValueError(f"{what}: a dimension of 0 in shape {array.shape}")


def heatmap_row(key: dict[str, str], heatmap: np.ndarray) -> dict[str, Any]:
    """A Parquet row of a rendered sequence: key columns plus the uint8 (T, 2, H, W) heatmap bytes."""
    if heatmap.dtype != np.uint8 or heatmap.ndim != 4 or heatmap.shape[1] != 2:
        raise ValueError(f"heatmap must be uint8 (T, 2, H, W), got {heatmap.dtype} {heatmap.shape}")
    check_nonempty(heatmap, f"heatmap of {key.get('source')}")
    row = {name: key[name] for name in KEY_COLUMNS}
    row.update(frames=heatmap.shape[0], height=heatmap.shape[2], width=heatmap.shape[3],
               heatmap=np.ascontiguousarray(heatmap).tobytes())
    return row


def decode_heatmap(row: dict[str, Any]) -> np.ndarray:
    """The (frames, 2, height, width) uint8 array of a row; ValueError naming the row for a wrong shape or size."""
    shape = (row.get("frames"), 2, row.get("height"), row.get("width"))
    return array_from_bytes(row.get("heatmap"), np.uint8, shape, ("frames", "channels", "height", "width"),
                            f"heatmap of {row_source(row)}")


def decode_silhouette(row: dict[str, Any]) -> np.ndarray:
    """The (sil_frames, sil_height, sil_width) uint8 array of a paired row (checked as `decode_heatmap`)."""
    shape = (row.get("sil_frames"), row.get("sil_height"), row.get("sil_width"))
    return array_from_bytes(row.get("silhouette"), np.uint8, shape, ("sil_frames", "sil_height", "sil_width"),
                            f"silhouette of {row_source(row)}")


def write_parquet_atomic(loc: fs.Location, rows: list[dict[str, Any]], schema: pa.Schema) -> None:
    """Write rows as one Parquet file that appears only when complete.

    Row groups hold about `ROW_GROUP_BYTES` (one sequence of maps each), so that training reads the
    sequence its sampler draws without reading its neighbours (ray_gait.data.reader).
    """
    table = pa.Table.from_pylist(rows, schema=schema)
    per_row = max(1, table.nbytes // max(1, table.num_rows))
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd", row_group_size=max(1, ROW_GROUP_BYTES // per_row))
    fs.write_bytes_atomic(loc, buffer.getvalue())


def write_json_atomic(loc: fs.Location, data: Any) -> None:
    """Write a JSON document atomically."""
    fs.write_bytes_atomic(loc, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode("utf-8"))


def read_json(loc: fs.Location) -> Any:
    """Read a JSON document."""
    return json.loads(fs.read_bytes(loc).decode("utf-8"))


def parquet_files(root: str) -> list[str]:
    """Sorted relative paths of the Parquet parts of a data set (temporary files excluded)."""
    loc = fs.resolve(root)
    return [p for p in fs.list_files(loc, depth=1, pattern="*.parquet") if not p.startswith(".")]


def read_dataset(path: str, columns: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """Iterate over a data set (docs/formats.md) as dicts; `heatmap` (and `silhouette`) decoded to numpy arrays."""
    loc = fs.resolve(path)
    if not fs.is_dir(loc):
        raise FileNotFoundError(f"{path} is not a ray_gait data set folder")
    for name in parquet_files(path):
        table = pq.read_table(loc.join(name).path, filesystem=loc.fs, columns=columns)
        for row in table.to_pylist():
            if "heatmap" in row and "frames" in row:
                row["heatmap"] = decode_heatmap(row)
            if "silhouette" in row and "sil_frames" in row:
                row["silhouette"] = decode_silhouette(row)
            yield row
