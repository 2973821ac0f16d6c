"""The resumable sharded job on Ray, which the ingest and heatmap jobs fill in with their plan and shard function.

Given the planned shards: drop the parts and records of shards no longer planned, load the records of those an
earlier run finished, map the shard function over the rest on Ray Data (one progress stage), and refuse to go
on when a shard did not finish.  The job then writes its errors and manifest from the records.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic

from ray_gait.console import stage, warn_rejected
from ray_gait.io import fs
from ray_gait.io.shards import Record, remove_stale_shards, write_errors
from ray_gait.ray_layer.session import ensure_ray
from ray_gait.ray_layer.shard_map import map_shards

log = logging.getLogger(__name__)


@dataclass
class ShardedRun(Generic[Record]):
    """The records of every planned shard (plan order), how many an earlier run had finished, and the sum of
    the shard function's `counted` value over the shards run now."""

    records: list[Record]
    skipped: int
    produced: int


@dataclass(frozen=True)
class RayWork:
    """Where a job's shards run: the paths every node must see, what one task needs, and the job's name for
    the messages (ensure_ray); `workers` concurrent tasks, each with `gpus` GPUs."""

    shared: Mapping[str, str]
    resources: Mapping[str, float]
    what: str
    workers: int | None = None
    gpus: float = 0.0


def run_shards(name: str, out: fs.Location, shards: list[dict[str, Any]],
               read_record: Callable[[str, str], Record | None], shard_fn: Callable[[dict[str, Any], Any], dict],
               settings: Any, work: RayWork, counted: str = "rows", shown: str | None = None,
               describe: str = "") -> ShardedRun[Record]:
    """Run the shards of `out` that no earlier run finished; RuntimeError when one did not finish.

    The progress stage `name` counts the shards' sources; `shown` names the running sum of `counted` on it.
    """
    remove_stale_shards(out, {s["name"] for s in shards})
    records = {s["name"]: read_record(out.uri, s["name"]) for s in shards}
    todo = [s for s in shards if records[s["name"]] is None]
    log.info("%s in %d shards; %d shard(s) already done, %d to run -> %s", describe or f"{name}: sources",
             len(shards), len(shards) - len(todo), len(todo), out.uri)
    produced = 0
    if todo:
        ensure_ray(shared=dict(work.shared), resources=dict(work.resources), what=work.what)
        sizes = {shard["name"]: len(shard["sources"]) for shard in todo}
        with stage(name, total=sum(sizes.values()), unit="seq") as progress:
            for row in map_shards(todo, shard_fn, settings, work.workers, work.gpus):
                records[row["name"]] = read_record(out.uri, row["name"])
                produced += int(row[counted])
                progress.update(sizes[row["name"]], **({shown: produced} if shown else {}))
    missing = [shard for shard, rec in records.items() if rec is None]
    if missing:
        raise RuntimeError(f"{len(missing)} shard(s) did not finish, e.g. {missing[0]}; run the command again")
    return ShardedRun([records[s["name"]] for s in shards], len(shards) - len(todo), produced)


def report_errors(out: fs.Location, errors: list[dict[str, str]]) -> None:
    """Write `errors.jsonl` and warn once of the rejected inputs."""
    warn_rejected(errors, write_errors(out, errors).uri)
