"""`ray-gait embed` without Ray: shards of an index embedded and written as parts of an embeddings data set.

A shard is a contiguous range of index positions (the index is sorted by key, so parts are too).
Each shard is embedded by `SequenceEmbedder.embed_readable` (the path `ray-gait test` uses) and written
as one Parquet part as soon as it is done: what a worker holds is one shard's embeddings.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ray_gait.data.reader import SequenceReader
from ray_gait.evaluation.embed import SequenceEmbedder
from ray_gait.io import fs
from ray_gait.io.embeddings import part_name, write_part

DEFAULT_SHARD_SIZE = 128


def plan_shards(count: int, shard_size: int = DEFAULT_SHARD_SIZE, workers: int = 1) -> list[dict[str, int]]:
    """Contiguous ranges {shard, start, stop} covering `count` positions: at most `shard_size` each, and at least
    two per worker when there are enough sequences, so that every worker gets work."""
    if shard_size < 1 or workers < 1:
        raise ValueError(f"shard size and workers must be >= 1, got {shard_size} and {workers}")
    size = max(1, min(shard_size, math.ceil(count / (2 * workers))))
    return [{"shard": i, "start": start, "stop": min(count, start + size)}
            for i, start in enumerate(range(0, count, size))]


def embed_shard(embedder: SequenceEmbedder, reader: SequenceReader, keys: Sequence[tuple[str, str, str, str]],
                shard: dict[str, int], out: str) -> dict[str, Any]:
    """Embed one shard's readable sequences into `out/part-NNNNNN.parquet`; returns its record: part ("" when
    nothing was readable), rows, dim, parts, and `unreadable` [{sequence, reason}]."""
    positions = list(range(int(shard["start"]), int(shard["stop"])))
    embedded, unreadable = embedder.embed_readable(reader, positions)
    kept = [i for i in positions if i in embedded]
    record: dict[str, Any] = {"shard": int(shard["shard"]), "part": "", "rows": len(kept), "dim": 0, "parts": 0,
                              "unreadable": [{"sequence": "/".join(keys[i]), "reason": unreadable[i]}
                                             for i in positions if i in unreadable]}
    if kept:
        name = part_name(int(shard["shard"]))
        write_part(fs.resolve(out).join(name), [keys[i] for i in kept], [embedded[i] for i in kept])
        record.update(part=name, dim=int(embedded[kept[0]].shape[0]), parts=int(embedded[kept[0]].shape[1]))
    return record
