"""Sequence transforms by OpenGait's names and arguments, batched on torch tensors.

A batch is ``[n, s, C, H, W]`` (or ``[n, s, H, W]``): n sequences of s frames. Every random
transform makes one draw per sequence (``RandomErasing(per_frame=True)``: per frame) and applies it
to all frames and channels of that sequence, as OpenGait's per-sequence ``trf(seq)`` does; for
SkeletonGait++ the two map channels and the silhouette share one draw because they are fused into
one ``[n, s, 3, H, W]`` tensor first (:func:`fuse_maps_and_silhouettes`, OpenGait's
``SkeletonGaitPP.inputs_pretreament``). Warps use bilinear sampling with zero borders (OpenGait's
``cv2.warpAffine`` / ``cv2.warpPerspective`` defaults); a uint8 input stays uint8 (rounded), as
cv2 returns it. ``BaseSil(Cutting)Transform`` converts to float and divides by ``divsor`` (255).

Config form (``trainer_cfg.transform`` / ``evaluator_cfg.transform``): a list with one entry per
input, e.g. ``[{"type": "Compose", "trf_cfg": [{"type": "RandomPerspective", "prob": 0.2},
{"type": "BaseSilCuttingTransform"}, {"type": "RandomHorizontalFlip", "prob": 0.2}]}]``.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ray_gait.registry import build

__all__ = [
    "BaseSilCuttingTransform",
    "BaseSilTransform",
    "Compose",
    "NoOperation",
    "RandomErasing",
    "RandomHorizontalFlip",
    "RandomPerspective",
    "RandomRotate",
    "TRANSFORMS",
    "Transform",
    "apply_transforms",
    "build_transform",
    "fuse_maps_and_silhouettes",
    "transform_from_config",
]

ArrayLike = Union[Tensor, np.ndarray]


def _as_tensor(x: ArrayLike) -> Tensor:
    """A torch view of ``x`` (numpy arrays are wrapped, not copied)."""
    return x if isinstance(x, Tensor) else torch.from_numpy(np.ascontiguousarray(x))


def _check_batch(x: Tensor) -> Tensor:
    """Reject anything but ``[n, s, H, W]`` or ``[n, s, C, H, W]``."""
    if x.dim() not in (4, 5):
        raise ValueError(f"expected a batch [n, s, C, H, W] or [n, s, H, W], got shape {tuple(x.shape)}")
    return x


def _chance(n: int, prob: float, generator: torch.Generator | None) -> Tensor:
    """Per-sequence coin flips ``[n]`` bool, True with probability ``prob`` (OpenGait: ``uniform < prob``)."""
    return torch.rand(n, generator=generator) < prob


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None) -> Tensor:
    """``[n]`` float64 uniform draws in ``[low, high)``."""
    return low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)


def _randint(low: int, high: int, shape: tuple[int, ...], generator: torch.Generator | None) -> Tensor:
    """Integers in ``[low, high]`` inclusive (Python's ``random.randint`` / ``random.choice(range)``)."""
    return torch.randint(low, high + 1, shape, generator=generator)


def _per_sequence(mask: Tensor, x: Tensor) -> Tensor:
    """Reshape a ``[n]`` mask to broadcast over ``x`` ``[n, ...]``."""
    return mask.to(x.device).view(-1, *([1] * (x.dim() - 1)))


class Transform:
    """A batched sequence transform: ``[n, s, (C,) H, W] -> [n, s, (C,) H', W']``."""

    def __call__(self, x: ArrayLike, generator: torch.Generator | None = None) -> Tensor:
        """Transform a batch (any device); draws come from the CPU ``generator`` (torch's global one if None)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class NoOperation(Transform):
    """Identity."""

    def __call__(self, x: ArrayLike, generator: torch.Generator | None = None) -> Tensor:
        """Return ``x`` unchanged (as a tensor)."""
        return _as_tensor(x)


def _divide(x: Tensor, divsor: float) -> Tensor:
    """``x`` as float (float32 unless already floating) divided by ``divsor``."""
    return (x if x.is_floating_point() else x.float()) / divsor


class BaseSilTransform(Transform):
    """Divide by ``divsor``; reshape each sequence's frames to ``img_shape`` when given.

    Args:
        divsor: the divisor (OpenGait's spelling), 255 for uint8 images.
        img_shape: optional per-frame shape, e.g. ``[64, 44]``.
    """

    def __init__(self, divsor: float = 255.0, img_shape: Sequence[int] | None = None) -> None:
        self.divsor = float(divsor)
        self.img_shape = None if img_shape is None else [int(v) for v in img_shape]

    def __call__(self, x: ArrayLike, generator: torch.Generator | None = None) -> Tensor:
        """``[n, s, ...] -> [n, s, *img_shape]`` float in ``[0, 1]`` for uint8 input."""
        x = _as_tensor(x)
        if self.img_shape is not None:
            x = x.reshape(x.shape[0], x.shape[1], *self.img_shape)
        return _divide(x, self.divsor)


class BaseSilCuttingTransform(Transform):
    """Cut ``cutting`` columns off each side, then divide by ``divsor``.

    Args:
        divsor: the divisor, 255 for uint8 images.
        cutting: columns removed on each side; default ``(W // 64) * 10`` (64 -> 44, 44 stays 44).
    """

    def __init__(self, divsor: float = 255.0, cutting: int | None = None) -> None:
        self.divsor = float(divsor)
        self.cutting = None if cutting is None else int(cutting)

    def __call__(self, x: ArrayLike, generator: torch.Generator | None = None) -> Tensor:
        """``[..., H, W] -> [..., H, W - 2 * cutting]`` float."""
        x = _as_tensor(x)
        cut = self.cutting if self.cutting is not None else (x.shape[-1] // 64) * 10
        if cut:
            x = x[..., cut:-cut]
        return _divide(x, self.divsor)


class RandomTransform(Transform):
    """A transform that each sequence (or frame) undergoes with probability ``prob``.

    Args:
        prob: probability per sequence.
    """

    def __init__(self, prob: float = 0.5) -> None:
        self.prob = float(prob)


class RandomHorizontalFlip(RandomTransform):
    """Mirror a sequence left-right with probability ``prob`` (per sequence)."""

    def __call__(self, x: ArrayLike, generator: torch.Generator | None = None) -> Tensor:
        """Same shape; the chosen sequences flipped along W."""
        x = _check_batch(_as_tensor(x))
        flip = _chance(x.shape[0], self.prob, generator)
        return torch.where(_per_sequence(flip, x), x.flip(-1), x)


def _erase_boxes(
    m: int, height: int, width: int, cfg: RandomErasing, generator: torch.Generator | None, tries: int = 100
) -> Tensor:
    """Per unit, a ``[m, H, W]`` bool mask of the box to erase (empty when no try fits), OpenGait's rule."""
    area = height * width * _uniform(m * tries, cfg.sl, cfg.sh, generator).view(m, tries)
    ratio = _uniform(m * tries, cfg.r1, 1.0 / cfg.r1, generator).view(m, tries)
    h = torch.round(torch.sqrt(area * ratio)).long()
    w = torch.round(torch.sqrt(area / ratio)).long()
    fits = (h < height) & (w < width)
    first = torch.argmax(fits.long(), dim=1, keepdim=True)
    found = fits.any(dim=1)
    h = torch.where(found, h.gather(1, first).squeeze(1), torch.zeros_like(found, dtype=torch.long))
    w = torch.where(found, w.gather(1, first).squeeze(1), torch.zeros_like(found, dtype=torch.long))
    top = torch.floor(torch.rand(m, generator=generator, dtype=torch.float64) * (height - h + 1)).long()
    left = torch.floor(torch.rand(m, generator=generator, dtype=torch.float64) * (width - w + 1)).long()
    rows = torch.arange(height).view(1, -1, 1)
    cols = torch.arange(width).view(1, 1, -1)
    in_rows = (rows >= top.view(-1, 1, 1)) & (rows < (top + h).view(-1, 1, 1))
    in_cols = (cols >= left.view(-1, 1, 1)) & (cols < (left + w).view(-1, 1, 1))
    return in_rows & in_cols


class RandomErasing(RandomTransform):
    """Zero a random box (area fraction in ``[sl, sh]``, aspect in ``[r1, 1/r1]``) with probability ``prob``.

    One box per sequence, on every frame and channel (per frame with ``per_frame``); up to 100
    tries for a box that fits, as OpenGait.

    Args:
        prob: probability per sequence (per frame with ``per_frame``).
        sl: smallest area fraction.
        sh: largest area fraction.
        r1: smallest aspect ratio (the largest is ``1 / r1``).
        per_frame: draw per frame instead of per sequence.
    """

    def __init__(
        self, prob: float = 0.5, sl: float = 0.05, sh: float = 0.2, r1: float = 0.3, per_frame: bool = False
    ) -> None:
        super().__init__(prob)
        self.sl = float(sl)
        self.sh = float(sh)
        self.r1 = float(r1)
        self.per_frame = bool(per_frame)

    def __call__(self, x: ArrayLike, generator: torch.Generator | None = None) -> Tensor:
        """Same shape; the chosen boxes set to 0."""
        x = _check_batch(_as_tensor(x))
        height, width = x.shape[-2:]
        units = x.shape[0] * x.shape[1] if self.per_frame else x.shape[0]
        apply = _chance(units, self.prob, generator)
        boxes = _erase_boxes(units, height, width, self, generator) & apply.view(-1, 1, 1)
        lead = (x.shape[0], x.shape[1]) if self.per_frame else (x.shape[0], 1)
        boxes = boxes.view(*lead, *([1] * (x.dim() - 4)), height, width).to(x.device)
        return x.masked_fill(boxes, 0)


def _pixel_grid(height: int, width: int) -> Tensor:
    """Homogeneous pixel coordinates ``[H, W, 3]`` float64 (x = column, y = row, 1)."""
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64), indexing="ij"
    )
    return torch.stack([xs, ys, torch.ones_like(xs)], dim=-1)


def _warp(x: Tensor, inverse: Tensor) -> Tensor:
    """Warp each sequence by its dst -> src homography ``[m, 3, 3]``: ``[m, ..., H, W]``, same shape.

    Bilinear sampling, zeros outside; uint8 stays uint8 (rounded).
    """
    height, width = x.shape[-2:]
    src = torch.matmul(_pixel_grid(height, width).view(1, -1, 3), inverse.transpose(1, 2))
    src = src.view(-1, height, width, 3)
    src = src[..., :2] / src[..., 2:]
    scale = torch.tensor([2.0 / max(width - 1, 1), 2.0 / max(height - 1, 1)], dtype=torch.float64)
    grid = (src * scale - 1.0).to(torch.float32)
    frames = x.reshape(x.shape[0], -1, height, width)
    compute = frames.double() if frames.dtype == torch.float64 else frames.float()
    out = F.grid_sample(
        compute, grid.to(x.device, compute.dtype), mode="bilinear", padding_mode="zeros", align_corners=True
    )
    if x.dtype == torch.uint8:
        out = out.round().clamp(0, 255)
    return out.to(x.dtype).reshape(x.shape)


def _warp_selected(x: Tensor, chosen: Tensor, inverse: Tensor) -> Tensor:
    """Warp the sequences where ``chosen`` ``[n]`` is True by their ``inverse`` ``[n, 3, 3]``."""
    idx = torch.nonzero(chosen).flatten()
    if idx.numel() == 0:
        return x
    out = x.clone()
    out[idx.to(x.device)] = _warp(x[idx.to(x.device)], inverse[idx])
    return out


def _rotation_inverse(angles_deg: Tensor, cx: float, cy: float) -> Tensor:
    """dst -> src matrices ``[n, 3, 3]`` of ``cv2.getRotationMatrix2D((cx, cy), angle, 1)``."""
    rad = angles_deg * (math.pi / 180.0)
    a, b = torch.cos(rad), torch.sin(rad)
    forward = torch.zeros(angles_deg.shape[0], 3, 3, dtype=torch.float64)
    forward[:, 0, 0], forward[:, 0, 1], forward[:, 0, 2] = a, b, (1 - a) * cx - b * cy
    forward[:, 1, 0], forward[:, 1, 1], forward[:, 1, 2] = -b, a, b * cx + (1 - a) * cy
    forward[:, 2, 2] = 1.0
    return torch.linalg.inv(forward)


class RandomRotate(RandomTransform):
    """Rotate a sequence by an angle in ``[-degree, degree]`` with probability ``prob``.

    As OpenGait, the centre passed to cv2 is ``(H // 2, W // 2)`` as (x, y): for 64 x 44 frames the
    rotation turns about column 32, row 22 (published models were trained so).

    Args:
        prob: probability per sequence.
        degree: largest absolute angle in degrees.
    """

    def __init__(self, prob: float = 0.5, degree: float = 10) -> None:
        super().__init__(prob)
        self.degree = float(degree)

    def __call__(self, x: ArrayLike, generator: torch.Generator | None = None) -> Tensor:
        """Same shape; the chosen sequences rotated (zeros fill the corners)."""
        x = _check_batch(_as_tensor(x))
        n = x.shape[0]
        chosen = _chance(n, self.prob, generator)
        angles = _uniform(n, -self.degree, self.degree, generator)
        height, width = x.shape[-2:]
        return _warp_selected(x, chosen, _rotation_inverse(angles, height // 2, width // 2))


def _homographies(src: Tensor, dst: Tensor) -> Tensor:
    """Matrices ``[n, 3, 3]`` mapping the 4 points ``src`` ``[n, 4, 2]`` onto ``dst`` (float64)."""
    n = src.shape[0]
    x, y = src[..., 0], src[..., 1]
    u, v = dst[..., 0], dst[..., 1]
    zeros, ones = torch.zeros_like(x), torch.ones_like(x)
    rows_u = torch.stack([x, y, ones, zeros, zeros, zeros, -u * x, -u * y], dim=-1)
    rows_v = torch.stack([zeros, zeros, zeros, x, y, ones, -v * x, -v * y], dim=-1)
    system = torch.cat([rows_u, rows_v], dim=1)  # [n, 8, 8]
    rhs = torch.cat([u, v], dim=1).unsqueeze(-1)  # [n, 8, 1]
    h = torch.linalg.solve(system, rhs).squeeze(-1)
    return torch.cat([h, torch.ones(n, 1, dtype=h.dtype)], dim=1).view(n, 3, 3)


class RandomPerspective(RandomTransform):
    """Stretch a random quadrilateral (corners within ``(W // 44) * 10`` px of the sides) to the frame.

    With probability ``prob`` per sequence; OpenGait's corner rule: top-left/bottom-left x in
    ``[0, cut)``, top-right/bottom-right x in ``[W - cut, W)``, y = 0 and H.
    """

    def __call__(self, x: ArrayLike, generator: torch.Generator | None = None) -> Tensor:
        """Same shape; the chosen sequences warped (zeros where the source is outside)."""
        x = _check_batch(_as_tensor(x))
        n = x.shape[0]
        height, width = x.shape[-2:]
        cut = (width // 44) * 10
        if cut == 0:
            raise ValueError(f"RandomPerspective needs frames at least 44 px wide, got {width}")
        chosen = _chance(n, self.prob, generator)
        left = _randint(0, cut - 1, (n, 2), generator).double()
        right = _randint(width - cut, width - 1, (n, 2), generator).double()
        top, bottom = torch.zeros(n, dtype=torch.float64), torch.full((n,), float(height), dtype=torch.float64)
        src = torch.stack(
            [
                torch.stack([left[:, 0], top], -1),
                torch.stack([right[:, 0], top], -1),
                torch.stack([right[:, 1], bottom], -1),
                torch.stack([left[:, 1], bottom], -1),
            ],
            dim=1,
        )
        canvas = torch.tensor([[0, 0], [width, 0], [width, height], [0, height]], dtype=torch.float64)
        return _warp_selected(x, chosen, _homographies(canvas.expand(n, 4, 2), src))


class Compose(Transform):
    """Apply transforms in order (OpenGait's ``type: Compose`` with ``trf_cfg``).

    Args:
        trf_cfg: a list of transform configs (mappings with ``type``) or transform objects.
    """

    def __init__(self, trf_cfg: Sequence[Mapping[str, Any] | Transform]) -> None:
        if isinstance(trf_cfg, (Mapping, str)) or not isinstance(trf_cfg, Sequence):
            raise ValueError("Compose: 'trf_cfg' must be a list of transform configs")
        self.transforms = [t if isinstance(t, Transform) else transform_from_config(t) for t in trf_cfg]

    def __call__(self, x: ArrayLike, generator: torch.Generator | None = None) -> Tensor:
        """Run each transform on the output of the previous one."""
        out = _as_tensor(x)
        for transform in self.transforms:
            out = transform(out, generator)
        return out


TRANSFORMS: dict[str, Callable[..., Transform]] = {
    "BaseSilCuttingTransform": BaseSilCuttingTransform,
    "BaseSilTransform": BaseSilTransform,
    "Compose": Compose,
    "NoOperation": NoOperation,
    "RandomErasing": RandomErasing,
    "RandomHorizontalFlip": RandomHorizontalFlip,
    "RandomPerspective": RandomPerspective,
    "RandomRotate": RandomRotate,
}


def transform_from_config(cfg: Mapping[str, Any], where: str = "transform") -> Transform:
    """One transform from ``{"type": NAME, **args}``; an unknown name or argument is a ConfigError naming it."""
    return build(TRANSFORMS, cfg, where)


def build_transform(cfg: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None,
                    where: str = "transform") -> list[Transform]:
    """One transform per input from a config list (a single mapping: one input; None: NoOperation)."""
    if cfg is None:
        return [NoOperation()]
    if isinstance(cfg, Mapping):
        return [transform_from_config(cfg, where)]
    return [transform_from_config(entry, f"{where}[{i}]") for i, entry in enumerate(cfg)]


def apply_transforms(
    transforms: Sequence[Transform], inputs: Sequence[ArrayLike], generator: torch.Generator | None = None
) -> list[Tensor]:
    """Transform each input with its own transform; the counts must match (as OpenGait checks)."""
    if len(transforms) != len(inputs):
        raise ValueError(
            f"the number of inputs ({len(inputs)}) and of transforms ({len(transforms)}) must be the same"
        )
    return [t(x, generator) for t, x in zip(transforms, inputs)]


def fuse_maps_and_silhouettes(maps: ArrayLike, sils: ArrayLike) -> Tensor:
    """SkeletonGait++ input: maps ``[n, s, 2, H, Wm]`` + silhouettes ``[n, s, (1,) H, Ws]`` -> ``[n, s, 3, H, Ws]``.

    As OpenGait: when the silhouettes are not square and the maps are, the maps lose
    ``(H - Ws) // 2`` columns on each side (64 x 64 -> 64 x 44) before the concatenation.
    """
    maps, sils = _as_tensor(maps), _as_tensor(sils)
    if sils.dim() == 4:
        sils = sils.unsqueeze(2)
    if maps.dim() != 5 or sils.dim() != 5 or maps.shape[:2] != sils.shape[:2]:
        raise ValueError(f"maps {tuple(maps.shape)} and silhouettes {tuple(sils.shape)} do not align")
    map_h, map_w = maps.shape[-2:]
    sil_h, sil_w = sils.shape[-2:]
    if sil_h != sil_w and map_h == map_w:
        cut = (sil_h - sil_w) // 2
        maps = maps[..., cut:-cut] if cut else maps
    if maps.shape[-2:] != sils.shape[-2:]:
        raise ValueError(f"maps {tuple(maps.shape)} and silhouettes {tuple(sils.shape)} differ in frame size")
    return torch.cat([maps, sils.to(maps.dtype)], dim=2)
