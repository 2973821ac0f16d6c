"""Connecting to Ray: the cluster in RAY_ADDRESS (as under `ray job submit`), or a local one on 127.0.0.1.

Unless `--verbose` (`ray_gait.console.settings().verbose`), Ray's own output stays off the console:
- the driver's Ray loggers ("ray": token-authentication notice, "Started a local Ray instance"; "ray.data":
  "Progress bars disabled", execution plans, "Data sink ... finished") show errors only (Ray's log files keep
  everything);
- `log_to_driver=False`: what Ray's workers print (Ray Train's controller and workers, "Reporting training result
  ...: TrainingReport(...)" at each report, their C++ errors) stays in the session's log files;
- the driver's own C++ log lines short of FATAL (the core worker's "core_worker.cc: Actor ... has constructor
  arguments in the object store and max_restarts > 0", written straight to fd 2, below Python's logging, whenever
  Ray Data starts an actor pool) are dropped by a filter on fd 2 (`console.drop_native_lines`);
- deprecation and future warnings are not shown.
"""
from __future__ import annotations

import logging
import os
import warnings
from typing import Any, Mapping

import ray
import ray.data
from ray._private import ray_constants

from ray_gait.console import drop_native_lines, settings
from ray_gait.ray_layer.cluster_checks import check_paths_shared, require_resources

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
# A line of Ray's C++ logging below FATAL: "[2026-11-30 09:13:02,246 E 21597 21597] core_worker.cc:2465: ..."
RAY_NATIVE_LOG_LINE = r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [IWE] \d+ \d+\] \S+:\d+: "


def local_init_kwargs(num_cpus: int | None = None, log_to_driver: bool = True) -> dict[str, Any]:
    """The ray.init arguments of a Ray this process starts for itself: a new one, on 127.0.0.1 only."""
    return {
        # A new Ray: never join another one found on this machine (ray_current_cluster).
        "address": "local",
        "num_cpus": num_cpus,
        "log_to_driver": log_to_driver,
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


def quiet_ray_loggers() -> None:
    """Raise the console handlers of the driver's "ray" loggers to ERROR (their file handlers keep every record)."""
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if not isinstance(logger, logging.Logger) or not (name == "ray" or name.startswith("ray.")):
            continue
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                handler.setLevel(max(handler.level, logging.ERROR))


def _quiet_ray_console() -> None:
    """What Ray would print on the driver beside its errors, kept off the console (see the module's docstring)."""
    quiet_ray_loggers()
    for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category)


def ensure_ray(num_cpus: int | None = None, shared: Mapping[str, str | None] | None = None,
               resources: Mapping[str, float] | None = None, what: str = "") -> None:
    """Connect to the cluster in RAY_ADDRESS, or start a local Ray on 127.0.0.1 (once per process); Ray's own
    console output only with --verbose.  Then the cluster checks of a job (`cluster_checks`): the local
    paths in `shared` (flag -> path) must be seen by every node, and some node must offer `resources`
    (one worker's bundle) for `what`."""
    _connect(num_cpus)
    if shared:
        check_paths_shared(shared)
    if resources:
        require_resources(resources, what or "this job")


def _connect(num_cpus: int | None) -> None:
    if ray.is_initialized():
        return
    verbose = settings().verbose
    if not verbose:
        _quiet_ray_console()
    _set_progress_bars()
    address = os.environ.get("RAY_ADDRESS")
    if address:
        log.info("connecting to the Ray cluster at %s", address)
        ray.init(address=address, log_to_driver=verbose)
    else:
        _keep_local_ray_on_loopback()
        ray.init(**local_init_kwargs(num_cpus, log_to_driver=verbose))
    _set_progress_bars()
    if not verbose:
        quiet_ray_loggers()
        drop_native_lines(RAY_NATIVE_LOG_LINE)


def cluster_cpus() -> float:
    """The CPUs the cluster offers (for sizing worker pools)."""
    return float(ray.cluster_resources().get("CPU", 1.0))
