"""Exact k-nearest-neighbour search of probe embeddings in a gallery, in bounded memory (plain numpy).

For each chunk of probes the gallery is read chunk by chunk; each gallery chunk's distances come
from `metrics.distances` (the evaluation's part-averaged distance, OpenGait's `cuda_dist`) and are
merged into a running top-k per probe.  Memory is O(probe_rows x gallery_rows + (probe_rows +
gallery_rows) x E x p), whatever the sizes of the two sets; no probe x gallery matrix exists.

Order: by distance, equal distances by gallery row (as a stable argsort of the full matrix).
Distance and row are packed into one uint64 per candidate (the float32's bits mapped to an
order-preserving integer, then the row), so selection with `np.partition` is exact.
"""
from __future__ import annotations

import csv
import json
import os
import posixpath
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np
import pyarrow.fs as pafs

from ray_gait.evaluation.metrics import METRICS, distances
from ray_gait.io import fs
from ray_gait.io.embeddings import KEY_NAMES, EmbeddingChunk, iter_chunks

COLUMNS = ("probe_id", "probe_type", "probe_view", "probe_seq", "rank", "gallery_id", "gallery_type", "gallery_view",
           "gallery_seq", "distance")
DEFAULT_CHUNK_ROWS = 1024
FORMATS = (".csv", ".json")
_ROW_BITS = 32
_ROW_MASK = np.uint64((1 << _ROW_BITS) - 1)
_SIGN_FLIP = np.int64(0x7FFFFFFF)
_OFFSET = np.int64(1 << 31)


def pack(dist: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """uint64 keys [n, g] ordered as (distance, gallery row) for distances [n, g] float32 and gallery rows [g]."""
    d = np.add(np.asarray(dist, dtype=np.float32), np.float32(0.0))   # -0.0 -> +0.0: equal floats, equal keys
    ordered = d.view(np.int32).astype(np.int64)
    del d
    negative = ordered < 0
    ordered[negative] ^= _SIGN_FLIP
    del negative
    ordered += _OFFSET
    keys = ordered.view(np.uint64)
    keys <<= np.uint64(_ROW_BITS)
    keys |= rows.astype(np.uint64)[None, :]
    return keys


def unpack(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distances float32 and gallery rows int64 of keys made by `pack`."""
    ordered = (keys >> np.uint64(_ROW_BITS)).astype(np.int64) - _OFFSET
    bits = np.where(ordered < 0, ordered ^ _SIGN_FLIP, ordered).astype(np.int32)
    return bits.view(np.float32), (keys & _ROW_MASK).astype(np.int64)


def merge_top_k(best: np.ndarray, dist: np.ndarray, start: int, k: int) -> np.ndarray:
    """The k smallest keys per probe of `best` [n, <=k] and a gallery chunk's distances [n, g] (rows start..)."""
    keys = pack(dist, np.arange(start, start + dist.shape[1], dtype=np.int64))
    if keys.shape[1] > k:
        keys.partition(k - 1, axis=1)
        keys = keys[:, :k]
    merged = np.concatenate([best, keys], axis=1)
    merged.sort(axis=1)
    return merged[:, :k]


@dataclass
class _Names:
    """Keys of the gallery rows some probe of the current chunk still holds (at most probes x k of them)."""

    names: dict[int, tuple[str, ...]] = field(default_factory=dict)

    def update(self, best: np.ndarray, chunk: EmbeddingChunk) -> None:
        """Remember the keys of the chunk's rows now in `best`, forget rows no longer there."""
        held = set(unpack(best)[1].ravel().tolist())
        self.names = {row: name for row, name in self.names.items() if row in held}
        for row in held:
            if chunk.start <= row < chunk.start + len(chunk):
                self.names[row] = tuple(chunk.keys[row - chunk.start])


def _check_shapes(probe: EmbeddingChunk, gallery: EmbeddingChunk) -> None:
    if probe.embeddings.shape[1:] != gallery.embeddings.shape[1:]:
        raise ValueError(f"probe embeddings [E, p] = {list(probe.embeddings.shape[1:])} and gallery "
                         f"{list(gallery.embeddings.shape[1:])} differ: embedded by different models?")


def search_chunks(probes: Iterable[EmbeddingChunk], gallery: Callable[[], Iterable[EmbeddingChunk]], top_k: int = 5,
                  metric: str = "euc") -> Iterator[dict[str, Any]]:
    """Rows of COLUMNS, probe by probe (rank 1 = nearest): `gallery()` yields the gallery's chunks afresh for
    every chunk of probes."""
    if top_k < 1:
        raise ValueError(f"--top-k must be >= 1, got {top_k}")
    if metric not in METRICS:
        raise ValueError(f"--metric must be one of {', '.join(METRICS)}, got {metric!r}")
    for probe in probes:
        best = np.empty((len(probe), 0), dtype=np.uint64)
        names = _Names()
        for chunk in gallery():
            _check_shapes(probe, chunk)
            dist = distances(probe.embeddings, chunk.embeddings, metric)
            if np.isnan(dist).any():
                raise ValueError("a distance is NaN")
            best = merge_top_k(best, dist, chunk.start, top_k)
            names.update(best, chunk)
        if best.shape[1] == 0:
            raise ValueError("the gallery holds no sequence")
        values, rows = unpack(best)
        for i in range(len(probe)):
            probe_key = [str(v) for v in probe.keys[i]]
            for rank in range(best.shape[1]):
                yield dict(zip(COLUMNS, [*probe_key, rank + 1, *names.names[int(rows[i, rank])],
                                         float(values[i, rank])]))


def array_chunks(embeddings: np.ndarray, keys: np.ndarray | None = None, rows: int = DEFAULT_CHUNK_ROWS
                 ) -> list[EmbeddingChunk]:
    """In-memory embeddings [n, E, p] (keys [n, 4], default row numbers) as chunks of `rows` rows."""
    if keys is None:
        keys = np.array([[str(i), "", "", ""] for i in range(len(embeddings))], dtype=object).reshape(-1, 4)
    return [EmbeddingChunk(s, keys[s:s + rows], np.asarray(embeddings[s:s + rows], dtype=np.float32))
            for s in range(0, len(embeddings), rows)]


def search(gallery: str, probe: str, top_k: int = 5, metric: str = "euc", probe_rows: int = DEFAULT_CHUNK_ROWS,
           gallery_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[dict[str, Any]]:
    """The `top_k` nearest gallery sequences of every probe sequence of two embeddings data sets (paths or URIs)."""
    return search_chunks(iter_chunks(probe, probe_rows), lambda: iter_chunks(gallery, gallery_rows), top_k, metric)


def output_format(path: str) -> str:
    """`.csv` or `.json` from a file name; ValueError for anything else."""
    ext = posixpath.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise ValueError(f"--out must end in .csv or .json, got {path!r}")
    return ext


@contextmanager
def _text_output(path: str) -> Iterator[TextIO]:
    """A text stream for `path` whose file appears only when complete: written to a local temporary file, then
    renamed into place (local) or copied up in one piece (object stores); removed if writing fails."""
    loc = fs.resolve(path)
    folder = posixpath.dirname(loc.path) if loc.is_local else None
    if folder:
        os.makedirs(folder, exist_ok=True)
    name = ""
    try:
        with tempfile.NamedTemporaryFile("w", encoding="utf-8", newline="", dir=folder, delete=False,
                                         prefix=f".{posixpath.basename(loc.path)}.tmp-") as handle:
            name = handle.name
            yield handle
        if loc.is_local:
            os.replace(name, loc.path)
        else:
            pafs.copy_files(name, loc.path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=loc.fs)
    finally:
        if name and os.path.exists(name):
            os.remove(name)


@dataclass
class SearchSummary:
    """What a search returned: the first rows, the row and probe counts, the output file."""

    first: list[dict[str, Any]]
    rows: int
    probes: int
    output: str | None


def write_results(rows: Iterable[dict[str, Any]], out: str | None, keep: int = 20) -> SearchSummary:
    """Stream rows into `out` (CSV or JSON by extension; None: nowhere), keeping the first `keep` for display."""
    first: list[dict[str, Any]] = []
    count = probes = 0

    def note(row: dict[str, Any]) -> None:
        nonlocal count, probes
        if len(first) < keep:
            first.append(row)
        count += 1
        probes += row["rank"] == 1

    if out is None:
        for row in rows:
            note(row)
        return SearchSummary(first, count, probes, None)
    ext = output_format(out)
    with _text_output(out) as stream:
        if ext == ".csv":
            writer = csv.DictWriter(stream, fieldnames=list(COLUMNS), lineterminator="\n")
            writer.writeheader()
            for row in rows:
                writer.writerow({**row, "distance": repr(row["distance"])})
                note(row)
        else:
            stream.write("[")
            for row in rows:
                stream.write(("\n " if count == 0 else ",\n ") + json.dumps(row))
                note(row)
            stream.write("\n]\n" if count else "]\n")
    return SearchSummary(first, count, probes, fs.resolve(out).uri)


def format_rows(rows: list[dict[str, Any]]) -> str:
    """A fixed-width table of result rows: probe, rank, gallery sequence (id/type/view/seq), distance."""
    probe = ["/".join(str(r[f"probe_{k}"]) for k in KEY_NAMES) for r in rows]
    gallery = ["/".join(str(r[f"gallery_{k}"]) for k in KEY_NAMES) for r in rows]
    pw = max([5, *map(len, probe)])
    gw = max([7, *map(len, gallery)])
    lines = [f"{'probe':<{pw}}  rank  {'gallery':<{gw}}  distance"]
    lines += [f"{p:<{pw}}  {r['rank']:>4}  {g:<{gw}}  {r['distance']:.6f}" for p, g, r in zip(probe, gallery, rows)]
    return "\n".join(lines)
