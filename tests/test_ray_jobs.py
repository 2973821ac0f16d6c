"""Ray Jobs for real: `ray start --head` on 127.0.0.1, `ray job submit` of jobs/pipeline.py, output checked."""
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
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_dashboard(url: str, token: str, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    request = urllib.request.Request(f"{url}/api/version", headers={"Authorization": f"Bearer {token}"})
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"ray start exited with {process.returncode}")
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"the dashboard at {url} did not answer within {timeout} s")


@pytest.fixture
def head_node():
    """A one-node cluster from `ray start --head --block` (its own temp dir, token auth, loopback only)."""
    tmp = tempfile.mkdtemp(prefix="rgj", dir="/tmp")
    port, dashboard = _free_port(), _free_port()
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
               RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16), RAY_TMPDIR=tmp,
               RAY_DATA_DISABLE_PROGRESS_BARS="1", RAY_TRAIN_HEALTH_CHECK_INTERVAL_S="0.5")
    env.pop("RAY_ADDRESS", None)
    log = open(os.path.join(tmp, "ray_start.log"), "wb")
    process = subprocess.Popen([str(BIN / "ray"), "start", "--head", "--block", "--num-cpus=2", f"--port={port}",
                                "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", f"--temp-dir={tmp}",
                                "--include-dashboard=true", "--disable-usage-stats",
                                # the tests' own Ray holds the default agent ports: take free ones
                                *(f"--{flag}={_free_port()}" for flag in (
                                    "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
                                    "runtime-env-agent-port", "ray-client-server-port"))],
                               env=env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{dashboard}"
    try:
        _wait_for_dashboard(url, env["RAY_AUTH_TOKEN"], process)
        yield url, env, Path(tmp)
    finally:
        # `ray stop` would stop every Ray on the machine (the tests' own too): stop this one by its group, at once
        # (an orderly stop takes 30-90 s with the detached actors Ray Data leaves; nothing here needs one)
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(10)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


def test_submitted_pipeline_job_runs_every_step(head_node, tmp_path):
    url, env, tmp = head_node
    out = tmp_path / "pipeline"
    command = [str(BIN / "ray"), "job", "submit", "--address", url, "--working-dir", str(ROOT), "--",
               "python", "jobs/pipeline.py", "--out", str(out), "--ids", "6", "--train-ids", "4", "--views", "0,90",
               "--frames", "12:16", "--iters", "2", "--set", "model_cfg.Backbone.C=0.5",
               "--set", "trainer_cfg.sampler.batch_size=[2,2]", "--set", "trainer_cfg.sampler.frames_num_fixed=8",
               "--set", "trainer_cfg.save_iter=2", "--set", "trainer_cfg.log_iter=1",
               "--set", "trainer_cfg.warmup_iter=0", "--set", "ray_cfg.num_workers=1",
               "--set", "evaluator_cfg.enable_float16=false"]
    for _ in range(30):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        if "No available agent to submit job" not in done.stderr + done.stdout:
            break
        time.sleep(2)  # the dashboard answers before its node agent has registered
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "succeeded" in done.stdout + done.stderr
    # the job ran on this cluster: its driver's Ray was the head node's, not a local one
    status = subprocess.run([str(BIN / "ray"), "job", "list", "--address", url], env=env, capture_output=True,
                            text=True, timeout=60)
    assert "SUCCEEDED" in status.stdout, status.stdout[-2000:] + status.stderr[-2000:]
    assert "[pipeline 5/5" in done.stdout + done.stderr
    metrics = json.loads((out / "runs" / "SkeletonGaitPP_synth" / "test" / "metrics.json").read_text())
    assert metrics["protocol"] == "evaluate_protocol" and metrics["sequences"] == 2 * 2 * 8
    assert set(metrics["results"]) == {"NM", "BG", "CL"}
    assert all(0.0 <= v["rank1"] <= 100.0 for v in metrics["results"].values())
    assert (out / "maps" / "synth_sigma_8.0_" / "_manifest.json").exists()
    assert (out / "paired" / "_manifest.json").exists()
    assert list((out / "runs" / "SkeletonGaitPP_synth").glob("checkpoint_*/state.pt"))
