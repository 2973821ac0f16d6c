"""Run by tests/test_two_nodes.py in its own process: a simulated 2-node cluster (ray.cluster_utils.Cluster),
heatmaps with Ray Data and a 2-worker training across both nodes, storage on one shared path.

    python tests/two_node_run.py WORKDIR   -> writes WORKDIR/seen.json, what it saw

(a file, not stdout: Ray's own log lines reach stdout too, in any order)
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(work: Path) -> None:
    """Start head (1 CPU) + worker node (1 CPU), run step 1 and step 3 on them, write a JSON summary."""
    import ray
    from ray.cluster_utils import Cluster
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    os.environ["RAY_ADDRESS"] = cluster.address
    try:
        import ray.data
        ray.data.DataContext.get_current().enable_progress_bars = False
        from ray_gait.cli import main as cli
        data, maps, runs = work / "data", work / "maps", work / "shared_storage"
        assert cli(["-q", "synth", "--out", str(data), "--ids", "6", "--train-ids", "4", "--views", "0,90",
                    "--frames", "12:16", "--no-preview"]) == 0
        assert cli(["-q", "heatmap", "--pose_data_path", str(data / "pose"), "--save_root", str(maps),
                    "--dataset_name", "synth", "--shard-size", "8"]) == 0

        @ray.remote(num_cpus=1)
        def where() -> str:
            return ray.get_runtime_context().get_node_id()

        nodes_used = set(ray.get([where.remote() for _ in range(8)]))
        from ray_gait.ray_layer.trainer import run_training
        from ray_gait.training.config import config_from_tree
        from ray_gait.yaml_config import apply_overrides, read_yaml
        source = str(ROOT / "configs" / "skeletongait" / "skeletongait_synth.yaml")
        tree = apply_overrides(read_yaml(source), {
            "data_cfg.dataset_root": str(maps / "synth_sigma_8.0_"),
            "data_cfg.dataset_partition": str(data / "partition.json"), "ray_cfg.storage_path": str(runs),
            "ray_cfg.num_workers": 2, "model_cfg.SeparateBNNecks.class_num": 4,
            "trainer_cfg.sampler.batch_size": [2, 2], "trainer_cfg.sampler.frames_num_fixed": 8,
            "trainer_cfg.total_iter": 2, "trainer_cfg.save_iter": 2, "trainer_cfg.log_iter": 1,
            "trainer_cfg.warmup_iter": 0, "trainer_cfg.enable_float16": False, "trainer_cfg.save_name": "two_nodes"})
        result = run_training(config_from_tree(tree, source), tree)
        manifest = json.loads((maps / "synth_sigma_8.0_" / "_manifest.json").read_text())
        seen = {"nodes": len([n for n in ray.nodes() if n["Alive"]]), "task_nodes": len(nodes_used),
                "sequences": manifest["sequences"], "errors": manifest["error_count"],
                "iteration": result.metrics["iteration"], "checkpoint": result.checkpoint.path}
        (work / "seen.json").write_text(json.dumps(seen))
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
