"""Tests of the synthetic gait data set (ray_gait.synth)."""
from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest

from ray_gait.synth.baseline import baseline_rank1, pose_features
from ray_gait.synth.dataset import (
    SequenceSpec,
    SynthConfig,
    generate_dataset,
    generate_sequence,
    plan_sequences,
    read_array,
    read_config,
    simulate_sequence,
    write_metadata,
    write_sequence,
)
from ray_gait.synth.kinematics import LEFT, RIGHT
from ray_gait.synth.preview import write_preview

SMALL = SynthConfig(ids=16, train_ids=4, views=(0, 90, 180))


def _spec(cfg: SynthConfig, subject: int, seq_type: str, view: int) -> SequenceSpec:
    """The planned spec of one (subject, type, view)."""
    return next(s for s in plan_sequences(cfg)
                if s.subject == subject and s.type == seq_type and s.view_deg == view)


@pytest.fixture(scope="module")
def small_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 16-id, 3-view data set written once for the module."""
    root = tmp_path_factory.mktemp("synth")
    generate_dataset(root, SMALL)
    return root


def test_plan_names_and_count() -> None:
    specs = plan_sequences(SMALL)
    assert len(specs) == 16 * 3 * 8
    assert len({s.relpath for s in specs}) == len(specs)
    first = specs[0]
    assert (first.id, first.type, first.view, first.seq) == ("00001", "nm-01", "000", "000")
    assert {s.condition for s in specs} == {"nm", "bg", "cl"}


@pytest.mark.parametrize("kwargs", [
    {"ids": 10, "train_ids": 10}, {"views": (0, 0)}, {"views": (400,)}, {"frames": (30, 20)},
    {"types": ("xx-01",)}, {"gallery": ("nm-09",)},
])
def test_config_rejects_bad_values(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        SynthConfig(**kwargs)


def test_config_round_trip(tmp_path: Path) -> None:
    write_metadata(tmp_path, SMALL)
    assert read_config(tmp_path) == SMALL


def test_shapes_dtypes_ranges() -> None:
    for view in SMALL.views:
        pose, sil = generate_sequence(_spec(SMALL, 2, "nm-01", view), SMALL)
        t = pose.shape[0]
        assert SMALL.frames[0] <= t <= SMALL.frames[1]
        assert pose.dtype == np.float32 and pose.shape == (t, 17, 3)
        assert sil.dtype == np.uint8 and sil.shape == (t, 64, 64)
        conf = pose[..., 2]
        assert conf.min() >= 0 and conf.max() <= 1
        valid = conf > 0
        assert np.all(pose[~valid] == 0)
        x, y = pose[..., 0][valid], pose[..., 1][valid]
        assert x.min() >= 0 and x.max() < 1280 and y.min() >= 0 and y.max() < 720
        # every silhouette is cropped to the person's height: foreground in first and last rows
        assert np.all(sil[:, 0].max(axis=1) > 0) and np.all(sil[:, -1].max(axis=1) > 0)
        area = (sil > 127).mean(axis=(1, 2))
        assert 0.05 < area.min() and area.max() < 0.6


def test_deterministic_and_order_independent() -> None:
    spec = _spec(SMALL, 3, "bg-01", 90)
    pose_a, sil_a = generate_sequence(spec, SMALL)
    generate_sequence(_spec(SMALL, 5, "cl-02", 0), SMALL)
    pose_b, sil_b = generate_sequence(spec, SMALL)
    assert np.array_equal(pose_a, pose_b) and np.array_equal(sil_a, sil_b)


def test_different_seeds_differ() -> None:
    other = dataclasses.replace(SMALL, seed=1)
    pose_a, sil_a = generate_sequence(_spec(SMALL, 1, "nm-01", 90), SMALL)
    pose_b, sil_b = generate_sequence(_spec(other, 1, "nm-01", 90), other)
    assert pose_a.shape != pose_b.shape or not np.allclose(pose_a, pose_b)
    assert sil_a.shape != sil_b.shape or not np.array_equal(sil_a, sil_b)


def _relative_spread(render, joints: tuple[int, int]) -> float:
    """Median horizontal distance of two true joints, over the person's pixel height."""
    uv = render.true_uv
    height = np.median(uv[..., 1].max(axis=1) - uv[..., 1].min(axis=1))
    return float(np.percentile(np.abs(uv[:, joints[0], 0] - uv[:, joints[1], 0]), 90) / height)


def test_views_change_projected_motion() -> None:
    front = simulate_sequence(_spec(SMALL, 4, "nm-01", 0), SMALL)
    side = simulate_sequence(_spec(SMALL, 4, "nm-01", 90), SMALL)
    # in the side view the feet sweep far apart horizontally, the shoulders overlap
    assert _relative_spread(side, (15, 16)) > 2 * _relative_spread(front, (15, 16))
    assert _relative_spread(front, (5, 6)) > 2 * _relative_spread(side, (5, 6))
    # crossing the image at 90 degrees, approaching at 0 degrees (the person grows)
    hip_side = side.true_uv[:, 11:13].mean(axis=1)
    assert hip_side[-1, 0] - hip_side[0, 0] > 100
    height = front.true_uv[..., 1].max(axis=1) - front.true_uv[..., 1].min(axis=1)
    assert height[-1] > 1.1 * height[0]


def test_coat_changes_silhouette_not_skeleton() -> None:
    normal = _spec(SMALL, 6, "nm-02", 90)
    coat = dataclasses.replace(normal, condition="cl")
    pose_n, sil_n = generate_sequence(normal, SMALL)
    pose_c, sil_c = generate_sequence(coat, SMALL)
    assert np.array_equal(pose_n, pose_c)
    # the coat widens the body: more foreground once both are scaled to the same height
    assert (sil_c > 127).mean() > 1.08 * (sil_n > 127).mean()


def test_bag_changes_silhouette() -> None:
    normal = _spec(SMALL, 7, "nm-03", 90)
    bag = dataclasses.replace(normal, condition="bg")
    _, sil_n = generate_sequence(normal, SMALL)
    _, sil_b = generate_sequence(bag, SMALL)
    assert not np.array_equal(sil_n, sil_b)


def test_estimator_errors_in_plausible_range() -> None:
    missing, dropped, conf_hidden, conf_visible = [], [], [], []
    for subject in (1, 2, 3, 4):
        for view in SMALL.views:
            r = simulate_sequence(_spec(SMALL, subject, "nm-01", view), SMALL)
            conf = r.pose[..., 2]
            missing.append((conf == 0).mean())
            dropped.append((conf == 0).all(axis=1).mean())
            present = conf > 0
            conf_hidden.extend(conf[present & (r.hidden > 0.9)])
            conf_visible.extend(conf[present & (r.hidden < 0.1)])
    assert 0.01 < np.mean(missing) < 0.10
    assert 0.0 < np.mean(dropped) < 0.05
    assert np.mean(conf_hidden) < np.mean(conf_visible) - 0.2


def test_legs_alternate_and_arms_counter_swing() -> None:
    r = simulate_sequence(_spec(SMALL, 8, "nm-01", 90), SMALL)
    uv = r.true_uv
    ankles = uv[:, 15, 0] - uv[:, 16, 0]
    wrists = uv[:, 9, 0] - uv[:, 10, 0]
    crossings = np.flatnonzero(np.diff(np.sign(ankles)) != 0)
    # at least 1.4 cycles of 40+ frames: the feet swap lead at least twice, half a cycle apart
    assert crossings.size >= 2
    assert np.all(np.diff(crossings) >= 6)
    assert np.corrcoef(ankles, wrists)[0, 1] < -0.5


def test_left_and_right_are_right() -> None:
    front = simulate_sequence(_spec(SMALL, 9, "nm-01", 0), SMALL).true_uv
    back = simulate_sequence(_spec(SMALL, 9, "nm-01", 180), SMALL).true_uv
    left, right = list(LEFT[2:]), list(RIGHT[2:])
    # walking towards the camera the left side is on the image right, walking away on the left
    assert np.all(front[:, 5, 0] > front[:, 6, 0]) and np.all(front[:, 11, 0] > front[:, 12, 0])
    assert np.all(back[:, 5, 0] < back[:, 6, 0]) and np.all(back[:, 11, 0] < back[:, 12, 0])
    assert np.mean(front[:, left, 0] > front[:, right, 0]) > 0.9
    # at 90 degrees the walker's right side faces the camera: left joints are hidden more
    side = simulate_sequence(_spec(SMALL, 9, "nm-01", 90), SMALL)
    assert side.hidden[:, left].mean() > side.hidden[:, right].mean() + 0.2


def test_files_layout_and_metadata(small_root: Path) -> None:
    partition = json.loads((small_root / "partition.json").read_text())
    assert partition["TRAIN_SET"] == [f"{i:05d}" for i in range(1, 5)]
    assert partition["TEST_SET"] == [f"{i:05d}" for i in range(5, 17)]
    protocol = json.loads((small_root / "protocol.json").read_text())
    assert protocol["gallery"] == ["nm-01", "nm-02"]
    assert protocol["probes"] == {"NM": ["nm-03", "nm-04"], "BG": ["bg-01", "bg-02"], "CL": ["cl-01", "cl-02"]}
    assert protocol["views"] == ["000", "090", "180"] and protocol["exclude_identical_view"] is True
    spec = _spec(SMALL, 5, "cl-01", 180)
    pose_path = small_root / "pose" / "00005" / "cl-01" / "180" / "180.pkl"
    sil_path = small_root / "sil" / "00005" / "cl-01" / "180" / "180.pkl"
    pose, sil = generate_sequence(spec, SMALL)
    assert np.array_equal(read_array(pose_path), pose) and np.array_equal(read_array(sil_path), sil)
    with open(pose_path, "rb") as fh:  # OpenGait reads them with plain pickle
        assert np.array_equal(pickle.load(fh), pose)
    assert len(list((small_root / "pose").rglob("*.pkl"))) == len(plan_sequences(SMALL))
    assert not list(small_root.rglob("*.tmp"))


def test_write_sequence_validates(tmp_path: Path) -> None:
    spec = _spec(SMALL, 1, "nm-01", 0)
    with pytest.raises(ValueError):
        write_sequence(tmp_path, spec, np.zeros((5, 18, 3), np.float32), np.zeros((5, 64, 64), np.uint8))
    with pytest.raises(ValueError):
        write_sequence(tmp_path, spec, np.zeros((5, 17, 3), np.float32), np.zeros((4, 64, 64), np.uint8))


def test_read_array_refuses_other_objects(tmp_path: Path) -> None:
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"a": dataclasses.replace}))
    with pytest.raises(ValueError):
        read_array(path)


def test_pose_features_handle_missing_joints() -> None:
    pose, _ = generate_sequence(_spec(SMALL, 2, "nm-02", 90), SMALL)
    pose = pose.copy()
    pose[:, 9] = 0  # a joint missing in every frame
    feats = pose_features(pose)
    assert feats.ndim == 1 and np.isfinite(feats).sum() > feats.size - 4


def test_baseline_carries_identity_not_nuisance(small_root: Path) -> None:
    result = baseline_rank1(small_root)
    chance = result["chance"]
    assert result["ids"] == 12 and chance == pytest.approx(100 / 12)
    assert result["mean"] > 3 * chance
    assert all(2 * chance < v < 95 for v in result["rank1"].values())
    shuffled = baseline_rank1(small_root, shuffle_ids=True, seed=0)
    assert abs(shuffled["mean"] - chance) < 5
    nuisance = baseline_rank1(small_root, features="nuisance")
    assert nuisance["mean"] < 2 * chance


def test_preview_png(small_root: Path, tmp_path: Path) -> None:
    png = write_preview(small_root, tmp_path / "preview.png", frames=4)
    img = cv2.imread(str(png))
    assert img is not None and img.shape[0] > 128 and img.shape[1] > 4 * 128
