"""Skeleton maps of the frames a sampler picked, drawn during training instead of read from step 1.

Step 1 (`pipeline.render_heatmaps`) works in two parts.  Validation and padding look across the
whole sequence (the KNN imputer takes its donors from other frames, the "no valid frame" check
looks at every frame), so `prepare_pose` runs them, and the per-frame centring and scaling, on
the whole sequence, once per sequence.  Drawing and alignment are per frame, so `render_frames`
runs them on the selected frames only, in any leading shape: for any frame indices `idx`,

    pts, values = prepare_pose(pose, config)
    render_frames(pts[idx], values[idx], config) == render_heatmaps(pose, config)[idx]

exactly on the CPU (tests/test_heatmap_on_the_fly.py).  Rendering `pose[idx]` instead would not be
the same: padding would draw on other donor frames.
"""
from __future__ import annotations

import numpy as np

from ray_gait.heatmap import fast
from ray_gait.heatmap.align import align_maps
from ray_gait.heatmap.config import HeatmapConfig
from ray_gait.heatmap.pipeline import _align_on_device, _ops, normalize_pose, validate_pose
from ray_gait.heatmap.render import render_maps

# What `render_heatmaps` uses by default for its numpy and torch renderers.
PRECISION = "float32"


def prepare_pose(pose: np.ndarray, config: HeatmapConfig) -> tuple[np.ndarray, np.ndarray]:
    """Validate, pad and normalize a whole sequence (T, V, 3): float64 pts (T, V, 2), values (T, V); V = 17 for COCO."""
    pts, values = normalize_pose(validate_pose(pose, config), config)
    return np.ascontiguousarray(pts, dtype=np.float64), np.ascontiguousarray(values, dtype=np.float64)


def _check_shapes(pts: np.ndarray, values: np.ndarray) -> None:
    if pts.ndim < 2 or pts.shape[-1] != 2:
        raise ValueError(f"pts must be (..., V, 2), got shape {pts.shape}")
    if values.shape != pts.shape[:-1]:
        raise ValueError(f"values must be (..., V) = {pts.shape[:-1]}, got shape {values.shape}")


def _render_cpu(pts: np.ndarray, values: np.ndarray, config: HeatmapConfig) -> np.ndarray:
    """(N, V, 2), (N, V) -> uint8 (N, 2, S, S) as `render_heatmaps` draws with its `auto` backend."""
    gen, align = config.heatmap_generator_args, config.align_args
    rows = None
    if fast.available():
        maps, rows = fast.render_maps_with_rows(pts, values, gen.sigma, gen.img_h, gen.img_w, gen.eps)
    else:
        fast.warn_numpy_fallback()
        ops = _ops("numpy", None, PRECISION)
        maps = render_maps(ops, ops.asarray(pts), ops.asarray(values), gen.sigma, gen.img_h, gen.img_w, gen.eps)
    return align_maps(maps, align.final_img_size, align.offset, align.heatmap_image_size // 2, align.align, rows)


def _render_device(pts: np.ndarray, values: np.ndarray, config: HeatmapConfig, device: str) -> np.ndarray:
    """(N, V, 2), (N, V) -> uint8 (N, 2, S, S): drawn and aligned on `device` in one call, as
    `render_heatmaps_batch` does."""
    gen = config.heatmap_generator_args
    ops = _ops("torch", device, PRECISION)
    maps = render_maps(ops, ops.asarray(pts), ops.asarray(values), gen.sigma, gen.img_h, gen.img_w, gen.eps)
    return _align_on_device(maps, config).cpu().numpy()


def render_frames(pts: np.ndarray, values: np.ndarray, config: HeatmapConfig,
                  device: str | None = None) -> np.ndarray:
    """Maps of prepared frames: pts (..., V, 2), values (..., V) -> uint8 (..., 2, S, S), on the CPU or `device`."""
    pts, values = np.asarray(pts), np.asarray(values)
    _check_shapes(pts, values)
    lead, joints = pts.shape[:-2], pts.shape[-2]
    size = config.align_args.final_img_size
    out_shape = (*lead, 2, size, size)
    count = int(np.prod(lead, dtype=np.int64))
    if count == 0:
        return np.empty(out_shape, dtype=np.uint8)
    flat_pts = np.ascontiguousarray(pts.reshape(count, joints, 2), dtype=np.float64)
    flat_values = np.ascontiguousarray(values.reshape(count, joints), dtype=np.float64)
    if device is None or device == "cpu":
        maps = _render_cpu(flat_pts, flat_values, config)
    else:
        maps = _render_device(flat_pts, flat_values, config, device)
    return maps.reshape(out_shape)
