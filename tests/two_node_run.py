"""Run by tests/test_two_nodes.py in its own process: a simulated 2-node cluster (ray.cluster_utils.Cluster)
whose nodes share nothing but a bucket: each node runs in a folder of its own, the data, the heatmaps and
the checkpoints live in the bucket. Heatmaps with Ray Data and a 2-worker training across both nodes.

    python tests/two_node_run.py WORKDIR BUCKET   -> writes WORKDIR/seen.json, what it saw

(a file, not stdout: Ray's own log lines reach stdout too, in any order)
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _start_in(folder: Path, start) -> None:
    """Start a node's processes with `folder` as their working folder (the processes inherit it)."""
    here = os.getcwd()
    folder.mkdir(parents=True)
    os.chdir(folder)
    try:
        start()
    finally:
        os.chdir(here)


def main(work: Path, bucket: str) -> None:
    """Start head (1 CPU) + worker node (1 CPU), run step 1 and step 3 on them, write a JSON summary."""
    import pyarrow.fs as pafs
    import ray
    from ray.cluster_utils import Cluster
    from ray.util.state import list_actors, list_tasks
    holder: dict = {}
    _start_in(work / "node_head", lambda: holder.update(cluster=Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": True,
                                              "dashboard_host": "127.0.0.1"})))
    cluster = holder["cluster"]
    _start_in(work / "node_worker", lambda: cluster.add_node(num_cpus=1))
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    os.environ["RAY_ADDRESS"] = cluster.address
    try:
        import ray.data
        ray.data.DataContext.get_current().enable_progress_bars = False
        from ray_gait.cli import main as cli
        data, uri = work / "driver" / "data", f"s3://{bucket}"
        assert cli(["-q", "synth", "--out", str(data), "--ids", "6", "--train-ids", "4", "--views", "0,90",
                    "--frames", "12:16", "--no-preview"]) == 0
        s3, _ = pafs.FileSystem.from_uri(uri)
        for part in ("pose", "partition.json"):
            pafs.copy_files(str(data / part), f"{bucket}/in/{part}", source_filesystem=pafs.LocalFileSystem(),
                            destination_filesystem=s3)
        assert cli(["-q", "heatmap", "--pose_data_path", f"{uri}/in/pose", "--save_root", f"{uri}/maps",
                    "--dataset_name", "synth", "--shard-size", "8"]) == 0
        shard_nodes = {t.node_id for t in list_tasks(detail=True, limit=10_000, raise_on_missing_output=False)
                       if t.node_id and "ShardWorker" in (t.name or "")}
        task_names = sorted({t.name for t in list_tasks(limit=10_000, raise_on_missing_output=False)})

        @ray.remote(num_cpus=1)
        def where() -> tuple[str, str]:
            return ray.get_runtime_context().get_node_id(), os.getcwd()

        folders = dict(ray.get([where.remote() for _ in range(8)]))
        from ray_gait.ray_layer.trainer import run_training
        from ray_gait.config import load_config
        tree, cfg = load_config(str(ROOT / "configs" / "skeletongait" / "skeletongait_synth.yaml"), {
            "data_cfg.dataset_root": f"{uri}/maps/synth_sigma_8.0_",
            "data_cfg.dataset_partition": f"{uri}/in/partition.json", "ray_cfg.storage_path": f"{uri}/runs",
            "ray_cfg.num_workers": 2, "model_cfg.SeparateBNNecks.class_num": 4,
            "trainer_cfg.sampler.batch_size": [2, 2], "trainer_cfg.sampler.frames_num_fixed": 8,
            "trainer_cfg.total_iter": 2, "trainer_cfg.save_iter": 2, "trainer_cfg.log_iter": 1,
            "trainer_cfg.warmup_iter": 0, "trainer_cfg.enable_float16": False, "trainer_cfg.save_name": "two_nodes"})
        result = run_training(cfg, tree)
        worker_nodes = {a.node_id for a in list_actors(detail=True, limit=10_000, raise_on_missing_output=False)
                        if a.class_name == "RayTrainWorker" and a.node_id}
        manifest = json.loads(s3.open_input_stream(f"{bucket}/maps/synth_sigma_8.0_/_manifest.json").read())
        seen = {"nodes": len([n for n in ray.nodes() if n["Alive"]]), "shard_nodes": len(shard_nodes),
                "train_worker_nodes": len(worker_nodes), "node_folders": sorted(set(folders.values())),
                "task_names": task_names, "sequences": manifest["sequences"], "errors": manifest["error_count"],
                "iteration": result.metrics["iteration"], "checkpoint": result.checkpoint.path}
        (work / "seen.json").write_text(json.dumps(seen))
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
