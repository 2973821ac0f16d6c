"""Batched sequence transforms: effects on known images, one draw per sequence, cv2 parity of warps."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from ray_gait.data.transforms import (
    BaseSilCuttingTransform,
    BaseSilTransform,
    RandomErasing,
    RandomHorizontalFlip,
    RandomPerspective,
    RandomRotate,
    _homographies,
    _rotation_inverse,
    _warp,
    apply_transforms,
    build_transform,
    fuse_maps_and_silhouettes,
)

SKELETONGAIT_PP_TRAIN = [{"type": "Compose", "trf_cfg": [
    {"type": "RandomPerspective", "prob": 0.2},
    {"type": "BaseSilCuttingTransform"},
    {"type": "RandomHorizontalFlip", "prob": 0.2},
    {"type": "RandomRotate", "prob": 0.2},
]}]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _figure(height: int = 64, width: int = 44) -> np.ndarray:
    """An asymmetric uint8 test image [H, W]."""
    img = np.zeros((height, width), np.uint8)
    img[8:56, 6:20] = 255
    img[20:30, 20:38] = 128
    img[50:60, 30:40] = 60
    return img


def _batch(n: int, s: int, c: int, height: int = 64, width: int = 44) -> torch.Tensor:
    """uint8 [n, s, c, H, W]: the same figure on every sequence, frame and channel."""
    return torch.from_numpy(_figure(height, width)).expand(n, s, c, height, width).contiguous()


def test_cutting_64_to_44_and_divide() -> None:
    x = torch.randint(0, 256, (2, 3, 2, 64, 64), dtype=torch.uint8)
    out = BaseSilCuttingTransform()(x)
    assert out.shape == (2, 3, 2, 64, 44) and out.dtype == torch.float32
    torch.testing.assert_close(out, x[..., 10:54].float() / 255)
    assert BaseSilCuttingTransform()(x[..., 10:54]).shape[-1] == 44  # 44 wide: no cut
    assert BaseSilCuttingTransform(cutting=2, divsor=1.0)(x).shape[-1] == 60


def test_base_sil_transform() -> None:
    x = np.full((1, 2, 64, 44), 255, np.uint8)
    out = BaseSilTransform(img_shape=[1, 64, 44])(x)
    assert out.shape == (1, 2, 1, 64, 44) and float(out.max()) == 1.0


def test_flip_mirrors_whole_sequences() -> None:
    x = _batch(1, 3, 2)
    torch.testing.assert_close(RandomHorizontalFlip(prob=1.0)(x), x.flip(-1))
    assert torch.equal(RandomHorizontalFlip(prob=0.0)(x), x)
    out = RandomHorizontalFlip(prob=0.5)(_batch(40, 3, 2), _gen(1))
    flipped = [torch.equal(seq, x[0].flip(-1)) for seq in out]
    kept = [torch.equal(seq, x[0]) for seq in out]
    assert all(f or k for f, k in zip(flipped, kept)) and any(flipped) and any(kept)


def test_erasing_zeroes_one_box_per_sequence() -> None:
    x = torch.ones(6, 4, 3, 64, 44)
    out = RandomErasing(prob=1.0)(x, _gen(2))
    zeros = out == 0
    for seq in zeros:
        assert torch.equal(seq, seq[:1, :1].expand_as(seq))  # same box on every frame and channel
        rows, cols = seq[0, 0].any(1).nonzero(), seq[0, 0].any(0).nonzero()
        area = int(seq[0, 0].sum())
        assert area == len(rows) * len(cols)  # a rectangle
        assert 0.05 * 64 * 44 * 0.8 <= area <= 0.2 * 64 * 44 * 1.2
    assert len({tuple(seq[0, 0].nonzero()[0].tolist()) for seq in zeros}) > 1
    assert torch.equal(RandomErasing(prob=0.0)(x), x)


def test_erasing_per_frame_differs_across_frames() -> None:
    out = RandomErasing(prob=1.0, per_frame=True)(torch.ones(1, 8, 1, 64, 44), _gen(3))
    boxes = {tuple((out[0, t, 0] == 0).nonzero()[0].tolist()) for t in range(8)}
    assert len(boxes) > 1


def test_rotate_and_perspective_match_opengait_cv2_calls() -> None:
    img = _figure().astype(np.float64) / 255
    angle = 7.3
    ref = cv2.warpAffine(img, cv2.getRotationMatrix2D((64 // 2, 44 // 2), angle, 1), (44, 64))
    got = _warp(torch.from_numpy(img)[None, None], _rotation_inverse(torch.tensor([angle], dtype=torch.float64),
                                                                      32, 22))[0, 0].numpy()
    assert np.abs(got - ref).max() < 0.03 and np.abs(got - ref).mean() < 2e-3  # cv2 uses 1/32 px fixed point
    src = np.float32([(3, 0), (40, 0), (37, 64), (8, 64)])
    canvas = np.float32([[0, 0], [44, 0], [44, 64], [0, 64]])
    ref = cv2.warpPerspective(_figure(), cv2.getPerspectiveTransform(src, canvas), (44, 64))
    inverse = _homographies(torch.from_numpy(canvas).double()[None], torch.from_numpy(src).double()[None])
    got = _warp(torch.from_numpy(_figure())[None, None], inverse)[0, 0].numpy()
    assert got.dtype == np.uint8 and np.abs(got.astype(int) - ref.astype(int)).max() <= 2


@pytest.mark.parametrize("transform", [RandomRotate(prob=1.0, degree=10), RandomPerspective(prob=1.0)])
def test_warps_one_draw_per_sequence(transform) -> None:
    x = _batch(5, 3, 3).float() / 255
    out = transform(x, _gen(4))
    for seq in out:
        assert torch.equal(seq, seq[:1, :1].expand_as(seq))  # identical on all frames and channels
    assert not torch.equal(out[0], out[1]) and not torch.equal(out[0], x[0])
    assert torch.equal(transform.__class__(prob=0.0)(x), x)


def test_rotate_zero_degrees_is_identity() -> None:
    x = _batch(2, 2, 1).float()
    torch.testing.assert_close(RandomRotate(prob=1.0, degree=0)(x), x, atol=1e-3, rtol=0)


def test_perspective_rejects_narrow_frames() -> None:
    with pytest.raises(ValueError, match="44"):
        RandomPerspective(prob=1.0)(torch.zeros(1, 1, 1, 64, 40))


def test_skeletongait_pp_pipeline_shares_draws_across_channels() -> None:
    maps = _batch(16, 4, 2, 64, 64)
    sils = torch.from_numpy(_figure(64, 64)[:, 10:54]).expand(16, 4, 64, 44)
    fused = fuse_maps_and_silhouettes(maps, sils)
    assert fused.shape == (16, 4, 3, 64, 44) and fused.dtype == torch.uint8
    assert torch.equal(fused[:, :, 0], fused[:, :, 2])  # maps cut 10 px per side, like the silhouette
    strong = [{"type": "Compose", "trf_cfg": [dict(t, prob=0.5) if "prob" in t else t
                                              for t in SKELETONGAIT_PP_TRAIN[0]["trf_cfg"]]}]
    (out,) = apply_transforms(build_transform(strong), [fused], _gen(5))
    assert out.shape == (16, 4, 3, 64, 44) and out.dtype == torch.float32
    assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0
    assert torch.equal(out[:, :, 0], out[:, :, 2]) and torch.equal(out[:, :, 1], out[:, :, 2])
    assert len({out[i].sum().item() for i in range(16)}) > 1  # different draws across sequences


def test_skeletongait_config_cuts_maps() -> None:
    (train,) = build_transform(SKELETONGAIT_PP_TRAIN)
    out = train(_batch(3, 2, 2, 64, 64).numpy(), _gen(6))
    assert out.shape == (3, 2, 2, 64, 44)
    (evaluate,) = build_transform([{"type": "BaseSilCuttingTransform"}])
    torch.testing.assert_close(evaluate(_batch(1, 2, 2, 64, 64)), _batch(1, 2, 2, 64, 64)[..., 10:54] / 255)


def test_same_generator_seed_same_output() -> None:
    (train,) = build_transform(SKELETONGAIT_PP_TRAIN)
    x = _batch(8, 2, 3)
    assert torch.equal(train(x, _gen(9)), train(x, _gen(9)))


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="RandomHorizontalFlip"):  # the message lists valid names
        build_transform([{"type": "RandomFlip"}])
    with pytest.raises(ValueError, match="probability"):
        build_transform([{"type": "RandomRotate", "probability": 0.5}])
    with pytest.raises(ValueError, match="number of inputs"):
        apply_transforms(build_transform(None), [torch.zeros(1, 1, 4, 4)] * 2)
