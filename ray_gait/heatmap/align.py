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


def crop_bounds(maps: np.ndarray, offset: int, centre: int) -> np.ndarray:
    """Per image (N, H, W) uint8 -> (N, 4) int rows [r0, r1) and columns [c0, c1) of the crop."""
    rows_used = maps.reshape(maps.shape[0], maps.shape[1], -1).any(axis=2)      # (N, H)
    top = rows_used.argmax(axis=1)
    bottom = np.cumsum(rows_used, axis=1).argmax(axis=1)
    h = bottom - top + 1
    n_rows = maps.shape[1]
    bounds = np.empty((maps.shape[0], 4), dtype=np.int64)
    for i, (t, b, height) in enumerate(zip(top.tolist(), bottom.tolist(), h.tolist())):
        r0, r1, _ = slice(t - offset, b + 1 + offset).indices(n_rows)
        if r1 <= r0:
            r0, r1 = max(t - offset, 0), min(b + 1 + offset, n_rows)
        c0, c1, _ = slice(centre - height // 2, centre + height // 2 + 1).indices(maps.shape[2])
        bounds[i] = (r0, r1, c0, c1)
    return bounds


def align_maps(maps: np.ndarray, final_size: int, offset: int, centre: int, align: bool = True) -> np.ndarray:
    """(T, C, H, W) uint8 gray maps -> (T, C, S, S) uint8, each channel cropped on its own."""
    n_frames, n_channels = maps.shape[:2]
    flat = maps.reshape(n_frames * n_channels, maps.shape[2], maps.shape[3])
    out = np.empty((flat.shape[0], final_size, final_size), dtype=np.uint8)
    if align:
        bounds = crop_bounds(flat, offset, centre)
    else:
        bounds = np.tile(np.array([0, flat.shape[1], 0, flat.shape[2]]), (flat.shape[0], 1))
    scaled = flat / 255.0
    for i, (r0, r1, c0, c1) in enumerate(bounds.tolist()):
        resized = cv2.resize(scaled[i, r0:r1, c0:c1], (final_size, final_size), interpolation=cv2.INTER_AREA)
        out[i] = (resized * 255).astype(np.uint8)
    return out.reshape(n_frames, n_channels, final_size, final_size)
