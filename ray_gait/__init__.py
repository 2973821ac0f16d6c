"""ray_gait: SkeletonGait and SkeletonGait++ on Ray.

The public API (the names below) is importable without starting Ray; heavy modules (torch, pyarrow)
load on first use.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_heatmap_config": "ray_gait.heatmap.config",
    "HeatmapConfig": "ray_gait.heatmap.config",
    "render_heatmaps": "ray_gait.heatmap.pipeline",
    "render_heatmaps_batch": "ray_gait.heatmap.pipeline",
    "load_pose": "ray_gait.pose.io",
    "read_dataset": "ray_gait.io.dataset",
    "build_model": "ray_gait.models",
    "embed": "ray_gait.models",
    "distances": "ray_gait.evaluation.metrics",
    "rank_metrics": "ray_gait.evaluation.metrics",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Load a public name from its module on first access."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ray_gait' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    """List the public API."""
    return sorted(set(globals()) | set(_EXPORTS))
