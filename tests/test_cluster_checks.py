"""Cluster checks on the session's one-node Ray (2 CPUs, no GPU, no autoscaler): a resource no node offers is
refused at once with one line naming it, a GPU actor pool is sized by GPUs, and a path inside Ray's upload
folder is warned of. (The multi-node cases run on the rehearsal cluster: tests/test_cluster_rehearsal.py.)"""
from __future__ import annotations

import logging
import time

import pytest

from ray_gait.cli import main as cli


def test_a_resource_no_node_offers_is_refused_at_once(ray_session):
    from ray_gait.ray_layer.cluster_checks import autoscaler_running, require_resources
    assert not autoscaler_running()
    require_resources({"CPU": 1}, "a job")                     # offered: returns
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"ray-gait heatmap --device cuda asks for 1 GPU per worker, which no "
                                           r"node of this Ray cluster offers, and no autoscaler can add one"):
        require_resources({"CPU": 1, "GPU": 1}, "ray-gait heatmap --device cuda")
    assert time.monotonic() - started < 10


def test_the_gpu_heatmap_job_says_so_in_one_line(ray_session, tmp_path, capsys, fixture_poses):
    from conftest import write_pose_tree
    key = next(iter(fixture_poses))
    write_pose_tree(tmp_path / "pose", {"001/nm-01/000/seq": fixture_poses[key]})
    assert cli(["heatmap", "--pose_data_path", str(tmp_path / "pose"), "--save_root", str(tmp_path / "maps"),
                "--dataset_name", "synth", "--device", "cuda"]) != 0
    err = capsys.readouterr().err
    assert "asks for 1 GPU per worker" in err and "no autoscaler can add one" in err


def test_gpu_actor_pools_are_sized_by_gpus(ray_session):
    from ray_gait.ray_layer.shard_map import pool_strategy
    gpu = pool_strategy(None, shards=64, gpus_per_worker=1.0)       # no GPU here: one actor, not one per CPU
    assert (gpu.min_size, gpu.max_size) == (1, 1)
    cpu = pool_strategy(None, shards=64)
    assert cpu.max_size == 64


def test_paths_on_one_node_pass_and_the_upload_folder_is_warned_of(ray_session, tmp_path, caplog):
    from ray_gait.ray_layer.cluster_checks import check_paths_shared
    upload = tmp_path / "session_x" / "runtime_resources" / "working_dir_files" / "_ray_pkg_abc" / "runs"
    with caplog.at_level(logging.WARNING):
        check_paths_shared({"--out": str(tmp_path / "out"), "--data": "s3://bucket/data", "--none": None})
    assert not caplog.records
    with caplog.at_level(logging.WARNING):
        check_paths_shared({"ray_cfg.storage_path": str(upload)})
    assert any("ray_cfg.storage_path" in r.getMessage() and "deletes with the session" in r.getMessage()
               for r in caplog.records)
    assert not list(tmp_path.rglob(".ray_gait-visible-*"))


def test_a_lost_node_is_named_in_the_failure_line():
    """Ray's message when a Train worker's node was SIGKILLed (as the rehearsal saw it): the line names the node."""
    from ray_gait.ray_layer.trainer import failure_summary
    lost = RuntimeError(
        "Training failed due to worker errors:\n[Rank 0 Error Snippet]:\nray.exceptions.ActorUnavailableError: The actor "
        "5e43fc98516fda8865c17bb404000000 is unavailable: The actor is temporarily unavailable: RpcError: RPC error: "
        "failed to connect to all addresses; last error: UNKNOWN: ipv4:10.0.3.17:15311: Failed to connect to remote "
        "host: Connection refused rpc_code: 14. The task may or may not have been executed on the actor.")
    line = failure_summary(lost)
    assert line.startswith("a worker on node 10.0.3.17 was lost: ray.exceptions.ActorUnavailableError: The actor"), line
    assert "\n" not in line and len(line) < 400
    plain = failure_summary(ValueError("Training failed:\nValueError: loss is NaN at iteration 12 (ray 2.60.0)"))
    assert plain == "ValueError: loss is NaN at iteration 12 (ray 2.60.0)"
