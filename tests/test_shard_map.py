"""The shared shard map: every shard runs once on Ray Data actors, records come back, bad sizes refused."""
from __future__ import annotations

import os
import time
from typing import Any

import pytest
import ray.data

from ray_gait.ray_layer.shard_map import QUEUED_SHARDS, map_shards, pool_strategy


def _square(shard: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    time.sleep(settings["sleep"])
    return {"i": shard["i"], "value": shard["i"] ** 2 + settings["offset"], "pid": os.getpid()}


def test_every_shard_once_with_its_settings(ray_session):
    records = list(map_shards([{"i": i} for i in range(9)], _square, {"offset": 7, "sleep": 0.05}, workers=2))
    assert sorted(r["i"] for r in records) == list(range(9))
    assert all(r["value"] == r["i"] ** 2 + 7 for r in records)
    assert len({r["pid"] for r in records}) <= 2


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
