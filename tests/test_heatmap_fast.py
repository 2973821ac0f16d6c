"""The compiled renderer (ray_gait.heatmap.fast) against the numpy renderer and OpenGait's outputs.

The criterion, as for the other renderers: |difference| <= 1 gray level on at least 99.9 % of
pixels, and exact on at least 99.9 %.  Skipped when the extension was not built (no C compiler).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from ray_gait import load_heatmap_config
from ray_gait.heatmap import fast
from ray_gait.heatmap import align as align_module
from ray_gait.heatmap.align import align_maps, content_rows, crop_bounds
from ray_gait.heatmap.pipeline import normalize_pose, validate_pose
from ray_gait.heatmap.reference import reference_frame_maps
from ray_gait.heatmap.render import ArrayOps, render_maps

from conftest import DATA

pytestmark = pytest.mark.skipif(not fast.available(), reason="compiled heatmap kernel not built")

SETS = {"fixtures": DATA / "opengait_heatmap", "extra": DATA / "opengait_heatmap_extra"}


def _cases() -> list[tuple[str, str, dict, list[str], list[str]]]:
    out = []
    for name, root in SETS.items():
        for case in json.loads((root / "cases.json").read_text())["cases"]:
            if (root / f"expected_{case['case']}.npz").exists():
                out.append((name, case["case"], case["overrides"], case["inputs"], case["raised"]))
    return out


CASES = _cases()


def _agreement(ours: np.ndarray, theirs: np.ndarray) -> tuple[float, float]:
    diff = np.abs(ours.astype(np.int16) - theirs.astype(np.int16))
    return float((diff <= 1).mean()), float((diff == 0).mean())


def _normalized(pose: np.ndarray, config) -> tuple[np.ndarray, np.ndarray]:
    return normalize_pose(validate_pose(pose, config), config)


def _render(pts: np.ndarray, values: np.ndarray, config) -> np.ndarray:
    gen = config.heatmap_generator_args
    return fast.render_maps_fast(pts, values, gen.sigma, gen.img_h, gen.img_w, gen.eps)


@pytest.mark.parametrize("overrides", [{}, {"heatmap_generator_args.sigma": 4.0},
                                       {"heatmap_generator_args.sigma": 2.0},
                                       {"padkeypoints_args.pad_method": "simple"}])
def test_fast_renderer_matches_numpy(fixture_poses, overrides):
    config = load_heatmap_config(overrides=overrides)
    gen = config.heatmap_generator_args
    ops = ArrayOps(np, precision="float32")
    for key, pose in fixture_poses.items():
        if pose.shape[1] != 17 or not (pose[..., :2] != 0).any():
            continue
        pts, values = _normalized(pose, config)
        ours = _render(pts, values, config)
        theirs = render_maps(ops, ops.asarray(pts), ops.asarray(values), gen.sigma, gen.img_h, gen.img_w, gen.eps)
        assert ours.dtype == np.uint8 and ours.shape == theirs.shape == (pose.shape[0], 2, gen.img_h, gen.img_w)
        within_one, exact = _agreement(ours, theirs)
        assert within_one >= 0.999 and exact >= 0.999, (key, within_one, exact)


def test_fast_renderer_matches_scalar_reference(fixture_poses):
    config = load_heatmap_config()
    for key in ("walk_noisy", "one_frame"):
        pts, values = _normalized(fixture_poses[key][:3], config)
        ours = _render(pts, values, config)
        for t in range(pts.shape[0]):
            reference = reference_frame_maps(pts[t], values[t], 8.0, 128, 128)
            within_one, exact = _agreement(ours[t], reference)
            assert within_one == 1.0 and exact >= 0.999, (key, t, within_one, exact)


@pytest.mark.parametrize("set_name, case, overrides, inputs, raised", CASES,
                         ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_fast_pipeline_matches_opengait(set_name, case, overrides, inputs, raised):
    """normalize_pose -> render_maps_fast -> align_maps against OpenGait's stored outputs."""
    poses = np.load(SETS[set_name] / "poses.npz")
    expected = np.load(SETS[set_name] / f"expected_{case}.npz")
    config = load_heatmap_config(overrides=overrides)
    gen, align = config.heatmap_generator_args, config.align_args
    centre = align.heatmap_image_size // 2
    compared = 0
    for key in inputs:
        pose = poses[key]
        if key in raised or not (pose[..., :2] != 0).any():
            continue
        pts, values = _normalized(pose, config)
        maps, rows = fast.render_maps_with_rows(pts, values, gen.sigma, gen.img_h, gen.img_w, gen.eps)
        ours = align_maps(maps, align.final_img_size, align.offset, centre, align.align)
        # The kernel's rows with content give the same crops as searching the maps for them.
        assert np.array_equal(align_maps(maps, align.final_img_size, align.offset, centre, align.align,
                                         rows=rows), ours), key
        theirs = expected[key]
        assert ours.shape == theirs.shape, key
        within_one, exact = _agreement(ours, theirs)
        assert within_one >= 0.999 and exact >= 0.999, (key, within_one, exact)
        compared += 1
    assert compared >= 2


def test_rows_and_crop_bounds_match_align(fixture_poses):
    config = load_heatmap_config()
    rng = np.random.default_rng(0)
    pts, values = _normalized(fixture_poses["walk_noisy"], config)
    values = values.copy()
    values[::3] = 0.0                                      # blank frames
    pts = pts + rng.uniform(-60, 60, size=(pts.shape[0], 1, 2))   # clipped, partly outside the map
    maps, rows = fast.render_maps_with_rows(pts, values, 8.0, 128, 128)
    assert np.array_equal(maps, fast.render_maps_fast(pts, values, 8.0, 128, 128))
    flat = maps.reshape(-1, 128, 128)
    used = flat.any(axis=2)
    has = used.any(axis=1)
    first = np.where(has, used.argmax(axis=1), -1)
    last = np.where(has, 127 - used[:, ::-1].argmax(axis=1), -1)
    assert np.array_equal(rows.reshape(-1, 2), np.stack([first, last], axis=1))
    assert np.array_equal(rows.reshape(-1, 2), content_rows(flat))
    assert (~has).sum() >= 2 * (pts.shape[0] // 3)
    for offset in (0, 2, 200):
        bounds = crop_bounds(rows, 128, 128, offset, 64)
        for (r0, r1, c0, c1), top, bottom in zip(bounds.tolist(), first.tolist(), last.tolist()):
            top, bottom = max(top, 0), max(bottom, 0)        # blank: one row at the top
            expect_r = slice(top - offset, bottom + 1 + offset).indices(128)[:2]
            if expect_r[1] <= expect_r[0]:
                expect_r = (max(top - offset, 0), min(bottom + 1 + offset, 128))
            half = (bottom - top + 1) // 2
            assert (r0, r1) == expect_r and (c0, c1) == slice(64 - half, 64 + half + 1).indices(128)[:2]
        assert np.array_equal(align_maps(maps, 64, offset, 64, rows=rows), align_maps(maps, 64, offset, 64))


def test_align_without_kernel_is_identical(fixture_poses, monkeypatch):
    """The kernel's crop scaling and numpy's per-crop division give the same bytes."""
    config = load_heatmap_config()
    maps, rows = fast.render_maps_with_rows(*_normalized(fixture_poses["walk_b"], config), 8.0, 128, 128)
    with_kernel = align_maps(maps, 64, 0, 64, rows=rows)
    monkeypatch.setattr(align_module, "_kernel", None)
    monkeypatch.setattr(fast, "_kernel", None)
    assert not fast.available()
    assert np.array_equal(align_maps(maps, 64, 0, 64, rows=rows), with_kernel)
    with pytest.raises(RuntimeError):
        fast.render_maps_fast(np.zeros((1, 17, 2)), np.ones((1, 17)), 8.0, 128, 128)


def test_unit_crop_is_division_by_255():
    from ray_gait.heatmap import _kernel
    maps = np.arange(2 * 16 * 16, dtype=np.int64).astype(np.uint8).reshape(2, 16, 16)
    out = np.full(16 * 16, np.nan)
    _kernel.unit_crop(maps, 2, 16, 16, 1, 3, 11, 2, 15, align_module._UNIT, out)
    assert np.array_equal(out[:8 * 13].reshape(8, 13), maps[1, 3:11, 2:15] / 255.0)
    with pytest.raises(ValueError):
        _kernel.unit_crop(maps, 2, 16, 16, 2, 0, 1, 0, 1, align_module._UNIT, out)


def test_instruction_sets_give_identical_maps(fixture_poses):
    """The AVX2 build of the loops (x86-64) computes the same float32 operations as the baseline."""
    from ray_gait.heatmap import _kernel
    config = load_heatmap_config(overrides={"heatmap_generator_args.sigma": 4.0})
    pts, values = _normalized(fixture_poses["walk_a"], config)
    outs = []
    for generic in (False, True):
        out = np.empty((pts.shape[0], 2, 128, 128), dtype=np.uint8)
        _kernel.render_maps(pts, values, fast._LIMBS, fast._GRAY, out, None, pts.shape[0], pts.shape[1],
                            4.0, 128, 128, 1e-3, generic)
        outs.append(out)
    assert _kernel.isa(True) == "generic" and _kernel.isa() in ("avx2", "generic")
    assert np.array_equal(outs[0], outs[1])


def test_degenerate_inputs():
    empty = fast.render_maps_fast(np.zeros((0, 17, 2)), np.zeros((0, 17)), 8.0, 128, 128)
    assert empty.shape == (0, 2, 128, 128)
    pts = np.full((3, 17, 2), 64.0)
    pts[:, :, 0] += np.arange(17) * 0.3                 # limbs shorter than one pixel
    values = np.ones((3, 17))
    values[1] = 0.0                                      # a blank frame
    values[2] = 5.0                                      # confidences above 1 saturate at 255
    maps, rows = fast.render_maps_with_rows(pts, values, 8.0, 128, 128)
    assert not maps[1].any() and (rows[1] == -1).all()
    assert maps[2].max() == 255 and maps[0].max() == 255
    far = np.full((2, 17, 2), 1e30)                     # far outside the map
    far[1] = -1e30
    assert not fast.render_maps_fast(far, np.ones((2, 17)), 8.0, 128, 128).any()
    huge = pts.copy()
    huge[:, 0] = 1e30                                    # limbs from far away crossing the map: no NaN
    assert fast.render_maps_fast(huge, np.ones((3, 17)), 8.0, 128, 128).shape == (3, 2, 128, 128)
    # eps <= 0 lets values <= 0 through: they never rise above the blank map.
    assert not fast.render_maps_fast(pts, np.full((3, 17), -1.0), 8.0, 128, 128, eps=-2.0).any()
    assert not fast.render_maps_fast(pts, np.zeros((3, 17)), 8.0, 128, 128, eps=0.0).any()
    # Non-square maps and more than 17 joints (BODY-25 without conversion: all joints drawn).
    wide = fast.render_maps_fast(np.full((1, 25, 2), 40.0), np.ones((1, 25)), 3.0, 64, 96)
    assert wide.shape == (1, 2, 64, 96) and wide[0, 1, 40, 40] == 255
    with pytest.raises(ValueError):
        fast.render_maps_fast(np.zeros((2, 16, 2)), np.ones((2, 16)), 8.0, 128, 128)
    with pytest.raises(ValueError):
        fast.render_maps_fast(np.zeros((2, 17, 2)), np.ones((2, 18)), 8.0, 128, 128)
    with pytest.raises(ValueError):
        fast.render_maps_fast(np.zeros((2, 17, 2)), np.ones((2, 17)), 0.0, 128, 128)
