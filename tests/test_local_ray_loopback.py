"""STARTS RAY. A Ray that ensure_ray starts for itself (no RAY_ADDRESS) is reachable on 127.0.0.1 only.

Run it on its own, with no other Ray starting on the machine at the same time:

    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 python -m pytest -q -p no:cacheprovider tests/test_local_ray_loopback.py

It starts one Ray (1 CPU, about 10 s) in a subprocess of its own: its own RAY_TMPDIR and token, no
RAY_ADDRESS and no RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER (the test suite sets that one for every test; here it is
removed, so ensure_ray has to keep Ray on loopback by itself).  The subprocess runs this file as a script,
calls ensure_ray, runs one task, and prints the node addresses Ray reports, the GCS address and every TCP
socket listening in its process tree (Linux /proc).
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


def _decode(hex_address: str) -> tuple[str, int]:
    """An address of /proc/net/tcp{,6} ("0100007F:1F90") as (ip, port)."""
    ip, port = hex_address.split(":")
    raw = bytes.fromhex(ip)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1]), int(port, 16)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words), int(port, 16)


def _listening_sockets() -> dict[str, tuple[str, int]]:
    """Socket inode -> (ip, port) of every listening TCP socket on the machine."""
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A":
                found[fields[9]] = _decode(fields[1])
    return found


def _process_tree(root: int) -> list[int]:
    """root and every live process below it."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = Path(f"/proc/{name}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat[stat.rfind(")") + 2:].split()[1]), []).append(int(name))
    found, todo = [root], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def listeners(root: int) -> list[dict]:
    """The listening TCP sockets of root's process tree: pid, command, ip, port."""
    sockets = _listening_sockets()
    found = []
    for pid in _process_tree(root):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            inode = link[len("socket:["):-1] if link.startswith("socket:[") else None
            if inode in sockets:
                ip, port = sockets[inode]
                found.append({"pid": pid, "command": command[:100], "ip": ip, "port": port})
    return found


def _probe() -> None:
    """In the subprocess: start Ray through ensure_ray and print what it listens on, as one JSON line."""
    import ray

    from ray_gait.ray_layer.session import ensure_ray
    ensure_ray(num_cpus=1)
    assert ray.get(ray.remote(lambda: 1).remote()) == 1
    time.sleep(3)   # the dashboard agent and runtime-env agent finish starting
    report = {"nodes": [node["NodeManagerAddress"] for node in ray.nodes()],
              "gcs_address": ray.get_runtime_context().gcs_address,
              "listeners": listeners(os.getpid())}
    ray.shutdown()
    print(json.dumps(report), flush=True)


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads listening sockets from Linux /proc")
def test_ray_started_by_ensure_ray_listens_on_loopback_only():
    tmp = tempfile.mkdtemp(prefix="rgl", dir="/tmp")
    env = dict(os.environ, RAY_TMPDIR=tmp, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32),
               RAY_DATA_DISABLE_PROGRESS_BARS="1")
    for name in ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_AUTH_TOKEN_PATH"):
        env.pop(name, None)
    out_path, err_path = Path(tmp) / "probe.out", Path(tmp) / "probe.err"
    try:
        with open(out_path, "wb") as out_file, open(err_path, "wb") as err_file:
            process = subprocess.Popen([sys.executable, __file__], env=env, cwd=tmp, start_new_session=True,
                                       stdout=out_file, stderr=err_file)
            try:
                process.wait(timeout=240)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        out, err = out_path.read_text(errors="replace"), err_path.read_text(errors="replace")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    assert process.returncode == 0, err[-4000:]
    report = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
    assert report["nodes"] == ["127.0.0.1"]
    assert report["gcs_address"].startswith("127.0.0.1:")
    assert report["listeners"], "no listening socket found in Ray's process tree"
    exposed = [entry for entry in report["listeners"] if entry["ip"] not in LOOPBACK]
    assert exposed == [], json.dumps(exposed, indent=1)


if __name__ == "__main__":
    _probe()
