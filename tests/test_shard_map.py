"""The shared shard map: every shard runs once on Ray Data actors (or tasks, for a small job), records come back,
bad sizes refused."""
from __future__ import annotations

import os
import time
from typing import Any

import pytest
import ray.data

from ray_gait.ray_layer.shard_map import QUEUED_SHARDS, SMALL_JOB_SHARDS_PER_CPU, map_shards, pool_strategy, uses_actors


def _square(shard: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    time.sleep(settings["sleep"])
    with open("/proc/self/cmdline", "rb") as handle:       # Ray titles an actor's process after its class
        title = handle.read().split(b"\0")[0].decode(errors="replace")
    return {"i": shard["i"], "value": shard["i"] ** 2 + settings["offset"], "pid": os.getpid(), "title": title}


def test_every_shard_once_with_its_settings(ray_session):
    records = list(map_shards([{"i": i} for i in range(9)], _square, {"offset": 7, "sleep": 0.05}, workers=2))
    assert sorted(r["i"] for r in records) == list(range(9))
    assert all(r["value"] == r["i"] ** 2 + 7 for r in records)
    assert len({r["pid"] for r in records}) <= 2
    assert all("_ShardWorker" in r["title"] for r in records), "a pool size asked for: actors"


def test_a_small_job_runs_on_tasks_in_pooled_workers(ray_session):
    """Without a pool size, a job of at most SMALL_JOB_SHARDS_PER_CPU shards per CPU runs as Ray Data tasks (no
    actor process to start); a second small map runs in the worker processes the first one used."""
    shards = [{"i": i} for i in range(5)]
    first = list(map_shards(shards, _square, {"offset": 1, "sleep": 0.0}))
    assert sorted(r["value"] for r in first) == [i ** 2 + 1 for i in range(5)]
    assert not any("_ShardWorker" in r["title"] for r in first), [r["title"] for r in first]
    second = list(map_shards(shards, _square, {"offset": 2, "sleep": 0.0}))
    assert sorted(r["value"] for r in second) == [i ** 2 + 2 for i in range(5)]
    assert {r["pid"] for r in second} & {r["pid"] for r in first}, "the pooled workers are reused"


def test_actors_or_tasks():
    limit = SMALL_JOB_SHARDS_PER_CPU * 2
    assert not uses_actors(None, limit, cpus=2) and uses_actors(None, limit + 1, cpus=2)
    assert uses_actors(1, 1, cpus=2), "a pool size asked for"
    assert uses_actors(None, 1, gpus_per_worker=0.5, cpus=2), "GPU rendering keeps its CUDA context in an actor"
    with pytest.raises(ValueError, match="workers must be >= 1"):
        uses_actors(0, 3, cpus=2)


def test_more_workers_than_cpus_still_finishes(ray_session):
    records = list(map_shards([{"i": i} for i in range(6)], _square, {"offset": 0, "sleep": 0.0}, workers=5))
    assert sorted(r["i"] for r in records) == list(range(6))


def test_no_shards_yields_nothing(ray_session):
    assert list(map_shards([], _square, {"offset": 0, "sleep": 0.0}, workers=1)) == []


def test_pool_strategy_sizes():
    fixed = pool_strategy(4, shards=3)
    assert isinstance(fixed, ray.data.ActorPoolStrategy)
    assert fixed.min_size == fixed.max_size == 3
    assert fixed.max_tasks_in_flight_per_actor == QUEUED_SHARDS
    with pytest.raises(ValueError, match="workers must be >= 1"):
        pool_strategy(0, shards=3)


def test_a_failing_shard_fails_the_map(ray_session):
    def boom(shard: dict[str, Any], settings: None) -> dict[str, Any]:
        raise RuntimeError(f"shard {shard['i']} broke")
    with pytest.raises(Exception, match="shard 0 broke"):
        list(map_shards([{"i": 0}], boom, None, workers=1))
