"""Padding and normalization against definitions written as plain loops."""
from __future__ import annotations

import math

import numpy as np

from ray_gait.pose.normalize import center_and_scale, knn_impute, pad_keypoints


def _knn_by_definition(data: np.ndarray, k: int = 4) -> np.ndarray:
    """KNN imputation (nan-Euclidean, 1/d weights, exact match wins, else column mean), one cell at a time."""
    t_count, d_count = data.shape
    present = data != 0
    out = data.copy()
    for r in range(t_count):
        for c in range(d_count):
            if present[r, c] or not present[:, c].any():
                continue
            cands = []
            for t in range(t_count):
                if not present[t, c]:
                    continue
                both = present[r] & present[t]
                if not both.any():
                    continue
                dist = math.sqrt(((data[r, both] - data[t, both]) ** 2).sum() * d_count / both.sum())
                cands.append((dist, t))
            if not cands:
                out[r, c] = data[present[:, c], c].mean()
                continue
            cands.sort()
            chosen = cands[:k]
            if any(d == 0 for d, _ in chosen):
                weights = [1.0 if d == 0 else 0.0 for d, _ in chosen]
            else:
                weights = [1.0 / d for d, _ in chosen]
            out[r, c] = sum(w * data[t, c] for w, (_, t) in zip(weights, chosen)) / sum(weights)
    return out


def test_knn_impute_matches_definition():
    rng = np.random.default_rng(3)
    data = rng.uniform(10, 500, size=(25, 34))
    data[rng.random(data.shape) < 0.15] = 0.0
    data[4] = 0.0                                  # a frame with nothing
    assert np.allclose(knn_impute(data), _knn_by_definition(data), rtol=1e-9, atol=1e-9)


def test_knn_skipped_when_a_joint_is_never_seen():
    pose = np.random.default_rng(0).uniform(1, 100, size=(10, 17, 3))
    pose[:, 3, :2] = 0.0
    pose[2, 5, :2] = 0.0
    assert np.array_equal(pad_keypoints(pose, "knn"), pose)
    fixed = pad_keypoints(pose, "knn", fix_quirks=True)
    assert fixed[2, 5, 0] != 0 and np.all(fixed[:, 3, :2] == 0)


def test_simple_shifts_columns_when_only_never_seen_joints_are_missing():
    pose = np.random.default_rng(1).uniform(1, 100, size=(6, 17, 3))
    pose[:, 16, 0] = 0.0                            # one coordinate never seen
    out = pad_keypoints(pose, "simple")
    assert out[0, 16, 0] == pose[0, 16, 1] and out[0, 16, 1] == 1.0


def test_center_and_scale_puts_hips_at_centre_and_height_at_85():
    pose = np.random.default_rng(2).uniform(100, 400, size=(5, 17, 3))
    pts, valid = center_and_scale(pose, (11, 12), 128)
    assert valid.all()
    hips = (pts[:, 11] + pts[:, 12]) / 2
    assert np.allclose(hips, 64.0)
    assert np.allclose(pts[..., 1].max(1) - pts[..., 1].min(1), 85.0)
