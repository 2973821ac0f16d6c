"""Gaussian limb and joint maps, vectorized over frames, joints and limbs (numpy or torch).

One implementation serves both backends: `ArrayOps` hides the few calls whose names differ.
Per frame the map is the maximum over items (17 limbs, or 17 joints) of
`value * exp(-d^2 / 2 / sigma^2)` inside the item's window `int(lo - 3 sigma) .. int(hi + 3 sigma)`
(clipped to the map), where d is the distance to the limb segment (or to the joint) and value is
the smaller confidence of its two ends (or the joint's).  The maximum is quantized to the 256-level
gray table of the reference: level = GRAY[floor(256 * float32(max))].
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ray_gait.pose.skeleton import LIMB_INDEX

# Elements per intermediate array (block of frames x items x rows x columns): cache-sized on the CPU;
# on a GPU large enough that one block holds hundreds of frames (a few GB of intermediates).
BLOCK_ELEMENTS = 1 << 18
GPU_BLOCK_ELEMENTS = 1 << 27


def gray_table() -> np.ndarray:
    """The reference's 256-level gray table (matplotlib's `cm.gray`, times 255, truncated to uint8).

    Linear interpolation on 256 nodes in float64 does not give back every integer: 24 of the 256
    levels come out one lower (e.g. 98 -> 97), and published models were trained on these maps.
    """
    nodes = 255.0 * np.linspace(0.0, 1.0, 256)
    return ((nodes / 255.0) * 255.0).astype(np.uint8)


GRAY = gray_table()


@dataclass(frozen=True)
class ArrayOps:
    """The array calls the renderer needs, for numpy or torch."""

    xp: Any
    device: Any = None
    precision: str = "float64"

    @property
    def is_torch(self) -> bool:
        """True for the torch backend."""
        return self.xp.__name__ == "torch"

    @property
    def on_gpu(self) -> bool:
        """True for the torch backend on a device other than the CPU."""
        return self.is_torch and self.device is not None and self.device.type != "cpu"

    def arange(self, start: int, stop: int) -> Any:
        """Pixel coordinates start..stop-1 as floats."""
        if self.is_torch:
            return self.xp.arange(start, stop, dtype=getattr(self.xp, self.precision), device=self.device)
        return np.arange(start, stop, dtype=self.precision)

    def asarray(self, x: np.ndarray) -> Any:
        """Move a numpy array to the backend in the compute precision."""
        if self.is_torch:
            return self.xp.as_tensor(x, dtype=getattr(self.xp, self.precision), device=self.device)
        return x.astype(self.precision, copy=False)

    def amax(self, x: Any, axis: int) -> Any:
        """Maximum along an axis."""
        return self.xp.amax(x, axis)

    def to_float32(self, x: Any) -> Any:
        """Round to float32 (the reference's map dtype)."""
        return x.to(self.xp.float32) if self.is_torch else x.astype(np.float32)

    def to_index(self, x: Any) -> Any:
        """Integer indices from floats that are already whole numbers."""
        return x.to(self.xp.int64) if self.is_torch else x.astype(np.int64)

    def gather(self, table: np.ndarray, index: Any) -> Any:
        """table[index] as uint8."""
        if self.is_torch:
            return self.xp.as_tensor(table, device=self.device)[index]
        return table[index]

    def scalar_int(self, x: Any) -> int:
        """A Python int from a 0-d array."""
        return int(x.item()) if self.is_torch else int(x)


def _windows(ops: ArrayOps, lo_x: Any, hi_x: Any, lo_y: Any, hi_y: Any, sigma: float,
             height: int, width: int) -> tuple[Any, Any, Any, Any]:
    """Inclusive-exclusive pixel windows `max(int(lo - 3s), 0) .. min(int(hi + 3s) + 1, size)`."""
    xp = ops.xp
    x0 = xp.clip(xp.trunc(lo_x - 3 * sigma), 0, None)
    x1 = xp.clip(xp.trunc(hi_x + 3 * sigma) + 1, None, width)
    y0 = xp.clip(xp.trunc(lo_y - 3 * sigma), 0, None)
    y1 = xp.clip(xp.trunc(hi_y + 3 * sigma) + 1, None, height)
    return x0, x1, y0, y1


def _levels(ops: ArrayOps, gauss: Any) -> Any:
    """Quantized gray levels (B, h, w) of the maximum over items (axis 1) of (B, L, h, w) values."""
    xp = ops.xp
    index = xp.clip(xp.floor(ops.to_float32(ops.amax(gauss, 1)) * 256.0), 0, 255)
    return ops.gather(GRAY, ops.to_index(index))


def _region(ops: ArrayOps, x0: Any, x1: Any, y0: Any, y1: Any, active: Any,
            height: int, width: int) -> tuple[Any, Any] | None:
    """Pixel coordinates (columns, rows) of the bounding box of a block's drawn windows, or None."""
    xp = ops.xp
    usable = active & (x1 > x0) & (y1 > y0)
    if not bool(usable.any()):
        return None
    big, small = float(max(height, width)), -1.0
    rx0 = ops.scalar_int(xp.where(usable, x0, big).min())
    ry0 = ops.scalar_int(xp.where(usable, y0, big).min())
    rx1 = ops.scalar_int(xp.where(usable, x1, small).max())
    ry1 = ops.scalar_int(xp.where(usable, y1, small).max())
    return ops.arange(rx0, rx1), ops.arange(ry0, ry1)


def _squared_offsets(ops: ArrayOps, grid: Any, centre: Any, lo: Any, hi: Any, active: Any) -> Any:
    """(grid - centre)^2 per item (B, L, n), +inf outside the item's window or for inactive items."""
    xp = ops.xp
    inside = (grid >= lo[..., None]) & (grid < hi[..., None]) & active[..., None]
    return xp.where(inside, (grid - centre[..., None]) ** 2, float("inf"))


def render_limbs_block(ops: ArrayOps, pts: Any, values: Any, sigma: float, height: int, width: int,
                       eps: float, out: Any) -> None:
    """Write the limb map levels of a block of frames: pts (B, 17, 2), values (B, 17) -> out (B, H, W).

    Squared distances split into per-column and per-row terms (B, L, w) and (B, L, h): to the start
    joint, to the end joint, and the projection coefficient on the segment (linear in x and y), so
    each pixel costs a few additions, one exp and the maximum over limbs.
    """
    xp = ops.xp
    start, end = pts[:, LIMB_INDEX[:, 0]], pts[:, LIMB_INDEX[:, 1]]            # (B, L, 2)
    v_start, v_end = values[:, LIMB_INDEX[:, 0]], values[:, LIMB_INDEX[:, 1]]  # (B, L)
    value = xp.minimum(v_start, v_end)
    active = value >= eps
    sx, sy, ex, ey = start[..., 0], start[..., 1], end[..., 0], end[..., 1]
    d2_ab = (sx - ex) ** 2 + (sy - ey) ** 2
    # A limb shorter than one pixel is drawn as its start joint, with the start joint's value.
    short = d2_ab < 1
    value = xp.where(short, v_start, value)
    x0, x1, y0, y1 = _windows(ops, xp.where(short, sx, xp.minimum(sx, ex)), xp.where(short, sx, xp.maximum(sx, ex)),
                              xp.where(short, sy, xp.minimum(sy, ey)), xp.where(short, sy, xp.maximum(sy, ey)),
                              sigma, height, width)
    region = _region(ops, x0, x1, y0, y1, active, height, width)
    if region is None:
        return
    cols, rows = region
    to_start_x = _squared_offsets(ops, cols, sx, x0, x1, active)[:, :, None, :]
    to_start_y = _squared_offsets(ops, rows, sy, y0, y1, active)[:, :, :, None]
    to_end_x = _squared_offsets(ops, cols, ex, x0, x1, active)[:, :, None, :]
    to_end_y = _squared_offsets(ops, rows, ey, y0, y1, active)[:, :, :, None]
    safe_ab = xp.where(short, 1.0, d2_ab)
    # Projection coefficient of the pixel on the segment; 0 for short limbs (always the start joint).
    step_x = xp.where(short, 0.0, (ex - sx) / safe_ab)[..., None]
    step_y = xp.where(short, 0.0, (ey - sy) / safe_ab)[..., None]
    coeff = ((rows - sy[..., None]) * step_y)[:, :, :, None] + ((cols - sx[..., None]) * step_x)[:, :, None, :]
    d2_start = to_start_y + to_start_x
    d2_line = xp.clip(d2_start - coeff * coeff * safe_ab[..., None, None], 0.0, None)
    d2 = xp.where(coeff <= 0, d2_start, xp.where(coeff >= 1, to_end_y + to_end_x, d2_line))
    gauss = xp.exp(-d2 / 2.0 / sigma ** 2) * value[..., None, None]
    out[:, ops.scalar_int(rows[0]):ops.scalar_int(rows[-1]) + 1,
        ops.scalar_int(cols[0]):ops.scalar_int(cols[-1]) + 1] = _levels(ops, gauss)


def render_joints_block(ops: ArrayOps, pts: Any, values: Any, sigma: float, height: int, width: int,
                        eps: float, out: Any) -> None:
    """Write the joint map levels of a block of frames: pts (B, V, 2), values (B, V) -> out (B, H, W).

    The Gaussian of a joint is separable: exp(-dx^2 / 2s^2) * exp(-dy^2 / 2s^2), so each pixel
    costs one product and the maximum over joints.
    """
    xp = ops.xp
    mx, my = pts[..., 0], pts[..., 1]
    active = values >= eps
    x0, x1, y0, y1 = _windows(ops, mx, mx, my, my, sigma, height, width)
    region = _region(ops, x0, x1, y0, y1, active, height, width)
    if region is None:
        return
    cols, rows = region
    gx = xp.exp(-_squared_offsets(ops, cols, mx, x0, x1, active) / 2.0 / sigma ** 2)
    gy = xp.exp(-_squared_offsets(ops, rows, my, y0, y1, active) / 2.0 / sigma ** 2) * values[..., None]
    gauss = gy[:, :, :, None] * gx[:, :, None, :]
    out[:, ops.scalar_int(rows[0]):ops.scalar_int(rows[-1]) + 1,
        ops.scalar_int(cols[0]):ops.scalar_int(cols[-1]) + 1] = _levels(ops, gauss)


def render_maps(ops: ArrayOps, pts: Any, values: Any, sigma: float, height: int, width: int,
                eps: float = 1e-3, block_elements: int | None = None) -> Any:
    """Gray limb and joint maps (T, 2, H, W) uint8 of normalized poses pts (T, V, 2), values (T, V)."""
    n_frames = pts.shape[0]
    if block_elements is None:
        block_elements = GPU_BLOCK_ELEMENTS if ops.on_gpu else BLOCK_ELEMENTS
    if ops.is_torch:
        out = ops.xp.zeros((n_frames, 2, height, width), dtype=ops.xp.uint8, device=ops.device)
    else:
        out = np.zeros((n_frames, 2, height, width), dtype=np.uint8)
    per_frame = max(LIMB_INDEX.shape[0], pts.shape[1]) * height * width
    block = max(1, block_elements // per_frame)
    for first in range(0, n_frames, block):
        sl = slice(first, min(first + block, n_frames))
        render_limbs_block(ops, pts[sl], values[sl], sigma, height, width, eps, out[sl, 0])
        render_joints_block(ops, pts[sl], values[sl], sigma, height, width, eps, out[sl, 1])
    return out
