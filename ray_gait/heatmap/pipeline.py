"""Step 1 for one sequence: pose (T, V, 3) -> skeleton maps (T, 2, S, S) uint8 (limbs, joints).

Defined behaviour for degenerate input:
- T = 0, fewer than 17 joints (or other than 18 with `transfer_to_coco17`), a last axis other than 3,
  a non-numeric dtype, NaN or inf: `ValueError` with the reason (the job records it in errors.jsonl).
- more than 17 joints without `transfer_to_coco17` (e.g. COCO-18 or BODY-25 with `pose_format:
  openpose-*`): rendered as the reference does, every joint in the joint map and the limbs of the
  COCO-17 skeleton by index.
- no joint detected in any frame (every coordinate 0): `ValueError("no valid frame ...")`.
- a frame with every joint missing, or zero pose height: a blank (all-zero) frame; the sequence
  keeps its length so that it stays aligned with its silhouettes.
Output never contains NaN: it is uint8 by construction.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ray_gait.heatmap import fast
from ray_gait.heatmap.align import align_maps
from ray_gait.heatmap.config import HeatmapConfig, load_heatmap_config
from ray_gait.heatmap.render import ArrayOps, render_maps
from ray_gait.pose.normalize import center_and_scale, pad_keypoints
from ray_gait.pose.skeleton import HIP_JOINTS, coco18_to_coco17

BACKENDS = ("auto", "c", "numpy", "torch")


def validate_pose(pose: Any, config: HeatmapConfig) -> np.ndarray:
    """Check one sequence and return it as float64 (T, V, 3); raises ValueError with the reason."""
    if not isinstance(pose, np.ndarray):
        raise ValueError(f"pose must be a numpy array, got {type(pose).__name__}")
    if pose.dtype.kind not in "fiu":
        raise ValueError(f"pose must be numeric, got dtype {pose.dtype}")
    if pose.ndim != 3 or pose.shape[2] != 3:
        raise ValueError(f"pose must be (T, V, 3) = x, y, confidence; got shape {pose.shape}")
    if pose.shape[0] == 0:
        raise ValueError("empty sequence (T = 0)")
    joints = pose.shape[1]
    if config.coco18tococo17_args.transfer_to_coco17 and joints != 18:
        raise ValueError(f"transfer_to_coco17 needs COCO-18 poses (18 joints), got {joints}")
    if joints < 17:
        raise ValueError(f"expected 17 joints (COCO-17) or 18 (COCO-18 with transfer_to_coco17), got {joints}")
    pose = pose.astype(np.float64)
    bad = ~np.isfinite(pose)
    if bad.any():
        frame, joint, _ = np.argwhere(bad)[0]
        raise ValueError(f"non-finite value (NaN or inf) at frame {frame}, joint {joint}")
    if not (pose[..., :2] != 0).any():
        raise ValueError("no valid frame: no joint was detected in any frame")
    return pose


def normalize_pose(pose: np.ndarray, config: HeatmapConfig) -> tuple[np.ndarray, np.ndarray]:
    """COCO-18 -> 17, padding and normalization: (T, 17, 2) map coordinates and (T, 17) peak values."""
    if config.coco18tococo17_args.transfer_to_coco17:
        pose = coco18_to_coco17(pose)
    pad = config.padkeypoints_args
    detected = (pose[..., :2] != 0).any(axis=2)
    pose = pad_keypoints(pose, pad.pad_method, pad.fix_quirks)
    hips = HIP_JOINTS[config.norm_args.pose_format]
    pts, valid = center_and_scale(pose, hips, config.norm_args.heatmap_image_height, pad.fix_quirks)
    values = pose[..., 2].copy() if config.use_confidence else np.ones(pose.shape[:2])
    if pad.fix_quirks:
        values[~((pose[..., :2] != 0).any(axis=2))] = 0.0
    values[~valid] = 0.0
    del detected
    return pts, values


def _ops(backend: str, device: Any, precision: str) -> ArrayOps:
    if precision not in ("float64", "float32"):
        raise ValueError(f"unknown precision {precision!r}: use float64 or float32")
    if backend == "numpy":
        return ArrayOps(np, precision=precision)
    if backend == "torch":
        import torch
        return ArrayOps(torch, torch.device(device or "cpu"), precision)
    raise ValueError(f"unknown backend {backend!r}: use one of {', '.join(BACKENDS)}")


def render_heatmaps(pose: np.ndarray, config: HeatmapConfig | None = None, backend: str = "auto",
                    device: Any = None, precision: str = "float32") -> np.ndarray:
    """One sequence (T, V, 3) -> uint8 (T, 2, S, S), channel 0 limbs, channel 1 joints.

    Backends: `c` the compiled kernel (ray_gait/heatmap/_kernel.c, built at install when a C
    compiler is there), `numpy` and `torch` (CPU or CUDA `device`) the vectorized renderer, in
    `precision` (float32 by default: 2-3x faster than float64, the reference's arithmetic, and as
    close to the reference on its outputs; see tests/test_heatmap_parity.py); `auto` = `c` when
    built, else `numpy`.
    """
    config = config or load_heatmap_config()
    pose = validate_pose(pose, config)
    pts, values = normalize_pose(pose, config)
    gen, align = config.heatmap_generator_args, config.align_args
    if backend == "auto":
        backend = "c" if fast.available() else "numpy"
    rows = None
    if backend == "c":
        maps, rows = fast.render_maps_with_rows(pts, values, gen.sigma, gen.img_h, gen.img_w, gen.eps)
    else:
        ops = _ops(backend, device, precision)
        maps = render_maps(ops, ops.asarray(pts), ops.asarray(values), gen.sigma, gen.img_h, gen.img_w, gen.eps)
        if ops.on_gpu:
            return _align_on_device(maps, config).cpu().numpy()
        if ops.is_torch:
            maps = maps.cpu().numpy()
    return align_maps(maps, align.final_img_size, align.offset, align.heatmap_image_size // 2, align.align, rows)


def _align_on_device(maps: Any, config: HeatmapConfig) -> Any:
    """Crop and resize torch maps where they are (align_torch.py), e.g. on the GPU that drew them."""
    from ray_gait.heatmap.align_torch import align_maps_torch
    align = config.align_args
    return align_maps_torch(maps, align.final_img_size, align.offset, align.heatmap_image_size // 2, align.align)


def render_heatmaps_batch(poses: Sequence[np.ndarray], config: HeatmapConfig | None = None, device: Any = "cuda",
                          precision: str = "float32") -> list[np.ndarray]:
    """Many sequences in one pass of the torch renderer on `device`: a GPU wants thousands of frames per call.

    Each sequence is checked and normalized on the CPU as in `render_heatmaps`; all their frames are
    then drawn and aligned together on the device.  Returns one uint8 (T, 2, S, S) per sequence: on a
    GPU the maps `render_heatmaps(pose, config, "torch", device)` gives; on the CPU, where that aligns
    with OpenCV, the same within 1 gray level (about 1 pixel in a million differs).  A bad sequence
    raises ValueError naming its index.
    """
    config = config or load_heatmap_config()
    parts = []
    for index, pose in enumerate(poses):
        try:
            parts.append(normalize_pose(validate_pose(pose, config), config))
        except ValueError as exc:
            raise ValueError(f"sequence {index}: {exc}") from exc
    if not parts:
        return []
    gen = config.heatmap_generator_args
    ops = _ops("torch", device, precision)
    pts = ops.asarray(np.concatenate([p for p, _ in parts]))
    values = ops.asarray(np.concatenate([v for _, v in parts]))
    maps = render_maps(ops, pts, values, gen.sigma, gen.img_h, gen.img_w, gen.eps)
    aligned = _align_on_device(maps, config).cpu().numpy()
    ends = np.cumsum([len(p) for p, _ in parts])[:-1]
    return np.split(aligned, ends)
