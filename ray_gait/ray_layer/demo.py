"""`ray-gait demo`: the whole pipeline on the embedded synthetic data set, on a local Ray.

synthetic data -> heatmaps (step 1) -> pairing with silhouettes (step 2) -> SkeletonGait++
training (step 3, DDP on Ray Train) -> evaluation (cross-view Rank-1), each step resumable.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any

from ray_gait.heatmap.config import load_heatmap_config
from ray_gait.ray_layer.evaluate import format_table, run_evaluation
from ray_gait.ray_layer.heatmap_job import run_heatmap_job
from ray_gait.ray_layer.link_job import run_link_job
from ray_gait.ray_layer.session import ensure_ray
from ray_gait.ray_layer.synth_job import run_synth_job
from ray_gait.ray_layer.trainer import run_training
from ray_gait.synth import SynthConfig
from ray_gait.training.config import CONFIG_DIR, config_from_tree
from ray_gait.yaml_config import apply_overrides, read_yaml

log = logging.getLogger(__name__)

DEMO_CONFIG = os.path.join(CONFIG_DIR, "skeletongait", "skeletongait++_synth.yaml")


DEMO_IDS = 40
DEMO_ITERS = 80


def run_demo(out: str, ids: int = DEMO_IDS, total_iter: int | None = DEMO_ITERS, config: str = DEMO_CONFIG,
             overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run every step into `out`; returns the paths and the metrics.

    The defaults (40 identities, 80 iterations, bf16 evaluation) keep the whole run near 10 minutes
    on 2 CPU cores; benchmarks/accuracy.py trains longer on the 60-identity set.
    """
    out = os.path.abspath(out)
    started = time.perf_counter()
    ensure_ray()

    def stage(n: int, text: str) -> None:
        log.info("[demo %d/5, %.0f s] %s", n, time.perf_counter() - started, text)

    stage(1, "synthetic gait data set")
    run_synth_job(os.path.join(out, "data"), SynthConfig(ids=ids, train_ids=ids // 2))
    stage(2, "heatmaps (step 1)")
    maps = run_heatmap_job(os.path.join(out, "data", "pose"), out, "synth", load_heatmap_config()).output
    stage(3, "pairing heatmaps with silhouettes (step 2)")
    run_link_job(maps, os.path.join(out, "data", "sil"), os.path.join(out, "paired"))
    stage(4, "training SkeletonGait++ on Ray Train (step 3)")
    values = {"data_cfg.dataset_root": os.path.join(out, "paired"),
              "data_cfg.dataset_partition": os.path.join(out, "data", "partition.json"),
              "data_cfg.dataset_protocol": os.path.join(out, "data", "protocol.json"),
              "ray_cfg.storage_path": os.path.join(out, "runs"),
              "model_cfg.SeparateBNNecks.class_num": ids // 2,
              "evaluator_cfg.enable_float16": True}
    if total_iter:
        values["trainer_cfg.total_iter"] = total_iter
        values["evaluator_cfg.restore_hint"] = total_iter
    values.update(overrides or {})
    tree = apply_overrides(read_yaml(config), values)
    cfg = config_from_tree(tree, source=config)
    result = run_training(cfg, tree)
    stage(5, "evaluation (cross-view Rank-1)")
    run_dir = os.path.join(out, "runs", cfg.trainer_cfg.save_name)
    metrics = run_evaluation(cfg, tree, os.path.join(run_dir, "test"), checkpoint=result.checkpoint.path)
    log.info("demo finished in %.0f s", time.perf_counter() - started)
    return {"metrics": metrics, "table": format_table(metrics), "run_dir": run_dir,
            "tensorboard": os.path.join(run_dir, "tensorboard"), "checkpoint": result.checkpoint.path,
            "seconds": time.perf_counter() - started}
