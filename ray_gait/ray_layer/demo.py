"""`ray-gait demo`: the whole pipeline on the embedded synthetic data set, on a local Ray.

synthetic data -> heatmaps (step 1) -> pairing with silhouettes (step 2) -> SkeletonGait++
training (step 3, DDP on Ray Train) -> evaluation (cross-view Rank-1), each step resumable.
"""
from __future__ import annotations

import os
from typing import Any

from ray_gait.ray_layer.pipeline import PipelineInputs, run_pipeline
from ray_gait.synth import SynthConfig
from ray_gait.config import CONFIG_DIR

DEMO_CONFIG = os.path.join(CONFIG_DIR, "skeletongait", "skeletongait++_synth.yaml")
DEMO_IDS = 40
DEMO_ITERS = 160


def run_demo(out: str, ids: int = DEMO_IDS, total_iter: int | None = DEMO_ITERS, config: str = DEMO_CONFIG,
             overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run every step into `out`; returns the paths and the metrics.

    The defaults (40 identities, 160 iterations of 8-frame clips, bf16 evaluation) keep the whole run near 10 minutes
    on 2 CPU cores; benchmarks/accuracy.py trains longer on the 60-identity set.
    """
    inputs = PipelineInputs(synth=SynthConfig(ids=ids, train_ids=ids // 2))
    values = {"evaluator_cfg.enable_float16": True, **(overrides or {})}
    return run_pipeline(out, config, inputs, values, total_iter=total_iter)
