"""The whole pipeline as one job: (synthetic or real poses) -> heatmaps -> pairing -> training -> evaluation.

Each step is resumable, so a rerun of the same command picks up where a stopped one ended.  `ray-gait
demo` is this pipeline on the embedded synthetic data set with CPU-sized defaults.
"""
from __future__ import annotations

import logging
import posixpath
import time
from dataclasses import dataclass, field
from typing import Any

from ray_gait.heatmap.config import load_heatmap_config
from ray_gait.io import fs
from ray_gait.ray_layer.evaluate import format_table, run_evaluation
from ray_gait.ray_layer.heatmap_job import run_heatmap_job
from ray_gait.ray_layer.link_job import run_link_job
from ray_gait.ray_layer.session import ensure_ray
from ray_gait.ray_layer.synth_job import run_synth_job
from ray_gait.data.split import partition_splits
from ray_gait.ray_layer.trainer import result_checkpoint, run_folder, run_training
from ray_gait.synth import SynthConfig
from ray_gait.config import config_from_tree
from ray_gait.models import needs_silhouettes
from ray_gait.yaml_config import apply_overrides, read_yaml

log = logging.getLogger(__name__)

STEPS = 5


@dataclass
class PipelineInputs:
    """Where the poses come from: a pose tree (real data) or the synthetic generator (`synth`)."""

    pose_data_path: str | None = None
    silhouette_data_path: str | None = None
    dataset_partition: str | None = None
    dataset_protocol: str | None = None
    dataset_name: str = "synth"
    synth: SynthConfig | None = None
    heatmap_cfg_path: str | None = None
    heatmap_overrides: dict[str, Any] = field(default_factory=dict)


def run_pipeline(out: str, config: str, inputs: PipelineInputs, overrides: dict[str, Any] | None = None,
                 total_iter: int | None = None) -> dict[str, Any]:
    """Run every step into `out` (data/, maps, paired/, runs/); returns the paths and the metrics."""
    root = fs.resolve(fs.absolute(out))
    started = time.perf_counter()
    ensure_ray(shared={"--out": root.uri})
    tree = read_yaml(config)
    model = tree.get("model_cfg", {}).get("model", "")
    wants_silhouettes = needs_silhouettes(model, tree.get("data_cfg", {}).get("data_in_use"))

    def stage(n: int, text: str) -> None:
        log.info("[pipeline %d/%d, %.0f s] %s", n, STEPS, time.perf_counter() - started, text)

    pose, sil = inputs.pose_data_path, inputs.silhouette_data_path
    partition, protocol = inputs.dataset_partition, inputs.dataset_protocol
    if pose is None:
        if inputs.synth is None:
            raise ValueError("the pipeline needs a pose_data_path or a synthetic data set")
        stage(1, "synthetic gait data set")
        data = root.join("data")
        run_synth_job(data.uri, inputs.synth)
        pose, sil = data.join("pose").uri, data.join("sil").uri
        partition, protocol = data.join("partition.json").uri, data.join("protocol.json").uri
    else:
        stage(1, f"poses from {pose}")
    if not partition:
        raise ValueError("a real data set needs its partition JSON (--dataset_partition)")
    stage(2, "heatmaps (step 1)")
    heatmap_cfg = load_heatmap_config(inputs.heatmap_cfg_path, inputs.heatmap_overrides)
    dataset = run_heatmap_job(pose, root.join("maps").uri, inputs.dataset_name, heatmap_cfg).output
    if wants_silhouettes:
        if not sil:
            raise ValueError(f"{model} needs silhouettes: give --silhouette_data_path")
        stage(3, "pairing heatmaps with silhouettes (step 2)")
        dataset = run_link_job(dataset, sil, root.join("paired").uri).output
    else:
        stage(3, f"pairing skipped ({model} reads heatmaps only)")
    stage(4, f"training {model} on Ray Train (step 3)")
    values: dict[str, Any] = {"data_cfg.dataset_root": dataset, "data_cfg.dataset_partition": partition,
                              "ray_cfg.storage_path": root.join("runs").uri}
    if protocol:
        values["data_cfg.dataset_protocol"] = protocol
    if total_iter:
        values["trainer_cfg.total_iter"] = total_iter
        values["evaluator_cfg.restore_hint"] = total_iter
    values.update(overrides or {})
    tree = apply_overrides(tree, values)
    cfg = config_from_tree(tree, source=config)
    class_num = "model_cfg.SeparateBNNecks.class_num"
    if inputs.synth is not None and inputs.pose_data_path is None and class_num not in (overrides or {}):
        tree = apply_overrides(tree, {class_num: len(partition_splits(cfg)["TRAIN_SET"])})
        cfg = config_from_tree(tree, source=config)
    result = run_training(cfg, tree)
    stage(5, "evaluation")
    run_dir = run_folder(cfg)
    checkpoint = result_checkpoint(cfg, result)
    metrics = run_evaluation(cfg, tree, posixpath.join(run_dir, "test"), checkpoint=checkpoint)
    log.info("pipeline finished in %.0f s", time.perf_counter() - started)
    return {"metrics": metrics, "table": format_table(metrics), "run_dir": run_dir,
            "tensorboard": posixpath.join(run_dir, "tensorboard"), "checkpoint": checkpoint,
            "seconds": time.perf_counter() - started}
