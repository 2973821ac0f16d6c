"""Progress counted by Ray tasks, shown on the driver: for stages whose results never stream to the driver.

A stage whose driver loop sees each finished record ticks its `ray_gait.console` stage itself; one that
ends in a single blocking call (`materialize()`, `write_parquet`) passes a counter to its tasks instead:

    with remote_counter(progress) as counter:
        ds.flat_map(fn, fn_kwargs={"counter": counter}).materialize()     # fn: counter.add.remote(n)
"""
from __future__ import annotations

import contextlib
import threading
from typing import Iterator

import ray
from ray.actor import ActorHandle

from ray_gait.console import Stage

POLL_S = 0.5


@ray.remote(num_cpus=0)
class _Counter:
    """Units of work done, as tasks report them."""

    def __init__(self) -> None:
        self.count = 0

    def add(self, n: int) -> None:
        """Count `n` more units."""
        self.count += n

    def value(self) -> int:
        """Units counted so far."""
        return self.count


def _follow(counter: ActorHandle, progress: Stage, finished: threading.Event) -> None:
    """Show the counter in `progress` every POLL_S seconds until `finished`, then once more."""
    while True:
        stop = finished.wait(POLL_S)
        count = int(ray.get(counter.value.remote()))
        if progress.total is not None:
            count = min(count, progress.total)
        if count > progress.done:
            progress.advance_to(count)
        if stop:
            return


@contextlib.contextmanager
def remote_counter(progress: Stage) -> Iterator[ActorHandle]:
    """A counter actor for Ray tasks to tick (`counter.add.remote(n)`), shown in `progress` while the block runs."""
    counter = _Counter.remote()
    finished = threading.Event()
    thread = threading.Thread(target=_follow, args=(counter, progress, finished), name="ray_gait-progress",
                              daemon=True)
    thread.start()
    try:
        yield counter
    finally:
        finished.set()
        thread.join(timeout=10)
        ray.kill(counter)
