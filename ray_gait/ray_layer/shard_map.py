"""One Ray Data map over planned shards, shared by the synth, ingest and heatmap jobs.

Each shard is one row (a small dict); `fn(shard, settings)` does the whole shard's work on a
worker, writes its output itself, and returns a small record.  The shards run on a pool of
long-lived actors (one CPU each) that hold a second shard in their queue, so a worker starts its
next shard the moment the last one ends instead of waiting for the driver to see the result
(a task pool leaves every worker idle for ~0.15 s between shards, and starts the second worker
late: measured in benchmarks/README.md).
"""
from __future__ import annotations

from typing import Any, Callable, Iterator

import ray.data

from ray_gait.ray_layer.session import cluster_cpus

QUEUED_SHARDS = 2


class _ShardWorker:
    """A Ray Data actor that runs shard functions (stateless: everything comes with each call)."""

    def __call__(self, shard: dict[str, Any], fn: Callable[[dict[str, Any], Any], dict[str, Any]],
                 settings: Any) -> dict[str, Any]:
        """Run fn on one shard."""
        return fn(shard, settings)


def pool_strategy(workers: int | None, shards: int) -> ray.data.ActorPoolStrategy:
    """`workers` actors (never more than shards), or a pool that grows with the cluster when None."""
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if workers:
        return ray.data.ActorPoolStrategy(size=min(workers, shards), max_tasks_in_flight_per_actor=QUEUED_SHARDS)
    start = max(1, min(shards, int(cluster_cpus())))
    return ray.data.ActorPoolStrategy(min_size=1, max_size=shards, initial_size=start,
                                      max_tasks_in_flight_per_actor=QUEUED_SHARDS)


def map_shards(shards: list[dict[str, Any]], fn: Callable[[dict[str, Any], Any], dict[str, Any]], settings: Any,
               workers: int | None = None, gpus_per_worker: float = 0.0) -> Iterator[dict[str, Any]]:
    """Run `fn(shard, settings)` for every shard on Ray Data actors; yield each record as it finishes.

    Each actor holds one CPU, and `gpus_per_worker` GPUs when the shards render on a GPU.
    """
    if not shards:
        return
    ds = ray.data.from_items(shards, override_num_blocks=len(shards))
    ds = ds.map(_ShardWorker, fn_kwargs={"fn": fn, "settings": settings}, num_cpus=1,
                num_gpus=gpus_per_worker or None, compute=pool_strategy(workers, len(shards)))
    yield from ds.iter_rows()
