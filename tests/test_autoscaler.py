"""Autoscaling for real: Ray's own autoscaler with the fake multi-node provider that Ray's tests use.

`RAY_FAKE_CLUSTER=1 ray start --head --autoscaling-config=...` runs the (v1) autoscaler in the head's monitor
process; its `fake_multinode` provider "launches" a worker node by starting one more raylet (and its agents)
on this machine, which joins the head's GCS.  The head has 1 CPU and each worker node type 2, so:

* `ray-gait heatmap --workers 3` (three 1-CPU Ray Data actors) and
* `ray-gait train` with `ray_cfg.num_workers=2` (two 1-CPU Train workers)

both need CPUs the head does not have: each must make the autoscaler add worker node(s), run part of its work
there (Ray Data actor tasks, Train workers: read from the state API, by node id) and complete; once idle, the
worker nodes are removed again (`idle_timeout_minutes`), so the alive node count returns to 1 after each job.

The cluster is this test's alone: its own temp dir, free ports (the provider's `gcs_address` points the fake
nodes at the head's port, instead of the default 6379), token authentication, loopback only.  It is stopped
by its own processes (never `ray stop`, which stops every Ray on the machine), and whatever of it remains,
found by its session id or by a mark in the environment (the fake nodes' raylets, started by the monitor), is
killed.  `ray.cluster_utils.AutoscalingCluster` is not used: its start runs `ray stop --force`.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest
from ports import free_port

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CONFIG = ROOT / "configs" / "skeletongait" / "skeletongait_synth.yaml"

# Under RAY_FAKE_CLUSTER=1 `ray start --head` gives the head this node id (RAY_OVERRIDE_NODE_ID_FOR_TESTING), and
# the fake provider numbers its worker nodes fff...00001, fff...00002, ...
# (ray.autoscaler._private.fake_multi_node.node_provider.FAKE_HEAD_NODE_ID).
HEAD_NODE_ID = "f" * 51 + "00000"
HEAD_CPUS = 1
WORKER_CPUS = 2
MAX_WORKER_NODES = 2
IDLE_TIMEOUT_MINUTES = 0.05         # 3 s: scale-down is seen within seconds of a job's end
MARK = "RAY_GAIT_AUTOSCALER_TEST"    # in the environment of every process of this test's cluster


def autoscaling_config(gcs_address: str, head_cpus: int = HEAD_CPUS) -> dict:
    """The whole cluster config the monitor reads (it applies no defaults: the packaged example.yaml that
    `prepare_config` would merge for fake_multinode is not in the wheel, so every key is written here)."""
    return {
        "cluster_name": "ray-gait-fake",
        "max_workers": MAX_WORKER_NODES,
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": IDLE_TIMEOUT_MINUTES,
        "provider": {
            "type": "fake_multinode",
            # where the fake nodes join (the provider's default is <node ip>:6379)
            "gcs_address": gcs_address,
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
        },
        "head_node_type": "ray.head.default",
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": head_cpus}, "node_config": {}, "max_workers": 0},
            "ray.worker.cpu": {"resources": {"CPU": WORKER_CPUS, "object_store_memory": 150 * 1024 ** 2},
                               "node_config": {}, "min_workers": 0, "max_workers": MAX_WORKER_NODES},
        },
        "auth": {}, "docker": {}, "file_mounts": {}, "cluster_synced_files": [],
        "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [],
        "initialization_commands": [], "setup_commands": [], "head_setup_commands": [], "worker_setup_commands": [],
        "head_start_ray_commands": [], "worker_start_ray_commands": [],
    }


class StateApi:
    """Ray's state API over the head's dashboard (HTTP, token auth): nothing in this process joins the cluster."""

    def __init__(self, url: str, token: str):
        self.url, self.token = url, token

    def get(self, path: str, **query) -> dict:
        request = urllib.request.Request(f"{self.url}{path}?{urllib.parse.urlencode(query, doseq=True)}",
                                         headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(request, timeout=20) as response:
            return json.loads(response.read())

    def rows(self, kind: str, **query) -> list[dict]:
        """`ray list <kind> --detail` as a list of dicts."""
        body = self.get(f"/api/v0/{kind}", limit=10000, detail=1, timeout=15, **query)
        if not body.get("result", False):
            raise RuntimeError(f"state API {kind}: {body.get('msg')}")
        return body["data"]["result"]["result"]

    def alive_nodes(self) -> set[str]:
        return {n["node_id"] for n in self.rows("nodes") if n["state"] == "ALIVE"}


class NodeWatcher(threading.Thread):
    """Samples the alive nodes every half second while a job runs."""

    def __init__(self, api: StateApi):
        super().__init__(daemon=True)
        self.api, self.max_alive, self.seen = api, 0, set()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                alive = self.api.alive_nodes()
            except (OSError, ValueError, KeyError, RuntimeError):
                alive = set()
            self.max_alive = max(self.max_alive, len(alive))
            self.seen |= alive
            self._stop_event.wait(0.5)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(30)


def _cluster_processes(session: int, mark: str) -> list[int]:
    """PIDs of the live processes of this test's cluster: those of the session `ray start` leads (every process
    Ray starts stays in it, the monitor's worker nodes too, even once reparented), and any that carry the mark in
    their environment (which setproctitle may overwrite: hence the session)."""
    wanted, found = mark.encode(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if fields[0] in ("Z", "X"):
                continue
            if int(fields[3]) == session or wanted in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    return found


def _kill_cluster(session: int, mark: str) -> None:
    """SIGTERM, then SIGKILL, whatever of the cluster still runs."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        for pid in _cluster_processes(session, mark):
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + wait
        while _cluster_processes(session, mark) and time.monotonic() < deadline:
            time.sleep(0.2)


def _stop_monitor(session: int, mark: str, timeout: float = 15.0) -> None:
    """SIGTERM this cluster's autoscaler monitor and wait (bounded) for it to exit."""
    monitors = [pid for pid in _cluster_processes(session, mark)
                if any(arg.endswith(b"/autoscaler/_private/monitor.py") for arg in _cmdline(pid).split(b"\0"))]
    for pid in monitors:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and set(monitors) & set(_cluster_processes(session, mark)):
        time.sleep(0.2)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _log_tail(tmp: Path, name: str, chars: int = 3000) -> str:
    paths = sorted(tmp.glob(f"session_*/logs/{name}"))
    return "".join(f"--- {p}\n{p.read_text(errors='replace')[-chars:]}\n" for p in paths)


@contextlib.contextmanager
def _autoscaling_cluster(head_cpus: int):
    """A head of `head_cpus` CPUs under Ray's autoscaler with the fake multi-node provider: yields (address, env,
    api, tmp)."""
    tmp = Path(tempfile.mkdtemp(prefix="rga", dir="/tmp"))
    port, dashboard = free_port(), free_port()
    address = f"127.0.0.1:{port}"
    from ray.autoscaler._private.util import validate_config
    cluster_config = autoscaling_config(address, head_cpus)
    validate_config(cluster_config)         # the monitor would only log a bad config at debug level
    config = tmp / "autoscaling.yaml"
    config.write_text(json.dumps(cluster_config, indent=1))   # JSON is YAML
    mark = f"{MARK}={uuid.uuid4().hex}"
    token = secrets.token_hex(16)
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
               RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token,
               RAY_TMPDIR=str(tmp), RAY_FAKE_CLUSTER="1", AUTOSCALER_UPDATE_INTERVAL_S="1",
               RAY_DATA_DISABLE_PROGRESS_BARS="1", RAY_TRAIN_HEALTH_CHECK_INTERVAL_S="0.5",
               RAY_USAGE_STATS_ENABLED="0")
    env[MARK] = mark.split("=", 1)[1]
    for name in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH"):
        env.pop(name, None)
    log = open(tmp / "ray_start.log", "wb")
    process = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", f"--num-cpus={head_cpus}", f"--port={port}",
         f"--autoscaling-config={config}", f"--temp-dir={tmp}", "--include-dashboard=true",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--disable-usage-stats",
         "--object-store-memory=150000000",
         # another Ray on this machine (the test session's own) may hold the default ports: take free ones
         *(f"--{flag}={free_port()}" for flag in (
             "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
             "runtime-env-agent-port", "ray-client-server-port"))],
        env=env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
    api = StateApi(f"http://127.0.0.1:{dashboard}", token)
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"ray start exited with {process.returncode}:\n"
                                   + (tmp / "ray_start.log").read_text(errors="replace")[-3000:])
            try:
                if api.alive_nodes() == {HEAD_NODE_ID}:
                    break
            except (OSError, ValueError, KeyError, RuntimeError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("the head's dashboard did not list the head node within 120 s")
            time.sleep(0.5)
        driver_env = dict(env, RAY_ADDRESS=address)
        for name in ("RAY_FAKE_CLUSTER", "AUTOSCALER_UPDATE_INTERVAL_S"):
            driver_env.pop(name)
        yield address, driver_env, api, tmp
    finally:
        # `ray stop` would stop every Ray on the machine: stop this one alone.  The monitor goes first, while the
        # GCS still answers (on SIGTERM it reports its end to the GCS, and retries for half a minute when the GCS
        # is going down too); then the whole process group of `ray start --block`, killed at once (an orderly stop
        # takes 30 s and more with the detached actors Ray Data leaves; nothing here needs one); then whatever
        # of it is left, found by its session or mark: worker nodes still up (their raylets are the monitor's
        # children, not stopped with it) and the dashboard's forkserver, which outlives `ray start`.
        # (RAY_AUTOSCALER_FATESHARE_WORKERS=1 would make the monitor stop its worker nodes itself, but its cleanup
        # then loops forever: it loads the provider's defaults file, which the wheel lacks.)
        _stop_monitor(process.pid, mark)
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(10)
        log.close()
        _kill_cluster(process.pid, mark)
        still = _cluster_processes(process.pid, mark)
        shutil.rmtree(tmp, ignore_errors=True)
        assert not still, f"processes of the autoscaling cluster survive SIGKILL: {still}"


@pytest.fixture
def autoscaling_cluster():
    """A head with 1 CPU under the autoscaler."""
    with _autoscaling_cluster(HEAD_CPUS) as cluster:
        yield cluster


@pytest.fixture
def no_cpu_head_cluster():
    """A head that takes no work (0 CPUs, as cluster.yaml's) under the autoscaler."""
    with _autoscaling_cluster(0) as cluster:
        yield cluster


def _run_cli(args: list[str], env: dict, work: Path, name: str, timeout: float = 300) -> str:
    """`ray-gait ARGS` as a driver process of the cluster (RAY_ADDRESS in env); returns its output."""
    out_path = work / f"{name}.log"
    with open(out_path, "wb") as out:
        process = subprocess.Popen([str(BIN / "ray-gait"), *args], env=env, cwd=work, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
    text = out_path.read_text(errors="replace")
    assert process.returncode == 0, f"ray-gait {args[0]} exited with {process.returncode}:\n{text[-4000:]}"
    return text


def _wait_for_scale_down(api: StateApi, tmp: Path, timeout: float = 90.0) -> float:
    """Seconds until the head is the only alive node again."""
    started = time.monotonic()
    alive: set[str] = set()
    while time.monotonic() - started < timeout:
        alive = api.alive_nodes()
        if alive == {HEAD_NODE_ID}:
            return time.monotonic() - started
        time.sleep(0.5)
    raise AssertionError(f"idle worker nodes not removed within {timeout} s: alive {sorted(alive)}\n"
                         + _log_tail(tmp, "monitor.log"))


def _during(api: StateApi, run) -> tuple[NodeWatcher, str]:
    watcher = NodeWatcher(api)
    watcher.start()
    try:
        output = run()
    finally:
        watcher.stop()
    return watcher, output


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_autoscaler_adds_nodes_for_heatmaps_and_training_then_removes_them(autoscaling_cluster, tmp_path):
    address, env, api, tmp = autoscaling_cluster
    from ray_gait.synth import SynthConfig
    from ray_gait.synth.dataset import generate_dataset
    data, maps, runs = tmp_path / "data", tmp_path / "maps", tmp_path / "runs"
    generate_dataset(data, SynthConfig(ids=6, train_ids=4, views=(0, 90), frames=(12, 16)))  # 96 sequences

    # (b) step 1: three 1-CPU render actors on a 1-CPU head. Ray Data starts a fixed pool's actors without waiting
    # for them by default, and the head's one actor would render these few shards before a node is up: make the
    # pool wait for all three, so that the shards are spread over every actor.
    heatmap_env = dict(env, RAY_DATA_DEFAULT_WAIT_FOR_MIN_ACTORS_S="180")
    watcher, _ = _during(api, lambda: _run_cli(
        ["-q", "heatmap", "--pose_data_path", str(data / "pose"), "--save_root", str(maps), "--dataset_name", "synth",
         "--shard-size", "8", "--workers", "3"], heatmap_env, tmp_path, "heatmap"))
    manifest = json.loads((maps / "synth_sigma_8.0_" / "_manifest.json").read_text())
    assert manifest["sequences"] == 96 and manifest["error_count"] == 0
    assert watcher.max_alive >= 2, f"no worker node came up for the heatmap job\n{_log_tail(tmp, 'monitor.log')}"
    render_tasks = [t for t in api.rows("tasks") if t["type"] == "ACTOR_TASK" and t["state"] == "FINISHED"
                    and "(_ShardWorker)" in t["name"] and t["name"].endswith(".submit")]
    render_nodes = {t["node_id"] for t in render_tasks}
    assert render_nodes - {HEAD_NODE_ID}, f"no shard was rendered on a worker node: {render_nodes}"
    heatmap_nodes = watcher.seen - {HEAD_NODE_ID}
    heatmap_down_s = _wait_for_scale_down(api, tmp)

    # (a) step 3: two 1-CPU Train workers on a 1-CPU head.
    train_args = ["-q", "train", "--cfgs", str(CONFIG)]
    for key, value in {"data_cfg.dataset_root": str(maps / "synth_sigma_8.0_"),
                       "data_cfg.dataset_partition": str(data / "partition.json"), "ray_cfg.storage_path": str(runs),
                       "ray_cfg.num_workers": 2, "ray_cfg.max_failures": 0, "model_cfg.SeparateBNNecks.class_num": 4,
                       "trainer_cfg.sampler.batch_size": [2, 2], "trainer_cfg.sampler.frames_num_fixed": 8,
                       "trainer_cfg.total_iter": 2, "trainer_cfg.save_iter": 2, "trainer_cfg.log_iter": 1,
                       "trainer_cfg.warmup_iter": 0, "trainer_cfg.enable_float16": False,
                       "trainer_cfg.save_name": "autoscaled"}.items():
        train_args += ["--set", f"{key}={value if isinstance(value, str) else json.dumps(value)}"]
    watcher, _ = _during(api, lambda: _run_cli(train_args, env, tmp_path, "train"))
    assert list((runs / "autoscaled").glob("checkpoint_*/state.pt")), "the run wrote no checkpoint"
    assert watcher.max_alive >= 2, f"no worker node came up for training\n{_log_tail(tmp, 'monitor.log')}"
    train_workers = [a for a in api.rows("actors") if a["class_name"] == "RayTrainWorker"]
    assert len(train_workers) == 2, train_workers
    worker_nodes = {a["node_id"] for a in train_workers}
    assert worker_nodes - {HEAD_NODE_ID}, f"every Train worker ran on the head: {worker_nodes}"
    train_nodes = watcher.seen - {HEAD_NODE_ID}

    # (c) the idle worker nodes are removed again
    train_down_s = _wait_for_scale_down(api, tmp)
    launched = {n["node_id"] for n in api.rows("nodes")} - {HEAD_NODE_ID}
    print(f"\nautoscaler: heatmap ran on {len(heatmap_nodes)} added node(s) ({len(render_tasks)} shards rendered, on "
          f"{len(render_nodes)} node(s)), scaled down {heatmap_down_s:.0f} s after; training ran on "
          f"{len(train_nodes)} added node(s) (Train workers on {len(worker_nodes)} node(s)), scaled down "
          f"{train_down_s:.0f} s after; {len(launched)} worker node(s) launched in all")
    assert launched >= heatmap_nodes | train_nodes and len(launched) <= 2 * MAX_WORKER_NODES


def _busy_spans(api: StateApi, actors: list[dict]) -> list[tuple[float, float]]:
    """(first start, last end) in seconds of the tasks each actor ran, from the state API."""
    spans = []
    for actor in actors:
        tasks = [t for t in api.rows("tasks") if t.get("actor_id") == actor["actor_id"] and t.get("start_time_ms")
                 and t.get("end_time_ms")]
        assert tasks, f"no finished task of actor {actor['actor_id']}"
        spans.append((min(t["start_time_ms"] for t in tasks) / 1000.0, max(t["end_time_ms"] for t in tasks) / 1000.0))
    return spans


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_a_sweep_on_a_head_that_takes_no_work_runs_its_trials_at_once(no_cpu_head_cluster, tmp_path):
    """cluster.yaml's shape: the head has no CPU and the workers scale from zero. A 2-trial sweep must ask for
    both trials at once (the autoscaler brings up their nodes), not size itself by the CPUs there are (none).
    Then a training that asks for a GPU, which no node type here has, fails within the bounded wait."""
    address, env, api, tmp = no_cpu_head_cluster
    from ray_gait.synth import SynthConfig
    from ray_gait.synth.dataset import generate_dataset
    data, runs = tmp_path / "data", tmp_path / "runs"
    generate_dataset(data, SynthConfig(ids=6, train_ids=4, views=(0, 90), frames=(12, 16)))
    space = tmp_path / "space.yaml"
    space.write_text(json.dumps({"name": "two", "metric": "val/rank1", "mode": "max", "scheduler": {"type": "fifo"},
                                 "space": {"optimizer_cfg.lr": {"grid_search": [1e-3, 2e-3]}}}))
    settings = {"data_cfg.dataset_root": str(data / "pose"), "data_cfg.dataset_partition": str(data / "partition.json"),
                "data_cfg.dataset_name": "synth", "data_cfg.val_ids": 1, "ray_cfg.storage_path": str(runs),
                "ray_cfg.num_workers": 1, "ray_cfg.max_failures": 0, "model_cfg.SeparateBNNecks.class_num": 3,
                "trainer_cfg.sampler.batch_size": [2, 2],
                "trainer_cfg.sampler.frames_num_fixed": 8, "trainer_cfg.total_iter": 4, "trainer_cfg.save_iter": 2,
                "trainer_cfg.log_iter": 1, "trainer_cfg.warmup_iter": 0, "trainer_cfg.enable_float16": False}
    sets = [arg for key, value in settings.items()
            for arg in ("--set", f"{key}={value if isinstance(value, str) else json.dumps(value)}")]
    watcher, output = _during(api, lambda: _run_cli(["tune", "--cfgs", str(CONFIG), "--search", str(space), *sets],
                                                     env, tmp_path, "tune"))
    assert "2 trial(s) at a time" in output, output[-3000:]
    assert "a local path on a cluster whose autoscaler adds nodes" in output, output[-3000:]
    summary = json.loads((runs / "two" / "sweep.json").read_text())
    assert sorted(t["params"]["optimizer_cfg.lr"] for t in summary["trials"]) == [1e-3, 2e-3]
    assert all(t["iteration"] == 4 for t in summary["trials"]), summary["trials"]
    workers = [a for a in api.rows("actors") if a["class_name"] == "RayTrainWorker"]
    assert len(workers) == 2 and all(a["node_id"] != HEAD_NODE_ID for a in workers), workers
    spans = _busy_spans(api, workers)
    assert min(end for _, end in spans) > max(start for start, _ in spans), f"the trials ran one after the other: {spans}"
    assert watcher.max_alive >= 2, _log_tail(tmp, "monitor.log")

    # a resource no node type offers: one line, within the wait RAY_GAIT_RESOURCE_WAIT_S sets
    started = time.monotonic()
    done = subprocess.run([str(BIN / "ray-gait"), "train", "--cfgs", str(CONFIG), *sets,
                           "--set", "ray_cfg.use_gpu=true", "--set", "trainer_cfg.save_name=gpu"],
                          env=dict(env, RAY_GAIT_RESOURCE_WAIT_S="10"), cwd=tmp_path, capture_output=True, text=True,
                          timeout=180)
    seconds = time.monotonic() - started
    text = done.stdout + done.stderr
    assert done.returncode != 0 and seconds < 90, (seconds, text[-3000:])
    # (whether the CPU is named too depends on whether the sweep's nodes are still up)
    assert re.search(r"ray-gait train: error: training \(.*\) asks for (1 CPU, )?1 GPU per worker, and no node "
                     r"offering it came up within 10 s", text), text[-3000:]
    assert "Traceback" not in text, text[-3000:]
