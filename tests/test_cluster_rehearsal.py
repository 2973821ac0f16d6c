"""README's cluster commands rehearsed as a user runs them on a cluster shaped like cluster.yaml.

A head that takes no work (`ray start --head --num-cpus=0`) and a worker node joined with `ray start --address`,
each started in a working folder of its own, with its own Ray temp folder, token authentication, and an S3
server on loopback as the only storage they share.  The worker node runs in a mount namespace of its own in
which the test's "driver-only" folder is an empty tmpfs: a local path on the head is not on the worker, as on
two machines.  The nodes listen on 127.0.0.2 and 127.0.0.3 (loopback: `ray start --address` refuses to join
while Ray is kept on 127.0.0.1 by RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, and resolves 127.0.0.1 to the interface).

Jobs are submitted with `ray job submit --working-dir <project>`: the upload lacks the compiled kernel
(`*.so` is git-ignored), so the worker node must build it; every path is in the bucket, and nothing may be
written outside it but Ray's temporary folders.  Then the worker node is killed (SIGKILL of its raylet and
every process of it) during a training whose checkpoints are in the bucket, and started again: the run must
finish from the checkpoint with the weights of the uninterrupted run, and say so on the console.  Last, every
other stage's job of README is submitted the same way (test, embed, search and export on the printed checkpoint
URI; synth, ingest, link and a sweep drawing its maps from the poses), each in the bucket.
"""
from __future__ import annotations

import json
import os
import shlex
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from test_autoscaler import StateApi, _cluster_processes, _kill_cluster
from ports import free_port

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
HEAD_IP, WORKER_IP = "127.0.0.2", "127.0.0.3"
WORKER_CPUS = 2
MARK = "RAY_GAIT_REHEARSAL_TEST"
SYNTH = ["--ids", "6", "--train-ids", "4", "--views", "0,90", "--frames", "12:16"]
ITERS = 3
# the pipeline's training settings; the killed training repeats them, so its weights must equal the pipeline's
TRAIN_SET = {"model_cfg.Backbone.C": "0.5", "trainer_cfg.sampler.batch_size": "[2,2]",
             "trainer_cfg.sampler.frames_num_fixed": "8", "trainer_cfg.save_iter": "1", "trainer_cfg.log_iter": "1",
             "trainer_cfg.warmup_iter": "0", "ray_cfg.num_workers": "1", "ray_cfg.max_failures": "3",
             "evaluator_cfg.enable_float16": "false"}


def _can_unshare() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = tempfile.mkdtemp(prefix="rgu", dir="/tmp")
    try:
        done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                               f"mount -t tmpfs tmpfs {probe}"], capture_output=True, timeout=30)
        return done.returncode == 0
    finally:
        shutil.rmtree(probe, ignore_errors=True)


class Rehearsal:
    """The two nodes, their folders and how to reach them."""

    def __init__(self, base: Path, s3_env: dict[str, str]):
        self.base = base
        self.head_dir, self.worker_dir = base / "head", base / "worker"
        self.head_tmp, self.worker_tmp = base / "ht", base / "wt"
        self.driver_only = base / "driver_only"
        for folder in (self.head_dir, self.worker_dir, self.head_tmp, self.worker_tmp, self.driver_only):
            folder.mkdir()
        self.port, self.dashboard = free_port(), free_port()
        self.token = secrets.token_hex(16)
        self.mark = uuid.uuid4().hex
        self.env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="1", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.token,
                        RAY_DATA_DISABLE_PROGRESS_BARS="1", RAY_TRAIN_HEALTH_CHECK_INTERVAL_S="0.5",
                        RAY_TRAIN_ENABLE_PREEMPTION_WATCHER="0", RAY_USAGE_STATS_ENABLED="0",
                        # the GCS marks a node dead after 3 missed 1-s health checks (default 5 of 3 s): the
                        # killed worker node is seen lost within seconds
                        RAY_health_check_period_ms="1000", RAY_health_check_failure_threshold="3", **s3_env)
        self.env[MARK] = self.mark
        for name in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH", "RAY_TMPDIR", "PYTHONPATH"):
            self.env.pop(name, None)
        self.url = f"http://{HEAD_IP}:{self.dashboard}"
        self.api = StateApi(self.url, self.token)
        self.head = self.worker = None
        self.worker_starts = 0

    def _ports(self) -> list[str]:
        return [f"--{flag}={free_port()}" for flag in ("dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                                         "metrics-export-port", "runtime-env-agent-port")]

    def start_head(self) -> None:
        log = open(self.base / "head.log", "wb")
        self.head = subprocess.Popen(
            [str(BIN / "ray"), "start", "--head", "--block", "--num-cpus=0", f"--node-ip-address={HEAD_IP}",
             f"--port={self.port}", f"--temp-dir={self.head_tmp}", "--include-dashboard=true",
             f"--dashboard-host={HEAD_IP}", f"--dashboard-port={self.dashboard}", "--disable-usage-stats",
             f"--ray-client-server-port={free_port()}", *self._ports()],
            env=dict(self.env, RAY_TMPDIR=str(self.head_tmp), TMPDIR=str(self.head_tmp)), cwd=self.head_dir,
            start_new_session=True, stdout=log, stderr=subprocess.STDOUT)

    def start_worker(self) -> None:
        """`ray start --address` in a mount namespace where the driver-only folder is an empty tmpfs."""
        self.worker_starts += 1
        log = open(self.base / f"worker-{self.worker_starts}.log", "wb")
        command = [str(BIN / "ray"), "start", "--block", f"--address={HEAD_IP}:{self.port}",
                   f"--node-ip-address={WORKER_IP}", f"--num-cpus={WORKER_CPUS}", f"--temp-dir={self.worker_tmp}",
                   "--disable-usage-stats", *self._ports()]
        self.worker = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", 'mount -t tmpfs tmpfs "$0" && exec "$@"',
             str(self.driver_only), *command],
            env=dict(self.env, RAY_TMPDIR=str(self.worker_tmp), TMPDIR=str(self.worker_tmp)), cwd=self.worker_dir,
            start_new_session=True, stdout=log, stderr=subprocess.STDOUT)

    def alive(self) -> dict[str, str]:
        """node ip -> node id of the alive nodes."""
        return {n["node_ip"]: n["node_id"] for n in self.api.rows("nodes") if n["state"] == "ALIVE"}

    def wait_for(self, ips: set[str], timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        seen: dict[str, str] = {}
        while time.monotonic() < deadline:
            for process in (self.head, self.worker):
                if process is not None and process.poll() is not None:
                    raise RuntimeError(f"a ray start exited with {process.returncode}:\n{self.logs()}")
            try:
                seen = self.alive()
                if set(seen) == ips:
                    return
            except (OSError, ValueError, KeyError, RuntimeError):
                pass
            time.sleep(0.5)
        raise TimeoutError(f"nodes {sorted(ips)} not alive within {timeout} s (alive: {seen})\n{self.logs()}")

    def kill_worker(self) -> None:
        """SIGKILL the worker node: its `ray start` group, its raylet and every process it started."""
        os.killpg(self.worker.pid, signal.SIGKILL)
        self.worker.wait(10)
        for pid in _cluster_processes(self.worker.pid, f"{MARK}={self.mark}"):
            try:
                if str(self.worker_tmp) in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace") or \
                        str(self.worker_tmp).encode() in Path(f"/proc/{pid}/environ").read_bytes():
                    os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def submit(self, args: list[str], timeout: float = 600, entry: tuple[str, ...] = ("python",)
               ) -> subprocess.CompletedProcess:
        """`ray job submit --working-dir <project> -- python ARGS`, from a folder of its own (the user's)."""
        command = [str(BIN / "ray"), "job", "submit", "--address", self.url, "--working-dir", str(ROOT), "--",
                   *entry, *args]
        env = dict(self.env)
        for _ in range(30):
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout,
                                  cwd=self.base)
            if "No available agent to submit job" not in done.stdout + done.stderr:
                return done
            time.sleep(2)      # the dashboard answers before its node agent has registered
        return done

    def logs(self) -> str:
        return "".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}\n" for p in sorted(self.base.glob("*.log")))

    def stop(self) -> None:
        for process in (self.worker, self.head):
            if process is not None:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait(10)
        for process in (self.worker, self.head):
            if process is not None:
                _kill_cluster(process.pid, f"{MARK}={self.mark}")


@pytest.fixture(scope="module")
def rehearsal(s3_server):
    if s3_server is None:
        pytest.skip("moto[server] is not installed (pip install -e '.[test]')")
    if not _can_unshare():
        pytest.skip("needs `unshare --mount` (a mount namespace) to give the worker node a disk of its own")
    s3_env = {k: os.environ[k] for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                         "AWS_DEFAULT_REGION", "AWS_EC2_METADATA_DISABLED") if k in os.environ}
    cluster = Rehearsal(Path(tempfile.mkdtemp(prefix="rgr", dir="/tmp")), s3_env)
    try:
        cluster.start_head()
        cluster.wait_for({HEAD_IP})
        cluster.start_worker()
        cluster.wait_for({HEAD_IP, WORKER_IP})
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(cluster.base, ignore_errors=True)


def _sets(values: dict[str, str]) -> list[str]:
    return [arg for key, value in values.items() for arg in ("--set", f"{key}={value}")]


def _s3_json(s3, path: str) -> dict:
    with s3.open_input_stream(path) as stream:
        return json.loads(stream.read())


def _files_below(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _new_files_of_project() -> list[str]:
    """The project's untracked and ignored entries (what a job writing into the project would add)."""
    listing = subprocess.run(["git", "status", "--porcelain", "--ignored"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
    return sorted(line for line in listing.splitlines() if line[:2] in ("??", "!!"))


def _state(folder: str) -> dict:
    from ray_gait.models.checkpoint import read_state
    return read_state(f"s3://{folder}")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_cluster_commands_of_readme_on_a_head_that_takes_no_work(rehearsal, s3_bucket):
    s3, bucket = s3_bucket
    out = f"s3://{bucket}/run"
    project_before = _new_files_of_project()

    # 1. README's pipeline job, every path in the bucket
    done = rehearsal.submit(["jobs/pipeline.py", "--out", out, *SYNTH, "--iters", str(ITERS), *_sets(TRAIN_SET)])
    text = done.stdout + done.stderr
    assert done.returncode == 0 and "succeeded" in text, text[-4000:] + rehearsal.logs()
    assert "[pipeline 5/5" in text
    metrics = _s3_json(s3, f"{bucket}/run/runs/SkeletonGaitPP_synth/test/metrics.json")
    assert metrics["protocol"] == "evaluate_protocol" and metrics["sequences"] == 2 * 2 * 8
    assert set(metrics["results"]) == {"NM", "BG", "CL"}
    assert all(0.0 <= v["rank1"] <= 100.0 for v in metrics["results"].values())
    # URIs stayed URIs: the evaluated checkpoint and the printed one are in the bucket
    assert metrics["checkpoint"].startswith(f"{out}/runs/SkeletonGaitPP_synth/checkpoint_"), metrics["checkpoint"]
    printed = re.findall(r"^  checkpoint: (\S+)$", text, re.M)
    assert printed == [metrics["checkpoint"]], (printed, text[-3000:])
    maps = _s3_json(s3, f"{bucket}/run/maps/synth_sigma_8.0_/_manifest.json")
    assert maps["sequences"] == 6 * 2 * 8 and maps["error_count"] == 0
    # the worker node rendered with the compiled kernel, which it built from the uploaded source
    assert set(maps["renderers"]) == {"c"}, maps["renderers"]
    record_names = [info.path for info in s3.get_file_info(pafs.FileSelector(f"{bucket}/run/maps/synth_sigma_8.0_/_shards"))]
    origins = {_s3_json(s3, name)["kernel"] for name in record_names}
    assert all(o.startswith(f"built here ({rehearsal.worker_tmp}/ray_gait-") for o in origins), origins
    assert _s3_json(s3, f"{bucket}/run/paired/_manifest.json")
    assert s3.get_file_info(f"{bucket}/run/data/preview.png").size > 0
    # nothing written outside the bucket: not in the nodes' working folders, not beside the upload, not the project
    assert _files_below(rehearsal.head_dir) == [] and _files_below(rehearsal.worker_dir) == []
    assert not [p for tmp in (rehearsal.head_tmp, rehearsal.worker_tmp) for p in tmp.rglob("s3:")]
    assert not [p for tmp in (rehearsal.head_tmp, rehearsal.worker_tmp) for p in tmp.rglob("runtime_resources/*/*/runs")]
    assert _new_files_of_project() == project_before

    # 2. a local output folder of the head, which the worker node does not see, is refused before any work
    done = rehearsal.submit(["jobs/heatmap.py", "--pose_data_path", f"{out}/data/pose", "--save_root",
                             str(rehearsal.driver_only / "maps"), "--dataset_name", "synth"])
    text = done.stdout + done.stderr
    assert done.returncode != 0, text[-3000:]
    assert re.search(rf"--save_root {re.escape(str(rehearsal.driver_only))}\S* is a folder of this node that "
                     rf"node\(s\) {WORKER_IP} of the cluster \(2 nodes\) do not see", text), text[-3000:]
    assert not (rehearsal.driver_only / "maps" / "synth_sigma_8.0_" / "_shards").exists()

    # 3. the worker node dies mid-training (a checkpoint is in the bucket) and comes back: the run finishes
    run = f"{bucket}/run/runs/killed"
    args = ["jobs/train.py", "--cfgs", "configs/skeletongait/skeletongait++_synth.yaml",
            *_sets({**TRAIN_SET, "data_cfg.dataset_root": f"{out}/paired",
                    "data_cfg.dataset_partition": f"{out}/data/partition.json",
                    "data_cfg.dataset_protocol": f"{out}/data/protocol.json", "ray_cfg.storage_path": f"{out}/runs",
                    "model_cfg.SeparateBNNecks.class_num": "4", "trainer_cfg.total_iter": str(ITERS),
                    "trainer_cfg.save_name": "killed"})]
    log_path = rehearsal.base / "killed_job.out"
    with open(log_path, "w") as log:
        job = subprocess.Popen([str(BIN / "ray"), "job", "submit", "--address", rehearsal.url, "--working-dir", str(ROOT),
                                "--", "python", *args], env=rehearsal.env, stdout=log, stderr=subprocess.STDOUT,
                               cwd=rehearsal.base, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not [i for i in s3.get_file_info(pafs.FileSelector(run, recursive=True, allow_not_found=True))
                   if i.path.endswith("/state.pt")]:
            assert job.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint reached the bucket\n" + log_path.read_text()[-3000:]
            time.sleep(0.2)
        rehearsal.kill_worker()
        time.sleep(3)
        rehearsal.start_worker()
        job.wait(600)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
    text = log_path.read_text(errors="replace")
    assert job.returncode == 0 and "succeeded" in text, text[-4000:] + rehearsal.logs()
    restarts = re.findall(r"the worker group failed \((.+)\); restarting from (checkpoint (\S+) \(iteration (\d+)\))",
                          text)
    assert restarts, text[-4000:]
    assert f"a worker on node {WORKER_IP} was lost" in restarts[0][0], restarts
    assert all(r[2].startswith(f"{out}/runs/killed/checkpoint_") and 1 <= int(r[3]) < ITERS for r in restarts), restarts
    assert f"checkpoint {out}/runs/killed/checkpoint_" in text        # the final line, a URI
    straight = [i.path for i in s3.get_file_info(pafs.FileSelector(f"{bucket}/run/runs/SkeletonGaitPP_synth"))
                if re.search(r"/checkpoint_\d{4}-", i.path)]
    killed = [i.path for i in s3.get_file_info(pafs.FileSelector(run)) if re.search(r"/checkpoint_\d{4}-", i.path)]
    a, b = _state(sorted(straight)[-1]), _state(sorted(killed)[-1])
    assert a["iteration"] == b["iteration"] == ITERS
    import torch
    for key, value in a["model"].items():
        assert torch.allclose(value.float(), b["model"][key].float(), rtol=1e-4, atol=1e-5), key

    # 4. the stages after training, each job of README with every path in the bucket, in one submission: the
    # printed checkpoint URI pasted into `test`, then `embed`, `search` and `export` on it
    checkpoint = printed[0]
    model = _sets({key: TRAIN_SET[key] for key in ("model_cfg.Backbone.C", "evaluator_cfg.enable_float16")}
                  | {"model_cfg.SeparateBNNecks.class_num": "4", "data_cfg.dataset_root": f"{out}/paired",
                     "data_cfg.dataset_partition": f"{out}/data/partition.json",
                     "data_cfg.dataset_protocol": f"{out}/data/protocol.json"})
    config = ["--cfgs", "configs/skeletongait/skeletongait++_synth.yaml"]
    stages = [["jobs/test.py", *config, "--checkpoint", checkpoint, "--out", f"{out}/retest", *model],
              ["jobs/embed.py", *config, "--checkpoint", checkpoint, "--data", f"{out}/paired", "--out",
               f"{out}/embeddings", *model],
              ["jobs/search.py", "--gallery", f"{out}/embeddings", "--probe", f"{out}/embeddings", "--top-k", "1",
               "--out", f"{out}/search.csv"],
              ["jobs/export.py", *config, "--checkpoint", checkpoint, "--format", "torchscript", "--out",
               f"{out}/model.pt", *model]]
    chain = " && ".join(shlex.join(["python", *stage]) for stage in stages)
    done = rehearsal.submit(["sh", "-c", chain], entry=[])
    text = done.stdout + done.stderr
    assert done.returncode == 0 and "succeeded" in text, text[-4000:]
    retest = _s3_json(s3, f"{bucket}/run/retest/metrics.json")
    assert retest["checkpoint"] == checkpoint
    assert {c: r["rank1"] for c, r in retest["results"].items()} == {c: r["rank1"] for c, r in metrics["results"].items()}
    embedded = _s3_json(s3, f"{bucket}/run/embeddings/_manifest.json")
    assert embedded["checkpoint"].startswith(checkpoint), embedded["checkpoint"]
    with s3.open_input_stream(f"{bucket}/run/search.csv") as stream:
        rows = stream.read().decode().splitlines()
    assert len(rows) == 1 + 6 * 2 * 8, rows[:3]
    assert s3.get_file_info(f"{bucket}/run/model.pt").size > 0
    assert _files_below(rehearsal.head_dir) == [] and _files_below(rehearsal.worker_dir) == []
    assert _new_files_of_project() == project_before

    # 5. the remaining stages' jobs, every path in the bucket, in one submission: synth, ingest (the pose tree as
    # it is), link (the maps with the silhouettes again, into a new folder), and a sweep over a heatmap key that
    # draws its maps from the poses (a sweep file in the bucket too)
    space = f"{bucket}/run/space.yaml"
    with s3.open_output_stream(space) as stream:
        stream.write(json.dumps({"name": "sweep", "metric": "val/rank1", "mode": "max", "scheduler": {"type": "fifo"},
                                 "space": {"heatmap_cfg.heatmap_generator_args.sigma": {"grid_search": [4.0]}}
                                 }).encode())
    sweep = _sets({**TRAIN_SET, "data_cfg.dataset_root": f"{out}/data/pose", "data_cfg.silhouette_root":
                   f"{out}/data/sil", "data_cfg.dataset_partition": f"{out}/data/partition.json",
                   "data_cfg.dataset_name": "synth", "data_cfg.val_ids": "1", "ray_cfg.storage_path": f"{out}/tune",
                   "model_cfg.SeparateBNNecks.class_num": "4", "trainer_cfg.total_iter": "2",
                   "trainer_cfg.save_iter": "2"})
    stages = [["jobs/synth.py", "--out", f"{out}/synth2", "--ids", "2", "--train-ids", "1", "--views", "0",
               "--frames", "8:10", "--no-preview"],
              ["jobs/ingest.py", "--input_path", f"{out}/data/pose", "--output_path", f"{out}/poses"],
              ["jobs/link.py", "--heatmap_data_path", f"{out}/maps/synth_sigma_8.0_", "--silhouette_data_path",
               f"{out}/data/sil", "--output_path", f"{out}/paired2"],
              ["jobs/tune.py", "--cfgs", "configs/skeletongait/skeletongait++_synth.yaml", "--search", f"s3://{space}",
               *sweep]]
    done = rehearsal.submit(["sh", "-c", " && ".join(shlex.join(["python", *stage]) for stage in stages)], entry=[])
    text = done.stdout + done.stderr
    assert done.returncode == 0 and "succeeded" in text, text[-4000:]
    assert _s3_json(s3, f"{bucket}/run/synth2/partition.json")["TRAIN_SET"] == ["00001"]
    ingested = _s3_json(s3, f"{bucket}/run/poses/_manifest.json")
    assert ingested["sequences"] == 6 * 2 * 8 and ingested["error_count"] == 0
    assert _s3_json(s3, f"{bucket}/run/paired2/_manifest.json")["paired"] == 6 * 2 * 8
    swept = _s3_json(s3, f"{bucket}/run/tune/sweep/sweep.json")
    assert [t["params"]["heatmap_cfg.heatmap_generator_args.sigma"] for t in swept["trials"]] == [4.0]
    assert all(t["iteration"] == 2 and t["best"] is not None for t in swept["trials"]), swept["trials"]
    assert swept["renders"] == [] and swept["best_config"].startswith(f"{out}/tune/sweep/")
    trial_states = [i.path for i in s3.get_file_info(pafs.FileSelector(f"{bucket}/run/tune/sweep/trials",
                                                                        recursive=True)) if i.path.endswith("/state.pt")]
    assert trial_states and all(_state(p)["config"]["heatmap_cfg"]["heatmap_generator_args"]["sigma"] == 4.0
                                for p in trial_states), trial_states
    assert _files_below(rehearsal.head_dir) == [] and _files_below(rehearsal.worker_dir) == []
    assert not [p for tmp in (rehearsal.head_tmp, rehearsal.worker_tmp) for p in tmp.rglob("s3:")]
    assert _new_files_of_project() == project_before
