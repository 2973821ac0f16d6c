"""Connecting to Ray: the cluster in RAY_ADDRESS (as under `ray job submit`), or a local one on 127.0.0.1."""
from __future__ import annotations

import logging
import os
from typing import Any

import ray
import ray.data
from ray._private import ray_constants

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


def local_init_kwargs(num_cpus: int | None = None) -> dict[str, Any]:
    """The ray.init arguments of a Ray this process starts for itself: a new one, on 127.0.0.1 only."""
    return {
        # A new Ray: never join another one found on this machine (ray_current_cluster).
        "address": "local",
        "num_cpus": num_cpus,
        "log_to_driver": True,
        # At this node address Ray's servers (GCS, raylet, core workers, agents) listen on loopback only.
        "_node_ip_address": LOOPBACK,
        "dashboard_host": LOOPBACK,
    }


def loopback_environment() -> dict[str, str]:
    """Environment under which Ray 2.60 keeps 127.0.0.1 rather than replace it with the interface address."""
    return {ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR: "0"}


def _keep_local_ray_on_loopback() -> None:
    """Apply loopback_environment() here and to the processes Ray starts.

    Ray reads the variable once, at import (ray_constants.ENABLE_RAY_CLUSTER), so the running module
    is set too; without it ray.init turns _node_ip_address="127.0.0.1" into the interface address.
    """
    os.environ.update(loopback_environment())
    ray_constants.ENABLE_RAY_CLUSTER = False


def _set_progress_bars() -> None:
    """Ray Data progress bars only when RAY_GAIT_PROGRESS_BARS=1."""
    ray.data.DataContext.get_current().enable_progress_bars = os.environ.get("RAY_GAIT_PROGRESS_BARS") == "1"


def ensure_ray(num_cpus: int | None = None) -> None:
    """Connect to the cluster in RAY_ADDRESS, or start a local Ray on 127.0.0.1 (once per process)."""
    if ray.is_initialized():
        return
    _set_progress_bars()
    address = os.environ.get("RAY_ADDRESS")
    if address:
        log.info("connecting to the Ray cluster at %s", address)
        ray.init(address=address, log_to_driver=True)
    else:
        _keep_local_ray_on_loopback()
        ray.init(**local_init_kwargs(num_cpus))
    _set_progress_bars()


def cluster_cpus() -> float:
    """The CPUs the cluster offers (for sizing worker pools)."""
    return float(ray.cluster_resources().get("CPU", 1.0))
