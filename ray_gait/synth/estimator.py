"""An imperfect 2D pose estimator: turns true projected joints into COCO-17 detections.

Error model (per sequence, all drawn from the generator handed in):
- pixel noise proportional to the person's height in pixels: white plus a temporally correlated
  (AR(1)) part, larger for wrists, ankles and hips, and larger for self-occluded joints;
- confidence around 0.85 for visible joints and about 0.45 for self-occluded ones;
- missing joints (x = y = conf = 0): about 1 % of visible and 12 % of occluded joints, and every
  joint that falls outside the image;
- rare left/right swaps (legs only, or the whole body) lasting one to three frames, more frequent
  in side views where the legs overlap;
- dropped frames: the whole frame is zeros (the silhouette of that frame is kept).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ray_gait.synth.kinematics import LEFT, RIGHT

__all__ = ["EstimatorModel", "occlusion", "estimate_pose"]

# Relative noise of each COCO-17 joint (face keypoints are the easiest, hips the hardest).
_JOINT_NOISE = np.array([0.7, 0.7, 0.7, 0.9, 0.9, 1.0, 1.0, 1.2, 1.2, 1.4, 1.4, 1.5, 1.5, 1.2, 1.2, 1.3, 1.3])
# Confidence penalty of each joint when visible.
_JOINT_CONF = np.array([0.0, 0.02, 0.02, 0.08, 0.08, 0.0, 0.0, 0.05, 0.05, 0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.08, 0.08])
_LEG_PAIRS = ((11, 12), (13, 14), (15, 16))


@dataclass(frozen=True)
class EstimatorModel:
    """Rates and magnitudes of the estimator's errors."""

    noise: float = 0.007
    correlated_noise: float = 0.006
    correlation: float = 0.75
    occluded_gain: float = 2.5
    conf_visible: float = 0.87
    conf_occluded: float = 0.45
    conf_spread: float = 0.06
    missing_visible: float = 0.01
    missing_occluded: float = 0.12
    swap_legs: float = 0.006
    swap_legs_side: float = 0.012
    swap_all: float = 0.002
    drop: float = 0.012


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance from points ``(T, J, 1, 2)`` to segments ``(T, 1, C, 2)`` and the segment parameter."""
    ab = b - a
    denom = np.maximum((ab * ab).sum(-1), 1e-9)
    t = np.clip(((p - a) * ab).sum(-1) / denom, 0.0, 1.0)
    closest = a + t[..., None] * ab
    return np.linalg.norm(p - closest, axis=-1), t


def occlusion(
    uv: np.ndarray,
    depth: np.ndarray,
    cap_uv: np.ndarray,
    cap_depth: np.ndarray,
    cap_radius_px: np.ndarray,
    cap_radius_m: np.ndarray,
    incident: np.ndarray,
) -> np.ndarray:
    """Degree (0..1) to which each joint is hidden behind a body part.

    Shapes: joints ``uv (T, J, 2)``, ``depth (T, J)``; body parts as capsules ``cap_uv (T, C, 2, 2)``,
    ``cap_depth (T, C, 2)``, ``cap_radius_px (T, C)``, ``cap_radius_m (C,)``; ``incident (J, C)`` marks
    the parts a joint belongs to (never its own occluder). A joint is hidden when its image
    position lies inside a capsule and it is farther from the camera than that capsule's axis.
    """
    dist, t = _segment_distance(uv[:, :, None], cap_uv[:, None, :, 0], cap_uv[:, None, :, 1])
    axis_depth = cap_depth[:, None, :, 0] + t * (cap_depth[:, None, :, 1] - cap_depth[:, None, :, 0])
    inside = np.clip((cap_radius_px[:, None] - dist) / (0.3 * cap_radius_px[:, None] + 1e-6), 0.0, 1.0)
    behind = np.clip((depth[..., None] - axis_depth - 0.15 * cap_radius_m) / (0.3 * cap_radius_m), 0.0, 1.0)
    hidden = np.where(incident[None], 0.0, inside * behind)
    return hidden.max(axis=-1)


def _ar1(rng: np.random.Generator, shape: tuple[int, ...], rho: float) -> np.ndarray:
    """Stationary unit-variance AR(1) noise along axis 0."""
    white = rng.normal(size=shape).reshape(shape[0], -1)
    lag = np.subtract.outer(np.arange(shape[0]), np.arange(shape[0]))
    weights = np.where(lag >= 0, rho ** np.maximum(lag, 0), 0.0)
    weights[:, 1:] *= np.sqrt(1.0 - rho * rho)
    return (weights @ white).reshape(shape)


def _events(rng: np.random.Generator, n: int, rate: float) -> np.ndarray:
    """Boolean mask of frames covered by events that start at ``rate`` and last 1-3 frames."""
    mask = np.zeros(n, dtype=bool)
    for start in np.flatnonzero(rng.random(n) < rate):
        mask[start:start + int(rng.integers(1, 4))] = True
    return mask


def estimate_pose(
    rng: np.random.Generator,
    uv: np.ndarray,
    hidden: np.ndarray,
    person_px: float,
    image_size: tuple[int, int],
    side_view: float,
    model: EstimatorModel = EstimatorModel(),
) -> np.ndarray:
    """Noisy COCO-17 detections ``(T, 17, 3)`` float32 from true pixel positions ``uv (T, 17, 2)``.

    ``hidden (T, 17)`` is the occlusion degree, ``person_px`` the person's height in pixels,
    ``side_view`` in [0, 1] how much the legs overlap (|sin| of the view angle).
    """
    n, j = uv.shape[:2]
    sigma = person_px * _JOINT_NOISE[None, :, None] * (1.0 + (model.occluded_gain - 1.0) * hidden[..., None])
    noise = model.noise * rng.normal(size=(n, j, 2)) + model.correlated_noise * _ar1(rng, (n, j, 2), model.correlation)
    xy = uv + sigma * noise
    conf = (
        model.conf_visible - _JOINT_CONF[None]
        + (model.conf_occluded - model.conf_visible) * hidden
        + model.conf_spread * rng.normal(size=(n, j))
    )
    conf = np.clip(conf, 0.05, 0.99)
    pose = np.concatenate([xy, conf[..., None]], axis=-1)

    legs = _events(rng, n, model.swap_legs + model.swap_legs_side * side_view)
    whole = _events(rng, n, model.swap_all)
    left_legs = [a for a, _ in _LEG_PAIRS]
    right_legs = [b for _, b in _LEG_PAIRS]
    pose[np.ix_(legs, left_legs + right_legs)] = pose[np.ix_(legs, right_legs + left_legs)]
    pose[np.ix_(whole, list(LEFT + RIGHT))] = pose[np.ix_(whole, list(RIGHT + LEFT))]

    p_missing = model.missing_visible + (model.missing_occluded - model.missing_visible) * hidden
    width, height = image_size
    x, y = pose[..., 0], pose[..., 1]
    outside = (x < 0) | (x >= width) | (y < 0) | (y >= height)
    missing = (rng.random((n, j)) < p_missing) | outside
    pose[missing] = 0.0
    pose[rng.random(n) < model.drop] = 0.0
    return pose.astype(np.float32)
