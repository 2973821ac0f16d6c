"""Checks a job makes of the cluster it runs on, before any work: resources some node can offer, and local
paths that every node sees.

On a cluster shaped like cluster.yaml the head takes no work, worker nodes come and go with the autoscaler,
and nodes share nothing but object storage: a resource no node type offers would leave a job waiting for
ever, and a local folder would be written on whichever node ran a task.  Both are refused here in one line.
"""
from __future__ import annotations

import json
import logging
import os
import re
import time
import uuid
from typing import Mapping

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ray_gait.io import fs

log = logging.getLogger(__name__)

# How long a job waits for the autoscaler to add a node with a resource it asks for (a cloud node boots in minutes).
RESOURCE_WAIT_ENV = "RAY_GAIT_RESOURCE_WAIT_S"
RESOURCE_WAIT_S = 900.0
UPLOAD_FOLDER = re.compile(r"/runtime_resources/working_dir_files/")


def _alive_nodes() -> list[dict]:
    return [node for node in ray.nodes() if node.get("Alive")]


def autoscaler_running() -> bool:
    """True when an autoscaler can add nodes to this cluster: a cluster config in the GCS (autoscaler v2,
    KubeRay), or the v1 monitor's status naming node types.  A Ray without an autoscaling config runs the
    monitor too, with a read-only provider whose "node types" are `node_<id>` of the nodes there are."""
    if max_cluster_resources():
        return True
    try:
        from ray.experimental.internal_kv import _internal_kv_get
        status = _internal_kv_get("__autoscaling_status")
        report = json.loads(status).get("autoscaler_report") if status else None
    except (ValueError, RuntimeError, TypeError):
        return False
    if not report:
        return False
    types = set(report.get("active_nodes") or {}) | set(report.get("idle_nodes") or {}) | set(
        report.get("pending_launches") or {})
    readonly = {name for node in ray.nodes() for name in (node["NodeID"], f"node_{node['NodeID']}")}
    return bool(types - readonly)


def max_cluster_resources() -> dict[str, float] | None:
    """The most of each resource the cluster's config allows (autoscaler v2 / KubeRay), None when unknown."""
    try:
        return ray._private.state.state.get_max_resources_from_cluster_config()
    except Exception:  # noqa: BLE001 - an older GCS or no config: unknown
        return None


def _offered(bundle: Mapping[str, float]) -> bool:
    return any(all(node.get("Resources", {}).get(name, 0.0) >= amount for name, amount in bundle.items() if amount > 0)
               for node in _alive_nodes())


def require_resources(bundle: Mapping[str, float], what: str, timeout_s: float | None = None) -> None:
    """Return once some node offers `bundle` (e.g. {"GPU": 1} per worker), asking the autoscaler for one;
    RuntimeError naming `what` when no node type can, or none came up within the wait."""
    bundle = {name: float(amount) for name, amount in bundle.items() if amount and amount > 0}
    if not bundle or _offered(bundle):
        return
    lacking = {name: amount for name, amount in bundle.items() if not _offered({name: amount})} or bundle
    shown = ", ".join(f"{amount:g} {name}" for name, amount in lacking.items())
    limits = max_cluster_resources()
    if limits and any(limits.get(name, 0) < amount for name, amount in bundle.items()):
        raise RuntimeError(f"{what} asks for {shown} per worker, which no node type of this cluster offers "
                           f"(at most {limits})")
    if not autoscaler_running():
        raise RuntimeError(f"{what} asks for {shown} per worker, which no node of this Ray cluster offers, and no "
                           "autoscaler can add one")
    wait = float(os.environ.get(RESOURCE_WAIT_ENV, RESOURCE_WAIT_S)) if timeout_s is None else timeout_s
    from ray.autoscaler.sdk import request_resources
    log.info("waiting up to %.0f s for the autoscaler to add a node with %s (%s)", wait, shown, what)
    request_resources(bundles=[bundle])
    deadline = time.monotonic() + wait
    try:
        while not _offered(bundle):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} asks for {shown} per worker, and no node offering it came up within "
                                   f"{wait:.0f} s: does a node type of the cluster offer it? ({RESOURCE_WAIT_ENV} "
                                   "sets the wait)")
            time.sleep(1.0)
    finally:
        request_resources(bundles=[])


@ray.remote(num_cpus=0)
def _sees(path: str, name: str) -> tuple[str, bool]:
    return ray.util.get_node_ip_address(), os.path.exists(os.path.join(path, name))


def _existing_folder(path: str) -> str | None:
    """The folder a local path is in (itself when a folder), walking up to one that exists; None at the root."""
    folder = path
    while folder and not os.path.isdir(folder):
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent
    return folder


def check_paths_shared(paths: Mapping[str, str | None]) -> None:
    """Refuse local paths (flag or key -> path) that the other nodes of a multi-node cluster do not see.

    The driver writes a marker file in each path's folder; a task on every other alive node looks for it
    (as Ray Train checks its storage).  Also warns of a path inside Ray's upload folder (a relative path
    under `ray job submit`), which Ray deletes with the session, and of local paths on a one-node cluster whose
    autoscaler will add nodes (they cannot be checked yet).
    """
    local = {flag: path for flag, path in paths.items() if path and not fs.is_uri(path)}
    if not local:
        return
    for flag, path in local.items():
        if UPLOAD_FOLDER.search(os.path.abspath(path)):
            log.warning("%s %s is inside the folder Ray unpacked this job into, which Ray deletes with the session "
                        "and every node has its own copy of: give an s3://, gs:// or shared path", flag, path)
    here = ray.get_runtime_context().get_node_id()
    others = [node for node in _alive_nodes() if node["NodeID"] != here]
    if not others:
        if autoscaler_running():
            log.warning("%s: a local path on a cluster whose autoscaler adds nodes, which cannot be checked before "
                        "they come up: every node must mount it, else give s3:// or gs:// URIs",
                        ", ".join(f"{flag} {path}" for flag, path in local.items()))
        return
    name = f".ray_gait-visible-{uuid.uuid4().hex}"
    markers = []
    try:
        for flag, path in local.items():
            folder = _existing_folder(os.path.abspath(path))
            if folder is None:
                continue
            marker = os.path.join(folder, name)
            try:
                with open(marker, "w", encoding="utf-8"):
                    pass
            except OSError as exc:
                raise ValueError(f"{flag} {path}: cannot write in {folder} ({exc})") from exc
            markers.append(marker)
            checks = [_sees.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False))
                      .remote(folder, name) for node in others]
            blind = sorted(ip for ip, seen in ray.get(checks) if not seen)
            if blind:
                raise ValueError(f"{flag} {path} is a folder of this node that node(s) {', '.join(blind)} of the "
                                 f"cluster ({len(others) + 1} nodes) do not see: give an s3:// or gs:// URI, or a "
                                 "folder every node mounts")
    finally:
        for marker in markers:
            try:
                os.remove(marker)
            except OSError:
                pass
