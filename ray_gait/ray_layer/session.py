"""Connecting to Ray: the cluster in RAY_ADDRESS (as under `ray job submit`), or a local one."""
from __future__ import annotations

import logging
import os

import ray
import ray.data

log = logging.getLogger(__name__)


def ensure_ray(num_cpus: int | None = None) -> None:
    """Connect to the cluster in RAY_ADDRESS, or start a local Ray (once per process)."""
    if ray.is_initialized():
        return
    ray.data.DataContext.get_current().enable_progress_bars = os.environ.get("RAY_GAIT_PROGRESS_BARS") == "1"
    address = os.environ.get("RAY_ADDRESS")
    if address:
        log.info("connecting to the Ray cluster at %s", address)
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(num_cpus=num_cpus, log_to_driver=True)
    ray.data.DataContext.get_current().enable_progress_bars = os.environ.get("RAY_GAIT_PROGRESS_BARS") == "1"


def cluster_cpus() -> float:
    """The CPUs the cluster offers (for sizing worker pools)."""
    return float(ray.cluster_resources().get("CPU", 1.0))
