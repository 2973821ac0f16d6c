"""Shared fixtures: one local Ray for the session (2 CPUs, loopback only), pose trees on disk."""
from __future__ import annotations

import os
import pickle
import shutil
import signal
import tempfile
import threading
import time
import uuid
import warnings
from pathlib import Path

import numpy as np
import pytest
from ports import free_port

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
# Ray Train starts a node-drain watcher actor with every worker group (a process, ~2 s of CPU); no test drains
# a node, and on 2 cores each run finishes ~2-3 s sooner without it
os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
# Every process this test session starts (Ray's raylet, GCS and workers, drivers run as subprocesses, the clusters
# of test_cluster_rehearsal and test_two_nodes) inherits this mark; at the end, whatever still carries it is a leftover.
SESSION_MARK = "RAY_GAIT_TEST_SESSION"
os.environ[SESSION_MARK] = f"{os.getpid()}-{uuid.uuid4().hex}"

DATA = Path(__file__).parent / "data"
HEATMAP_FIXTURES = DATA / "opengait_heatmap"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked `gpu` when no CUDA device is present."""
    try:
        import torch
        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    """Give SIGINT back its handler after every test (setup, call and teardown, fixtures of any scope).

    Ray Train's `trainer.fit()`, run in the main thread, installs a SIGINT handler that closes over the run's
    TrainController handle and leaves it installed after fit() returns: the controller (about 500 MB, and its
    DatasetManager) then lives until the next fit() in this process or the session's end, and a Ctrl-C reaches
    that finished controller instead of pytest.  Dropping the handler releases the handle, and Ray ends the actor.
    """
    before = signal.getsignal(signal.SIGINT)
    try:
        return (yield)
    finally:
        if (before is not None and threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is not before):
            signal.signal(signal.SIGINT, before)


S3_ENV = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
          "AWS_EC2_METADATA_DISABLED")


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on 127.0.0.1 for the whole session (None without moto[server]); the AWS variables of
    this process point pyarrow at it, and the session's Ray passes them to every worker."""
    import socket
    import subprocess
    server = shutil.which("moto_server")
    if server is None:
        yield None
        return
    port = free_port()
    process = subprocess.Popen([server, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    saved = {k: os.environ.get(k) for k in S3_ENV}
    os.environ.update(AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", AWS_ACCESS_KEY_ID="test",
                      AWS_SECRET_ACCESS_KEY="test", AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "moto_server did not start"
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def s3_bucket(s3_server):
    """A new bucket on the session's S3 server: (pyarrow S3 filesystem, bucket name)."""
    if s3_server is None:
        pytest.skip("moto[server] is not installed (pip install -e '.[test]')")
    import pyarrow.fs as pafs
    s3 = pafs.S3FileSystem(endpoint_override=s3_server, access_key="test", secret_key="test", region="us-east-1",
                           allow_bucket_creation=True)
    name = f"gait-{uuid.uuid4().hex[:10]}"
    s3.create_dir(name)
    return s3, name


@pytest.fixture(scope="session")
def ray_session(s3_server):
    """A local Ray with 2 CPUs on 127.0.0.1, its own short temp dir (workers see the session's S3 server);
    yields the GCS address."""
    import ray
    tmp = tempfile.mkdtemp(prefix="rg", dir="/tmp")
    os.environ["RAY_TMPDIR"] = tmp
    tests = str(Path(__file__).parent)
    path = os.pathsep.join(p for p in (tests, os.environ.get("PYTHONPATH", "")) if p)
    # The dashboard serves the state API that Ray Train's placement-group cleaner polls: without it,
    # the workers of a Tune trial stopped early keep their CPUs and later trials never start.
    ray.init(num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=free_port(),
             _temp_dir=tmp, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": path, **{k: os.environ[k] for k in S3_ENV if k in os.environ}}})
    import ray.data
    ray.data.DataContext.get_current().enable_progress_bars = False
    address = ray.get_runtime_context().gcs_address
    yield address
    _shutdown_ray(ray)
    shutil.rmtree(tmp, ignore_errors=True)


# Processes seen below this one just before the session's Ray was shut down (pid -> start time): checked
# again at the very end, since some (the dashboard's forkserver children) hide the session mark behind their title.
_RAY_DESCENDANTS: dict[int, int] = {}


def _shutdown_ray(ray) -> None:
    """ray.shutdown() that waits for the processes ray.init started to exit, and reaps them.

    A plain ray.shutdown() gives the raylet 1 s after SIGTERM and 1 s after SIGKILL, then returns without
    reaping it if it is slower (a loaded CI machine): the raylet is left a zombie child of pytest.  Every Ray
    worker decides that its raylet is alive with kill(RAY_RAYLET_PID, 0), which a zombie passes, so the
    workers keep running; once pytest exits they belong to PID 1, and where PID 1 does not reap (a
    container's `tail -f /dev/null`) they never end.
    """
    _RAY_DESCENDANTS.update(_descendants(os.getpid()))
    node = getattr(ray._private.worker, "_global_node", None)
    started = [info.process for infos in (getattr(node, "all_processes", None) or {}).values() for info in infos]
    try:
        ray.shutdown(wait_for_processes=True)
    except TypeError:          # a Ray without wait_for_processes
        ray.shutdown()
    for process in started:    # Popen objects: wait() reaps (bounded: a process in D state is left to the sweep)
        try:
            process.wait(timeout=10)
        except Exception:
            pass


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, start time in clock ticks since boot) of a live process, None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read().decode(errors="replace")
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()
    return fields[0], int(fields[1]), int(fields[19])


def _proc_title(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace").strip()[:160]
    except OSError:
        return "?"


def _all_pids() -> list[int]:
    try:
        return [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:            # no /proc (not Linux): nothing to sweep
        return []


def _descendants(root: int) -> dict[int, int]:
    """pid -> start time of every live process below root."""
    children: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for pid in _all_pids():
        stat = _proc_stat(pid)
        if stat is not None:
            children.setdefault(stat[1], []).append(pid)
            starts[pid] = stat[2]
    found, todo = {}, list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found[pid] = starts[pid]
        todo.extend(children.get(pid, []))
    return found


def _leftovers() -> dict[int, int]:
    """pid -> start time of the live (non-zombie) processes this session started that are still running."""
    me = os.getpid()
    mark = f"{SESSION_MARK}={os.environ[SESSION_MARK]}".encode()
    found = {}
    for pid in _all_pids():
        if pid == me:
            continue
        stat = _proc_stat(pid)
        if stat is None or stat[0] in ("Z", "X"):
            continue
        if stat[1] == me and "from multiprocessing." in _proc_title(pid):
            continue           # pytest's own resource tracker / forkserver: they end with pytest
        if _RAY_DESCENDANTS.get(pid) == stat[2]:
            found[pid] = stat[2]
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as handle:
                environ = handle.read().split(b"\0")
        except OSError:
            continue
        if mark in environ:
            found[pid] = stat[2]
    return found


def _reap_children() -> None:
    """Reap this process's exited children, so that nothing waits on a zombie of ours (see _shutdown_ray)."""
    for pid in _all_pids():
        stat = _proc_stat(pid)
        if stat is not None and stat[1] == os.getpid() and stat[0] == "Z":
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass


def _still_running(pids: dict[int, int]) -> dict[int, int]:
    alive = {}
    for pid, start in pids.items():
        stat = _proc_stat(pid)
        if stat is not None and stat[2] == start and stat[0] not in ("Z", "X"):
            alive[pid] = start
    return alive


def _signal(pids: dict[int, int], sig: int) -> None:
    for pid, start in _still_running(pids).items():
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _wait_gone(pids: dict[int, int], timeout: float) -> dict[int, int]:
    deadline = time.monotonic() + timeout
    while True:
        _reap_children()
        alive = _still_running(pids)
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.2)


class LeftoverProcessWarning(UserWarning):
    """A process this test session started was still running at its end (and was killed)."""


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """After every fixture is torn down: terminate whatever this session started that still runs, and say so."""
    _reap_children()
    # Ray's workers leave on their own within about a second of their raylet's end: give them that.
    left = _wait_gone(_leftovers(), timeout=10.0)
    if not left:
        return
    described = [f"pid {pid} (parent {(_proc_stat(pid) or ('', '?'))[1]}): {_proc_title(pid)}" for pid in left]
    _signal(left, signal.SIGTERM)
    left = _wait_gone(left, timeout=5.0)
    _signal(left, signal.SIGKILL)
    left = _wait_gone(left, timeout=5.0)
    warnings.warn(LeftoverProcessWarning(
        f"{len(described)} process(es) started by this test session outlived it and were terminated"
        + (f" ({len(left)} could not be killed)" if left else "") + ":\n  " + "\n  ".join(described)))


@pytest.fixture(scope="session")
def fixture_poses() -> dict[str, np.ndarray]:
    """OpenGait's test poses (COCO-17 walks and COCO-18 walks)."""
    with np.load(HEATMAP_FIXTURES / "poses.npz") as data:
        return {k: data[k] for k in data.files}


def write_pose_tree(root: Path, sequences: dict[str, np.ndarray]) -> Path:
    """Write {"id/type/view/seq": array} as pickles in OpenGait's layout below root."""
    for rel, pose in sequences.items():
        path = root / f"{rel}.pkl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as handle:
            pickle.dump(pose, handle)
    return root


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Two cores, shared with Ray workers: intra-op threads only oversubscribe them."""
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:
        pass


@pytest.fixture(scope="session")
def synth_maps(ray_session, tmp_path_factory):
    """A small synthetic set rendered to heatmaps and paired: (data folder, paired data set)."""
    root = tmp_path_factory.mktemp("train")
    data, maps = root / "data", root / "maps"
    assert _cli(["synth", "--out", str(data), "--ids", "8", "--train-ids", "4", "--views", "0,90",
                 "--frames", "16:24", "--no-preview"]) == 0
    assert _cli(["heatmap", "--pose_data_path", str(data / "pose"), "--save_root", str(maps),
                 "--dataset_name", "synth"]) == 0
    assert _cli(["link", "--heatmap_data_path", str(maps / "synth_sigma_8.0_"), "--silhouette_data_path",
                 str(data / "sil"), "--output_path", str(root / "paired")]) == 0
    return data, root / "paired"


def _cli(argv: list[str]) -> int:
    from ray_gait.cli import main
    return main(argv)
