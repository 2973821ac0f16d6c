"""One Ray Data map over planned shards, shared by the synth, ingest and heatmap jobs.

Each shard is one row (a small dict); `fn(shard, settings)` does the whole shard's work on a
worker, writes its output itself, and returns a small record.  A big job runs its shards on a pool
of long-lived actors (one CPU each) that hold a second shard in their queue, so a worker starts its
next shard the moment the last one ends instead of waiting for the driver to see the result (a task
pool leaves every worker idle for ~0.15 s between shards, and starts the second worker late:
measured in benchmarks/README.md).  A small job (at most SMALL_JOB_SHARDS_PER_CPU shards per CPU of
the cluster, no pool size asked for, no GPU) runs them as Ray Data tasks instead: those run in the
driver's pooled worker processes, which later steps of the same driver reuse, while every actor is
a new process that imports Ray Data and the project first (~3 s of CPU each; a small heatmap job
takes 2.5-3.8 s on actors and 1.0-1.3 s on tasks: benchmarks/small_jobs.py).
"""
from __future__ import annotations

from typing import Any, Callable, Iterator

import ray.data

from ray_gait.ray_layer.session import cluster_cpus

QUEUED_SHARDS = 2
SMALL_JOB_SHARDS_PER_CPU = 4


class _ShardWorker:
    """A Ray Data actor that runs shard functions (stateless: everything comes with each call)."""

    def __call__(self, shard: dict[str, Any], fn: Callable[[dict[str, Any], Any], dict[str, Any]],
                 settings: Any) -> dict[str, Any]:
        """Run fn on one shard."""
        return fn(shard, settings)


def _check_workers(workers: int | None) -> None:
    """ValueError for a pool size below 1 (None: the default)."""
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")


def _run_shard(shard: dict[str, Any], fn: Callable[[dict[str, Any], Any], dict[str, Any]],
               settings: Any) -> dict[str, Any]:
    """Run fn on one shard, as a Ray Data task."""
    return fn(shard, settings)


def uses_actors(workers: int | None, shards: int, gpus_per_worker: float = 0.0, cpus: float | None = None) -> bool:
    """Whether a map of `shards` runs on an actor pool: when a pool size is asked for, shards render on a GPU,
    or the job is big (more than SMALL_JOB_SHARDS_PER_CPU shards per CPU of the cluster); else on tasks."""
    _check_workers(workers)
    if workers or gpus_per_worker:
        return True
    return shards > SMALL_JOB_SHARDS_PER_CPU * max(1, int(cluster_cpus() if cpus is None else cpus))


def pool_strategy(workers: int | None, shards: int, gpus_per_worker: float = 0.0) -> ray.data.ActorPoolStrategy:
    """`workers` actors (never more than shards); else, for GPU actors, as many as the cluster's GPUs hold; else a
    pool that grows with the cluster."""
    _check_workers(workers)
    if workers:
        return ray.data.ActorPoolStrategy(size=min(workers, shards), max_tasks_in_flight_per_actor=QUEUED_SHARDS)
    if gpus_per_worker:
        fits = int(float(ray.cluster_resources().get("GPU", 0.0)) // gpus_per_worker)
        return ray.data.ActorPoolStrategy(size=max(1, min(shards, fits)), max_tasks_in_flight_per_actor=QUEUED_SHARDS)
    start = max(1, min(shards, int(cluster_cpus())))
    return ray.data.ActorPoolStrategy(min_size=1, max_size=shards, initial_size=start,
                                      max_tasks_in_flight_per_actor=QUEUED_SHARDS)


def map_shards(shards: list[dict[str, Any]], fn: Callable[[dict[str, Any], Any], dict[str, Any]], settings: Any,
               workers: int | None = None, gpus_per_worker: float = 0.0) -> Iterator[dict[str, Any]]:
    """Run `fn(shard, settings)` for every shard on Ray Data actors (or tasks, for a small job: `uses_actors`);
    yield each record as it finishes.

    Each actor or task holds one CPU, and an actor `gpus_per_worker` GPUs when the shards render on a GPU.
    """
    if not shards:
        return
    ds = ray.data.from_items(shards, override_num_blocks=len(shards))
    kwargs = {"fn": fn, "settings": settings}
    if uses_actors(workers, len(shards), gpus_per_worker):
        ds = ds.map(_ShardWorker, fn_kwargs=kwargs, num_cpus=1, num_gpus=gpus_per_worker or None,
                    compute=pool_strategy(workers, len(shards), gpus_per_worker))
    else:
        ds = ds.map(_run_shard, fn_kwargs=kwargs, num_cpus=1)
    yield from ds.iter_rows()
