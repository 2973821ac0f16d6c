"""Alignment on the renderer's device (align_torch.py) against OpenCV's, and the batched renderer."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from ray_gait import load_heatmap_config, render_heatmaps, render_heatmaps_batch
from ray_gait.heatmap.align import align_maps
from ray_gait.heatmap.align_torch import align_maps_torch
from ray_gait.heatmap.resize import resize_area


def test_weights_reproduce_cv2_inter_area_for_every_source_size():
    rng = np.random.default_rng(0)
    sizes = [(h, int(rng.integers(1, 129))) for h in range(1, 129)]
    sizes += [(int(rng.integers(1, 129)), w) for w in range(1, 129)]
    sizes += [(64, 64), (128, 128), (128, 64), (64, 128), (1, 1), (63, 200), (200, 63), (192, 130)]
    for rows, cols in sizes:
        image = rng.random((rows, cols))
        expected = cv2.resize(image, (64, 64), interpolation=cv2.INTER_AREA)
        assert np.abs(resize_area(image, 64) - expected).max() < 1e-12, (rows, cols)


def _blob_maps(frames: int, seed: int) -> np.ndarray:
    """uint8 (T, 2, 128, 128) maps with rectangles of random size and content, and blank images."""
    rng = np.random.default_rng(seed)
    maps = np.zeros((frames, 2, 128, 128), dtype=np.uint8)
    for t in range(frames):
        for c in range(2):
            if rng.random() < 0.1:
                continue
            h, w = int(rng.integers(1, 129)), int(rng.integers(1, 129))
            top, left = int(rng.integers(0, 129 - h)), int(rng.integers(0, 129 - w))
            maps[t, c, top:top + h, left:left + w] = rng.integers(0, 256, (h, w), dtype=np.uint8)
    return maps


def _same(ours: np.ndarray, theirs: np.ndarray) -> float:
    diff = np.abs(ours.astype(np.int16) - theirs.astype(np.int16))
    assert diff.max() <= 1
    return float((diff == 0).mean())


@pytest.mark.parametrize("offset,align", [(0, True), (3, True), (0, False)])
def test_torch_alignment_matches_opencv(offset, align):
    maps = _blob_maps(48, seed=offset)
    expected = align_maps(maps, 64, offset, 64, align)
    ours = align_maps_torch(torch.as_tensor(maps), 64, offset, 64, align).numpy()
    assert ours.shape == expected.shape and ours.dtype == np.uint8
    assert _same(ours, expected) >= 0.9999


def test_torch_alignment_of_rendered_maps_is_nearly_identical(fixture_poses):
    config = load_heatmap_config()
    for key in ("walk_a", "walk_noisy", "walk_far"):
        maps = render_heatmaps(fixture_poses[key], load_heatmap_config(overrides={"align_args.align": False,
                                                                                  "align_args.final_img_size": 128}))
        expected = align_maps(maps, 64, 0, 64, True)
        ours = align_maps_torch(torch.as_tensor(maps), 64, 0, 64, True).numpy()
        assert _same(ours, expected) >= 0.99999, key
        assert _same(ours, render_heatmaps(fixture_poses[key], config)) >= 0.99999, key


def test_batch_renders_each_sequence_like_one_call(fixture_poses):
    config = load_heatmap_config(overrides={"heatmap_generator_args.sigma": 4.0})
    keys = ["walk_a", "walk_noisy", "walk_far"]
    batch = render_heatmaps_batch([fixture_poses[k] for k in keys], config, device="cpu")
    assert len(batch) == len(keys)
    for key, maps in zip(keys, batch):
        single = render_heatmaps(fixture_poses[key], config, backend="torch", device="cpu")
        assert maps.shape == single.shape and maps.dtype == np.uint8
        assert _same(maps, single) >= 0.9999
    assert render_heatmaps_batch([], config, device="cpu") == []


def test_batch_names_a_bad_sequence(fixture_poses):
    with pytest.raises(ValueError, match="sequence 1: .*NaN"):
        bad = fixture_poses["walk_a"].copy()
        bad[2, 3, 0] = np.nan
        render_heatmaps_batch([fixture_poses["walk_a"], bad], device="cpu")


@pytest.mark.gpu
def test_cuda_batch_matches_cpu(fixture_poses):
    config = load_heatmap_config()
    keys = ["walk_a", "walk_noisy", "walk_far"]
    batch = render_heatmaps_batch([fixture_poses[k] for k in keys], config, device="cuda")
    for key, maps in zip(keys, batch):
        assert _same(maps, render_heatmaps(fixture_poses[key], config, backend="numpy")) >= 0.999
