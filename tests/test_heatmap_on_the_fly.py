"""On-the-fly rendering (heatmap/on_the_fly.py) gives exactly step 1's maps at the selected frames."""
from __future__ import annotations

import numpy as np
import pytest

from ray_gait.heatmap import fast
from ray_gait.heatmap import on_the_fly
from ray_gait.heatmap.config import load_heatmap_config
from ray_gait.heatmap.on_the_fly import prepare_pose, render_frames
from ray_gait.heatmap.pipeline import render_heatmaps

from conftest import write_pose_tree

COCO17 = ["walk_a", "walk_b", "walk_far", "walk_noisy", "joint_always_missing", "one_frame"]
COCO18 = ["coco18_a", "coco18_b"]
CONFIGS = {
    "default": ({}, COCO17),
    "sigma4": ({"heatmap_generator_args.sigma": 4.0}, COCO17),
    "offset2": ({"align_args.offset": 2}, COCO17),
    "no_align": ({"align_args.align": False}, COCO17),
    "pad_simple": ({"padkeypoints_args.pad_method": "simple"}, COCO17),
    "fix_quirks": ({"padkeypoints_args.fix_quirks": True}, COCO17),
    "coco18_to_17": ({"coco18tococo17_args.transfer_to_coco17": True}, COCO18),
}


def _subsets(rng: np.random.Generator, frames: int) -> list[np.ndarray]:
    """Index sets a sampler may pick: random, sorted run, repeated and unordered, one frame, all frames reversed."""
    start = int(rng.integers(0, frames))
    return [
        rng.choice(frames, size=min(frames, 7), replace=False),
        np.arange(start, min(frames, start + 8)),
        rng.integers(0, frames, size=2 * frames + 3),
        np.array([frames - 1, 0, frames - 1, frames // 2, 0]),
        np.array([int(rng.integers(0, frames))]),
        np.arange(frames)[::-1],
    ]


@pytest.mark.parametrize("name", list(CONFIGS))
def test_selected_frames_equal_full_render(fixture_poses, name):
    overrides, keys = CONFIGS[name]
    config = load_heatmap_config(overrides=overrides)
    rng = np.random.default_rng(len(name))
    for key in keys:
        pose = fixture_poses[key]
        full = render_heatmaps(pose, config)
        pts, values = prepare_pose(pose, config)
        assert pts.dtype == values.dtype == np.float64
        assert pts.shape == (len(pose), 17, 2) and values.shape == (len(pose), 17)
        for idx in _subsets(rng, len(pose)):
            ours = render_frames(pts[idx], values[idx], config)
            assert ours.dtype == np.uint8 and ours.shape == (len(idx), 2, 64, 64)
            assert np.array_equal(ours, full[idx]), (key, idx)


def test_batch_of_sequences_any_leading_shape(fixture_poses):
    config = load_heatmap_config(overrides={"heatmap_generator_args.sigma": 4.0})
    rng = np.random.default_rng(3)
    n, s = 5, 6
    keys = [COCO17[i % 4] for i in range(n)]
    fulls = {key: render_heatmaps(fixture_poses[key], config) for key in set(keys)}
    prepared = {key: prepare_pose(fixture_poses[key], config) for key in set(keys)}
    picks = [rng.integers(0, len(fixture_poses[key]), size=s) for key in keys]
    pts = np.stack([prepared[key][0][idx] for key, idx in zip(keys, picks)])
    values = np.stack([prepared[key][1][idx] for key, idx in zip(keys, picks)])
    expected = np.stack([fulls[key][idx] for key, idx in zip(keys, picks)])
    batch = render_frames(pts, values, config)
    assert batch.shape == (n, s, 2, 64, 64)
    assert np.array_equal(batch, expected)
    packed = render_frames(pts.reshape(1, n * s, 17, 2), values.reshape(1, n * s, 17), config)
    assert packed.shape == (1, n * s, 2, 64, 64)
    assert np.array_equal(packed[0], expected.reshape(n * s, 2, 64, 64))
    assert np.array_equal(render_frames(pts[2, 1], values[2, 1], config), expected[2, 1])


def test_empty_selection(fixture_poses):
    config = load_heatmap_config(overrides={"align_args.final_img_size": 32})
    pts, values = prepare_pose(fixture_poses["walk_a"], config)
    assert render_frames(pts[:0], values[:0], config).shape == (0, 2, 32, 32)
    empty = render_frames(np.zeros((3, 0, 17, 2)), np.zeros((3, 0, 17)), config)
    assert empty.shape == (3, 0, 2, 32, 32) and empty.dtype == np.uint8


def test_whole_sequence_preparation_is_needed(fixture_poses):
    """Rendering only the selected poses pads them from other donor frames: not step 1's maps."""
    config = load_heatmap_config()
    pose = fixture_poses["walk_noisy"]
    idx = np.arange(0, len(pose), 3)
    full = render_heatmaps(pose, config)
    assert not np.array_equal(render_heatmaps(pose[idx], config), full[idx])
    assert np.array_equal(render_frames(*[a[idx] for a in prepare_pose(pose, config)], config), full[idx])


def test_numpy_fallback_without_kernel(fixture_poses, monkeypatch):
    monkeypatch.setattr(fast, "_kernel", None)
    assert not fast.available()
    config = load_heatmap_config()
    rng = np.random.default_rng(5)
    for key in ("walk_noisy", "walk_far"):
        pose = fixture_poses[key]
        idx = rng.integers(0, len(pose), size=6)
        full = render_heatmaps(pose, config)
        assert np.array_equal(render_frames(*[a[idx] for a in prepare_pose(pose, config)], config), full[idx])


def test_invalid_input_raises(fixture_poses):
    config = load_heatmap_config()
    bad = fixture_poses["walk_a"].copy()
    bad[2, 3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        prepare_pose(bad, config)
    with pytest.raises(ValueError, match="no valid frame"):
        prepare_pose(np.zeros((5, 17, 3)), config)
    with pytest.raises(ValueError, match="T = 0"):
        prepare_pose(np.zeros((0, 17, 3)), config)
    with pytest.raises(ValueError, match="shape"):
        prepare_pose(np.zeros((5, 17, 2)), config)
    with pytest.raises(ValueError, match="18 joints"):
        prepare_pose(fixture_poses["walk_a"], load_heatmap_config(
            overrides={"coco18tococo17_args.transfer_to_coco17": True}))
    pts, values = prepare_pose(fixture_poses["walk_a"], config)
    with pytest.raises(ValueError, match="values"):
        render_frames(pts[:4], values[:3], config)
    with pytest.raises(ValueError, match="pts"):
        render_frames(pts[:4, :, :1], values[:4], config)


def _close(ours: np.ndarray, theirs: np.ndarray) -> None:
    diff = np.abs(ours.astype(np.int16) - theirs.astype(np.int16))
    assert diff.max() <= 1
    assert (diff != 0).mean() <= 1e-3


def test_torch_branch_on_cpu(fixture_poses):
    """The device branch (torch renderer + alignment in one call), run on the CPU: within 1 gray level."""
    config = load_heatmap_config()
    pts, values = prepare_pose(fixture_poses["walk_noisy"], config)
    idx = np.array([[3, 1, 4, 1], [5, 9, 2, 6]])
    ours = on_the_fly._render_device(pts[idx].reshape(-1, 17, 2), values[idx].reshape(-1, 17), config, "cpu")
    _close(ours.reshape(2, 4, 2, 64, 64), render_frames(pts[idx], values[idx], config))


@pytest.mark.gpu
@pytest.mark.parametrize("sigma", [8.0, 4.0])
def test_cuda_matches_cpu(fixture_poses, sigma):
    config = load_heatmap_config(overrides={"heatmap_generator_args.sigma": sigma})
    rng = np.random.default_rng(7)
    prepared = [prepare_pose(fixture_poses[key], config) for key in COCO17[:4]]
    picks = [rng.integers(0, len(p), size=24) for p, _ in prepared]
    pts = np.stack([p[idx] for (p, _), idx in zip(prepared, picks)])
    values = np.stack([v[idx] for (_, v), idx in zip(prepared, picks)])
    ours = render_frames(pts, values, config, device="cuda")
    assert ours.shape == (4, 24, 2, 64, 64) and ours.dtype == np.uint8
    _close(ours, render_frames(pts, values, config))
    assert render_frames(pts[:, :0], values[:, :0], config, device="cuda").shape == (4, 0, 2, 64, 64)


def test_step1_output_at_random_frames(ray_session, fixture_poses, tmp_path):
    """The real job (`ray-gait heatmap`): its stored maps equal on-the-fly maps of the same pose files."""
    from ray_gait.cli import main
    from ray_gait.io.dataset import read_dataset
    from ray_gait.pose.io import load_pose

    rng = np.random.default_rng(11)
    sequences = {}
    for i in range(6):
        pose = fixture_poses[COCO17[i % 4]].astype(np.float32)
        seen = pose[..., :2] != 0
        pose[..., :2] += np.where(seen, rng.normal(0, 2.0, pose[..., :2].shape) + rng.uniform(-40, 40, 2), 0)
        sequences[f"{i:03d}/nm-01/{i * 18:03d}/s"] = pose
    sequences["100/nm-01/000/s"] = fixture_poses["joint_always_missing"]
    sequences["101/nm-01/000/s"] = fixture_poses["one_frame"]
    nan_pose = fixture_poses["walk_b"].copy()
    nan_pose[4, 2, 1] = np.nan
    sequences["102/bg-01/000/bad"] = nan_pose
    sequences["103/bg-01/000/blank"] = np.zeros((6, 17, 3), dtype=np.float32)
    pose_root = write_pose_tree(tmp_path / "pose", sequences)
    assert main(["heatmap", "--pose_data_path", str(pose_root), "--save_root", str(tmp_path / "maps"),
                 "--dataset_name", "synth", "--shard-size", "3", "--max-errors", "2"]) == 0

    config = load_heatmap_config()
    rows = list(read_dataset(str(tmp_path / "maps" / "synth_sigma_8.0_")))
    assert sorted(row["source"] for row in rows) == sorted(f"{k}.pkl" for k in sequences if "/bg-01/" not in k)
    for row in rows:
        pts, values = prepare_pose(load_pose(str(pose_root / row["source"]), "synth"), config)
        stored = row["heatmap"]
        assert len(pts) == len(stored)
        idx = rng.integers(0, len(stored), size=min(8, 2 * len(stored)))
        assert np.array_equal(render_frames(pts[idx], values[idx], config), stored[idx]), row["source"]
    for key in ("102/bg-01/000/bad", "103/bg-01/000/blank"):
        with pytest.raises(ValueError):
            prepare_pose(load_pose(str(pose_root / f"{key}.pkl"), "synth"), config)
