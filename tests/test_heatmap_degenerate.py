"""Degenerate input is defined: a documented output or a ValueError with the reason, never NaN."""
from __future__ import annotations

import numpy as np
import pytest

from ray_gait import load_heatmap_config, render_heatmaps


@pytest.fixture
def walk(fixture_poses):
    return fixture_poses["walk_a"].copy()


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_frame_with_every_joint_missing_is_blank(walk, backend):
    walk[[0, 5]] = 0.0
    out = render_heatmaps(walk, backend=backend)
    assert out.shape == (walk.shape[0], 2, 64, 64)
    # padding fills the coordinates, but the confidences stay 0: nothing is drawn there
    assert out[[0, 5]].max() == 0 and out[[1, 4, 6]].min(axis=(1, 2, 3)).max() == 0
    assert out[1].max() > 0 and out.dtype == np.uint8


def test_frame_missing_everywhere_with_joint_never_seen_renders_blank(walk):
    walk[:, 9] = 0.0          # a joint never detected: the reference skips padding
    walk[3] = 0.0             # and this frame stays empty: zero height -> blank
    out = render_heatmaps(walk)
    assert out[3].max() == 0
    assert out[2].max() > 0


def test_zero_pose_height_is_blank(walk):
    walk[4, :, 1] = 300.0     # every joint on one row
    out = render_heatmaps(walk, load_heatmap_config(overrides={"padkeypoints_args.fix_quirks": True}))
    assert out[4].max() == 0 and out[5].max() > 0


@pytest.mark.parametrize("make, message", [
    (lambda w: w[:0], "T = 0"),
    (lambda w: w[:, :16], "17 joints"),
    (lambda w: w[..., :2], r"\(T, V, 3\)"),
    (lambda w: w.astype(object), "numeric"),
    (lambda w: w.astype(np.complex64), "numeric"),
    (lambda w: np.where(np.arange(3) == 0, np.nan, w), "non-finite"),
    (lambda w: np.where(np.arange(3) == 1, np.inf, w), "non-finite"),
    (lambda w: np.zeros_like(w), "no valid frame"),
    (lambda w: list(w), "numpy array"),
])
def test_invalid_input_is_rejected_with_reason(walk, make, message):
    with pytest.raises(ValueError, match=message):
        render_heatmaps(make(walk))


def test_transfer_needs_18_joints(walk):
    with pytest.raises(ValueError, match="18 joints"):
        render_heatmaps(walk, load_heatmap_config(overrides={"coco18tococo17_args.transfer_to_coco17": True}))


def test_integer_poses_are_accepted(walk):
    out = render_heatmaps(np.round(walk * [1, 1, 100]).astype(np.int32),
                          load_heatmap_config(overrides={"padkeypoints_args.use_conf": False}))
    assert out.max() > 0


def test_use_conf_false_draws_peaks_of_one(walk):
    low = walk.copy()
    low[..., 2] = np.where(low[..., 2] > 0, 0.3, 0.0)
    with_conf = render_heatmaps(low)
    without = render_heatmaps(low, load_heatmap_config(overrides={"padkeypoints_args.use_conf": False}))
    assert without[:, 1].max() >= 250 and with_conf[:, 1].max() < 100


def test_offset_near_top_edge_does_not_crash(fixture_poses):
    out = render_heatmaps(fixture_poses["walk_noisy"], load_heatmap_config(overrides={"align_args.offset": 2}))
    assert out.shape == (fixture_poses["walk_noisy"].shape[0], 2, 64, 64)


def test_fix_quirks_fills_joint_missing_everywhere(walk):
    walk[:, 15] = 0.0
    walk[7, :] = 0.0
    fixed = render_heatmaps(walk, load_heatmap_config(overrides={"padkeypoints_args.fix_quirks": True}))
    quirky = render_heatmaps(walk)
    # the reference skips padding (joint 15 never seen) and centres on the (0, 0) joints; fixed
    # padding fills and ignores them, so the person keeps its scale; confidences 0 stay undrawn
    assert fixed[7].max() == 0 and fixed[6].max() > 0
    assert not np.array_equal(fixed, quirky)
