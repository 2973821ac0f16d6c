"""OpenCV's INTER_AREA resize of float64 images as two weight matrices: out = Wy @ image @ Wx.T.

OpenCV resizes a float64 image with INTER_AREA in one of two ways, both separable and linear:
- when neither axis grows (source >= destination on both), each output pixel is the area-weighted
  mean of the source pixels its cell covers (weights as float32, overlaps under 1e-3 dropped);
- otherwise, on both axes, a two-tap interpolation whose fraction is the part of the source pixel
  that the destination cell's right edge passes (float32 arithmetic), clamped at the borders.
Weights here follow those rules (scale = 1 / (dst / src), as OpenCV computes it) so that a batched
matrix product on any device gives OpenCV's output up to the order of the float64 sums
(tests/test_heatmap_align_torch.py compares every source size 1..128 against cv2.resize).
"""
from __future__ import annotations

import math

import numpy as np

AREA_TOLERANCE = 1e-3


def area_weights(src: int, dst: int) -> np.ndarray:
    """(dst, src) weights of the area-mean path (src >= dst)."""
    scale = 1.0 / (dst / src)
    weights = np.zeros((dst, src), dtype=np.float64)
    for d in range(dst):
        start = d * scale
        stop = start + scale
        cell = min(scale, src - start)
        first, last = math.ceil(start), math.floor(stop)
        last = min(last, src - 1)
        first = min(first, last)
        if first - start > AREA_TOLERANCE:
            weights[d, first - 1] += np.float32((first - start) / cell)
        for s in range(first, last):
            weights[d, s] += np.float32(1.0 / cell)
        if stop - last > AREA_TOLERANCE:
            weights[d, last] += np.float32(min(min(stop - last, 1.0), cell) / cell)
    return weights


def interpolation_weights(src: int, dst: int) -> np.ndarray:
    """(dst, src) weights of the two-tap path that INTER_AREA takes when an axis grows."""
    scale = 1.0 / (dst / src)
    inverse = dst / src
    weights = np.zeros((dst, src), dtype=np.float64)
    for d in range(dst):
        s = math.floor(d * scale)
        frac = np.float32((d + 1) - (s + 1) * inverse)
        frac = np.float32(0.0) if frac <= 0 else np.float32(frac - np.float32(math.floor(frac)))
        if s < 0:
            s, frac = 0, np.float32(0.0)
        if s + 1 >= src and s >= src - 1:
            s, frac = src - 1, np.float32(0.0)
        weights[d, s] += np.float32(np.float32(1.0) - frac)
        if frac != 0:
            weights[d, s + 1] += frac
    return weights


def weight_tables(max_src: int, dst: int) -> np.ndarray:
    """(2, max_src + 1, dst, max_src): [0] area weights, [1] interpolation weights, by source size.

    Row `size` holds the (dst, size) matrix in its first `size` columns (zeros after); size 0 unused.
    """
    tables = np.zeros((2, max_src + 1, dst, max_src), dtype=np.float64)
    for size in range(1, max_src + 1):
        if size >= dst:
            tables[0, size, :, :size] = area_weights(size, dst)
        tables[1, size, :, :size] = interpolation_weights(size, dst)
    return tables


def resize_area(image: np.ndarray, dst: int) -> np.ndarray:
    """cv2.resize(image, (dst, dst), interpolation=cv2.INTER_AREA) of a 2-D float64 image, by weights."""
    rows, cols = image.shape
    if rows >= dst and cols >= dst:
        wy, wx = area_weights(rows, dst), area_weights(cols, dst)
    else:
        wy, wx = interpolation_weights(rows, dst), interpolation_weights(cols, dst)
    return wy @ image @ wx.T
