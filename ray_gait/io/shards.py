"""Resumable sharded output: the part of every sharded job (ingest, heatmaps) that is not its own work.

A job lists its inputs, plans them into shards named by index and content, and maps its shard function over
the shards not yet finished.  A shard is finished when its record `_shards/<name>.json` exists; the shard
function writes its Parquet part and files first and its record last (`finish_shard`), so a killed run leaves
no finished-looking half shard, and a rerun redoes only what is missing.  Plain Python: the Ray layer runs it.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import pickle
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, TypeVar

import pyarrow as pa

from ray_gait.io import fs
from ray_gait.io.dataset import ERRORS, read_json, write_json_atomic, write_parquet_atomic

log = logging.getLogger(__name__)

SHARD_DIR = "_shards"
PKL_DIR = "pkl"


@dataclass
class ShardRecord:
    """What a finished shard wrote; stored as `_shards/<name>.json`."""

    name: str
    sources: list[str]
    rows: int = 0
    frames: int = 0
    seconds: float = 0.0
    parquet: str | None = None
    errors: list[dict[str, str]] = field(default_factory=list)


Record = TypeVar("Record", bound=ShardRecord)


def plan_shards(sources: Sequence[str], shard_size: int) -> list[dict[str, Any]]:
    """Split sorted sources into shards named by index and content (`part-00003-<hash>`)."""
    if shard_size < 1:
        raise ValueError(f"shard size must be >= 1, got {shard_size}")
    shards = []
    for index, first in enumerate(range(0, len(sources), shard_size)):
        chunk = list(sources[first:first + shard_size])
        digest = hashlib.sha1("\n".join(chunk).encode("utf-8")).hexdigest()[:10]
        shards.append({"name": f"part-{index:05d}-{digest}", "sources": chunk})
    return shards


def shard_record_location(out_root: str, name: str) -> fs.Location:
    """Where the record of a shard lives."""
    return fs.resolve(out_root).join(SHARD_DIR, f"{name}.json")


def read_shard_record(out_root: str, name: str, kind: type[Record]) -> Record | None:
    """The record (of class `kind`) of a finished shard, or None (keys of other record kinds are left out: an
    ingest record written when records carried the renderer fields is still a record)."""
    loc = shard_record_location(out_root, name)
    if not fs.exists(loc):
        return None
    known = {f.name for f in fields(kind)}
    return kind(**{key: value for key, value in read_json(loc).items() if key in known})


def prepare_output(out: fs.Location, check: Callable[[fs.Location], None]) -> None:
    """Make the output folder, `check` that what it holds was written with the same settings, and delete the
    temporary files an interrupted run left."""
    fs.makedirs(out)
    check(out)
    removed = fs.remove_temporaries(out)
    if removed:
        log.info("removed %d temporary file(s) left by an interrupted run", removed)


def remove_stale_shards(out: fs.Location, planned: set[str]) -> None:
    """Delete parts and records of shards that are not in the current plan (the inputs changed)."""
    for rel in fs.list_files(out, depth=1, pattern="part-*.parquet"):
        if rel[:-len(".parquet")] not in planned:
            out.fs.delete_file(out.join(rel).path)
    shard_dir = out.join(SHARD_DIR)
    if fs.exists(shard_dir):
        for rel in fs.list_files(shard_dir, depth=1, pattern="part-*.json"):
            if rel[:-len(".json")] not in planned:
                out.fs.delete_file(shard_dir.join(rel).path)


def write_pickle(target: fs.Location, value: Any) -> None:
    """`value` (an array of OpenGait's pkl tree) as a protocol-4 pickle, written atomically."""
    buffer = io.BytesIO()
    pickle.dump(value, buffer, protocol=4)
    fs.write_bytes_atomic(target, buffer.getvalue())


def finish_shard(out_root: str, record: ShardRecord, rows: list[dict[str, Any]], schema: pa.Schema,
                 write_parquet: bool, started: float) -> dict[str, Any]:
    """Write the shard's Parquet part (when asked and it has rows), then its record, last; the record as a dict."""
    record.rows = len(rows)
    if write_parquet and rows:
        record.parquet = f"{record.name}.parquet"
        write_parquet_atomic(fs.resolve(out_root).join(record.parquet), rows, schema)
    record.seconds = time.perf_counter() - started
    written = asdict(record)
    write_json_atomic(shard_record_location(out_root, record.name), written)
    return written


def write_errors(out: fs.Location, errors: list[dict[str, str]]) -> fs.Location:
    """`errors.jsonl`: one line per rejected input (`source`, `reason`), in the given order."""
    loc = out.join(ERRORS)
    fs.write_bytes_atomic(loc, "".join(json.dumps(err, sort_keys=True) + "\n" for err in errors).encode("utf-8"))
    return loc
