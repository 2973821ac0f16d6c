"""Embeddings on disk (docs/formats.md): Parquet parts, one row per sequence, plus `_manifest.json`.

Columns: `id`, `type`, `view`, `seq` (strings), `embedding` (float32 bytes, C-order `(dim, parts)`),
`dim`, `parts` (int32).  `ray-gait embed` writes one part per shard of sequences (`part-NNNNNN.parquet`,
in key order), each atomically, and the manifest last; readers go through the parts in name order
and take them in chunks of rows (`iter_chunks`), so no reader has to hold a whole data set.
"""
from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ray_gait.io import fs
from ray_gait.io.dataset import MANIFEST, parquet_files, read_json

KIND = "embeddings"
KEY_NAMES = ("id", "type", "view", "seq")
COLUMNS = (*KEY_NAMES, "embedding", "dim", "parts")
SCHEMA = pa.schema([
    ("id", pa.string()), ("type", pa.string()), ("view", pa.string()), ("seq", pa.string()),
    ("embedding", pa.binary()), ("dim", pa.int32()), ("parts", pa.int32()),
])


@dataclass(frozen=True)
class EmbeddingChunk:
    """Consecutive rows of an embeddings data set: `start` (row number of the first), keys [n, 4], embeddings [n, E, p]."""

    start: int
    keys: np.ndarray
    embeddings: np.ndarray

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])


def part_name(shard: int) -> str:
    """The file name of a shard's part; names sort in shard (key) order."""
    return f"part-{shard:06d}.parquet"


def embedding_table(keys: Sequence[Sequence[str]], embeddings: Sequence[np.ndarray]) -> pa.Table:
    """A table of SCHEMA from keys (id, type, view, seq) and embeddings [E, p] each (stored as float32, C-order)."""
    if len(keys) != len(embeddings):
        raise ValueError(f"{len(keys)} keys for {len(embeddings)} embeddings")
    arrays = [np.ascontiguousarray(e, dtype=np.float32) for e in embeddings]
    for key, array in zip(keys, arrays):
        if array.ndim != 2 or array.size == 0:
            raise ValueError(f"embedding of {'/'.join(key)} must be a non-empty [E, p] array, got {array.shape}")
    columns: dict[str, Any] = {name: [str(key[i]) for key in keys] for i, name in enumerate(KEY_NAMES)}
    columns["embedding"] = [a.tobytes() for a in arrays]
    columns["dim"] = [a.shape[0] for a in arrays]
    columns["parts"] = [a.shape[1] for a in arrays]
    return pa.Table.from_pydict(columns, schema=SCHEMA)


def write_part(loc: fs.Location, keys: Sequence[Sequence[str]], embeddings: Sequence[np.ndarray]) -> int:
    """Write one part atomically (one row group; embeddings uncompressed, keys zstd); returns its row count."""
    table = embedding_table(keys, embeddings)
    buffer = io.BytesIO()
    pq.write_table(table, buffer, row_group_size=max(1, table.num_rows),
                   compression={name: "zstd" for name in KEY_NAMES} | {"embedding": "none", "dim": "zstd",
                                                                       "parts": "zstd"},
                   use_dictionary=list(KEY_NAMES), write_statistics=[*KEY_NAMES, "dim", "parts"])
    fs.write_bytes_atomic(loc, buffer.getvalue())
    return table.num_rows


def is_embeddings_output(loc: fs.Location) -> bool:
    """True when a folder holds a manifest written by `ray-gait embed`."""
    manifest = loc.join(MANIFEST)
    if not fs.exists(manifest):
        return False
    try:
        found = read_json(manifest)
    except (ValueError, OSError):
        return False
    return isinstance(found, dict) and found.get("kind") == KIND


def prepare_output(loc: fs.Location) -> int:
    """Make `loc` ready for a new run: absent or empty, or an earlier embed output whose manifest and parts are
    removed (manifest first, so an interrupted run never looks finished); returns the files removed.

    Anything else (a file, a folder holding other files) is refused with ValueError, and nothing is deleted.
    """
    if not fs.exists(loc):
        return 0
    if not fs.is_dir(loc):
        raise ValueError(f"--out {loc.uri} is a file, not a folder; nothing was changed")
    files = fs.list_files(loc)
    if not files:
        return 0
    if not is_embeddings_output(loc):
        raise ValueError(f"--out {loc.uri} is not empty and holds no output of `ray-gait embed` (no {MANIFEST} with "
                         f"\"kind\": \"{KIND}\"; it holds e.g. {files[0]!r}): choose a new or empty folder. "
                         "Nothing was deleted")
    loc.fs.delete_file(loc.join(MANIFEST).path)
    removed = [rel for rel in files if rel != MANIFEST and "/" not in rel and rel.endswith(".parquet")]
    for rel in removed:
        loc.fs.delete_file(loc.join(rel).path)
    return len(removed) + 1 + fs.remove_temporaries(loc)


def _binary_values(column: pa.ChunkedArray | pa.Array, expected: int, where: str) -> np.ndarray:
    """The bytes of a binary column whose every value is `expected` bytes long, as one uint8 array (no copy)."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if array.null_count:
        raise ValueError(f"{where}: a null embedding")
    width = np.int64 if pa.types.is_large_binary(array.type) else np.int32
    offsets = np.frombuffer(array.buffers()[1], dtype=width)[array.offset:array.offset + len(array) + 1]
    if np.any(np.diff(offsets) != expected):
        bad = int(np.flatnonzero(np.diff(offsets) != expected)[0])
        raise ValueError(f"{where}: row {bad} holds {int(offsets[bad + 1] - offsets[bad])} embedding bytes, "
                         f"not the {expected} of its dim x parts float32")
    data = array.buffers()[2]
    if data is None:
        return np.zeros(0, dtype=np.uint8)
    return np.frombuffer(data, dtype=np.uint8)[int(offsets[0]):int(offsets[-1])]


def decode_table(table: pa.Table, start: int, where: str) -> EmbeddingChunk:
    """An EmbeddingChunk from a table of SCHEMA's columns; ValueError for mixed shapes, wrong sizes, non-finite values."""
    if len(table) == 0:
        raise ValueError(f"{where}: no rows")
    if table.column("dim").null_count or table.column("parts").null_count:
        raise ValueError(f"{where}: a null dim or parts")
    dims = np.asarray(table.column("dim").combine_chunks())
    parts = np.asarray(table.column("parts").combine_chunks())
    if np.any(dims != dims[0]) or np.any(parts != parts[0]) or dims[0] < 1 or parts[0] < 1:
        raise ValueError(f"{where}: embeddings of different or invalid shapes (dim {sorted(set(dims.tolist()))}, "
                         f"parts {sorted(set(parts.tolist()))})")
    shape = (len(table), int(dims[0]), int(parts[0]))
    raw = _binary_values(table.column("embedding"), 4 * shape[1] * shape[2], where)
    embeddings = raw.view(np.float32).reshape(shape) if raw.ctypes.data % 4 == 0 else \
        np.frombuffer(raw.tobytes(), dtype=np.float32).reshape(shape)
    if not np.isfinite(embeddings).all():
        raise ValueError(f"{where}: an embedding holds NaN or infinity")
    keys = np.empty((len(table), len(KEY_NAMES)), dtype=object)
    for i, name in enumerate(KEY_NAMES):
        keys[:, i] = table.column(name).to_pylist()
    return EmbeddingChunk(start, keys, embeddings)


def embedding_parts(path: str) -> tuple[fs.Location, list[str]]:
    """The folder and sorted part names of an embeddings data set; FileNotFoundError / ValueError when it is none."""
    loc = fs.resolve(path)
    if not fs.is_dir(loc):
        raise FileNotFoundError(f"{path} is not a folder of embeddings (written by `ray-gait embed`)")
    names = parquet_files(path)
    if not names:
        raise ValueError(f"{path} holds no Parquet parts: not an embeddings data set")
    missing = [c for c in COLUMNS if c not in pq.read_schema(loc.join(names[0]).path, filesystem=loc.fs).names]
    if missing:
        raise ValueError(f"{path}: {names[0]} lacks the column(s) {', '.join(missing)} of an embeddings data set")
    return loc, names


def _record_batches(loc: fs.Location, names: list[str], rows: int) -> Iterator[tuple[str, pa.RecordBatch]]:
    """Record batches of at most `rows` rows of each part in turn, with the part's name."""
    for name in names:
        with loc.fs.open_input_file(loc.join(name).path) as handle:
            for batch in pq.ParquetFile(handle).iter_batches(batch_size=rows, columns=list(COLUMNS)):
                yield name, batch


def iter_chunks(path: str, rows: int) -> Iterator[EmbeddingChunk]:
    """The rows of an embeddings data set in order, in chunks of `rows` rows (the last may be shorter)."""
    if rows < 1:
        raise ValueError(f"chunk rows must be >= 1, got {rows}")
    loc, names = embedding_parts(path)
    pending: list[pa.RecordBatch] = []
    held, start, where = 0, 0, path
    for name, batch in _record_batches(loc, names, rows):
        pending.append(batch)
        held += batch.num_rows
        where = f"{loc.uri}/{name}"
        while held >= rows:
            table = pa.Table.from_batches(pending)
            yield decode_table(table.slice(0, rows), start, where)
            rest = table.slice(rows)
            pending, held, start = rest.to_batches(), rest.num_rows, start + rows
    if held:
        yield decode_table(pa.Table.from_batches(pending), start, where)


def read_embeddings(path: str) -> tuple[np.ndarray, np.ndarray]:
    """A whole (small) embeddings data set: embeddings [n, E, p] float32 and keys [n, 4] (id, type, view, seq)."""
    chunks = list(iter_chunks(path, 1 << 16))
    return np.concatenate([c.embeddings for c in chunks]), np.concatenate([c.keys for c in chunks])

