"""Alignment: crop each map to its rows with content and a centred window, then area-resize.

Reference semantics, per frame and per channel: rows `top - offset .. bottom + offset` (Python
slicing, so a negative start counts from the end, as the reference does), columns
`C - h // 2 .. C + h // 2` inclusive around the map centre C (not the person's centre), where h is
the number of rows with content; then OpenCV's INTER_AREA resize of the [0, 1] image in float64 to
`final_img_size`, times 255, truncated to uint8.  An all-blank frame crops to one pixel and gives
a blank map.  A crop that the reference would leave empty (it crashes there) is clamped instead.
"""
from __future__ import annotations

import cv2
import numpy as np

from ray_gait.heatmap import fast

_kernel = fast.loaded_kernel()  # None without the optional compiled kernel

# gray / 255.0 for every gray level: the same IEEE divisions as dividing the crop by 255.
_UNIT = np.arange(256, dtype=np.float64) / 255.0


def content_rows(maps: np.ndarray) -> np.ndarray:
    """First and last row with a non-zero pixel of each image (N, H, W) -> (N, 2); (-1, -1) if blank."""
    used = maps.reshape(maps.shape[0], maps.shape[1], -1).any(axis=2)
    top = used.argmax(axis=1)
    bottom = maps.shape[1] - 1 - used[:, ::-1].argmax(axis=1)
    blank = ~used.any(axis=1)
    return np.stack([np.where(blank, -1, top), np.where(blank, -1, bottom)], axis=1)


def _slice_indices(start: np.ndarray, stop: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Vectorized `slice(start, stop).indices(size)[:2]` (negative bounds count from the end)."""
    start = np.where(start < 0, np.maximum(start + size, 0), np.minimum(start, size))
    stop = np.where(stop < 0, np.maximum(stop + size, 0), np.minimum(stop, size))
    return start, stop


def crop_bounds(rows: np.ndarray, height: int, width: int, offset: int, centre: int) -> np.ndarray:
    """(N, 4) rows [r0, r1) and columns [c0, c1) of each crop, from content rows (N, 2) (see above)."""
    rows = np.asarray(rows, dtype=np.int64).reshape(-1, 2)
    top = np.maximum(rows[:, 0], 0)          # a blank map: top = bottom = 0, one row
    bottom = np.maximum(rows[:, 1], 0)
    half = (bottom - top + 1) // 2
    r0, r1 = _slice_indices(top - offset, bottom + 1 + offset, height)
    empty = r1 <= r0
    r0 = np.where(empty, np.maximum(top - offset, 0), r0)
    r1 = np.where(empty, np.minimum(bottom + 1 + offset, height), r1)
    c0, c1 = _slice_indices(centre - half, centre + half + 1, width)
    return np.stack([r0, r1, c0, c1], axis=1)


def align_maps(maps: np.ndarray, final_size: int, offset: int, centre: int, align: bool = True,
               rows: np.ndarray | None = None) -> np.ndarray:
    """(T, C, H, W) uint8 gray maps -> (T, C, S, S) uint8, each channel cropped on its own.

    `rows` (T, C, 2), when the renderer already knows the rows with content, saves searching for
    them.  Each crop is scaled to [0, 1] on its own in a reused buffer (cheaper than dividing the
    whole array), then resized by OpenCV exactly as the reference does.
    """
    maps = np.ascontiguousarray(maps, dtype=np.uint8)
    n_frames, n_channels, height, width = maps.shape
    n_images = n_frames * n_channels
    flat = maps.reshape(n_images, height, width)
    if not align:
        bounds = np.tile(np.array([0, height, 0, width], dtype=np.int64), (n_images, 1))
    else:
        bounds = crop_bounds(content_rows(flat) if rows is None else rows, height, width, offset, centre)
    resized = np.empty((n_images, final_size, final_size), dtype=np.float64)
    buf = np.empty(height * width, dtype=np.float64)
    size = (final_size, final_size)
    for i, (r0, r1, c0, c1) in enumerate(bounds.tolist()):
        crop = buf[:(r1 - r0) * (c1 - c0)].reshape(r1 - r0, c1 - c0)
        if _kernel is not None:
            _kernel.unit_crop(maps, n_images, height, width, i, r0, r1, c0, c1, _UNIT, buf)
        else:
            np.divide(flat[i, r0:r1, c0:c1], 255.0, out=crop)
        resized[i] = cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
    resized *= 255
    return resized.astype(np.uint8).reshape(n_frames, n_channels, final_size, final_size)
