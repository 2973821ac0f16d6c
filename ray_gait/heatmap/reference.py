"""A slow, scalar reference renderer written straight from the definition (a test oracle).

Pixel by pixel, item by item, in plain Python: no vectorization, no separable tricks, no OpenCV.
Used by the tests and the benchmark to check the numpy and torch renderers.
"""
from __future__ import annotations

import math

import numpy as np

from ray_gait.heatmap.config import HeatmapConfig, load_heatmap_config
from ray_gait.heatmap.render import GRAY
from ray_gait.pose.skeleton import COCO17_LIMBS


def _window(lo: float, hi: float, sigma: float, size: int) -> range:
    return range(max(int(lo - 3 * sigma), 0), min(int(hi + 3 * sigma) + 1, size))


def _segment_distance2(px: float, py: float, ax: float, ay: float, bx: float, by: float) -> float:
    """Squared distance from a pixel to the segment a-b."""
    abx, aby = bx - ax, by - ay
    t = ((px - ax) * abx + (py - ay) * aby) / (abx * abx + aby * aby)
    t = min(max(t, 0.0), 1.0)
    qx, qy = ax + t * abx, ay + t * aby
    return (px - qx) ** 2 + (py - qy) ** 2


def reference_frame_maps(pts: np.ndarray, values: np.ndarray, sigma: float, height: int, width: int,
                         eps: float = 1e-3) -> np.ndarray:
    """Gray limb and joint maps (2, H, W) uint8 of one frame's normalized pose (V, 2) and values (V,)."""
    limb = [[0.0] * width for _ in range(height)]
    joint = [[0.0] * width for _ in range(height)]

    def stamp(target: list, x: float, y: float, value: float) -> None:
        for row in _window(y, y, sigma, height):
            for col in _window(x, x, sigma, width):
                g = value * math.exp(-((col - x) ** 2 + (row - y) ** 2) / (2 * sigma ** 2))
                target[row][col] = max(target[row][col], g)

    for a, b in COCO17_LIMBS:
        (ax, ay), (bx, by) = pts[a], pts[b]
        value = min(values[a], values[b])
        if value < eps:
            continue
        if (ax - bx) ** 2 + (ay - by) ** 2 < 1:
            stamp(limb, ax, ay, values[a])
            continue
        for row in _window(min(ay, by), max(ay, by), sigma, height):
            for col in _window(min(ax, bx), max(ax, bx), sigma, width):
                g = value * math.exp(-_segment_distance2(col, row, ax, ay, bx, by) / (2 * sigma ** 2))
                limb[row][col] = max(limb[row][col], g)
    for j in range(pts.shape[0]):
        if values[j] >= eps:
            stamp(joint, pts[j, 0], pts[j, 1], values[j])

    out = np.zeros((2, height, width), dtype=np.uint8)
    for c, image in enumerate((limb, joint)):
        for row in range(height):
            for col in range(width):
                level = min(int(float(np.float32(image[row][col])) * 256), 255)
                out[c, row, col] = GRAY[level]
    return out


def reference_area_resize(image: np.ndarray, size: int) -> np.ndarray:
    """Resize (h, w) to (size, size): each output pixel is the mean of the input area it covers."""
    h, w = image.shape
    out = np.zeros((size, size), dtype=np.float64)
    sy, sx = h / size, w / size
    for i in range(size):
        for j in range(size):
            y0, y1, x0, x1 = i * sy, (i + 1) * sy, j * sx, (j + 1) * sx
            total = 0.0
            for r in range(int(math.floor(y0)), min(int(math.ceil(y1)), h)):
                wy = min(y1, r + 1) - max(y0, r)
                for c in range(int(math.floor(x0)), min(int(math.ceil(x1)), w)):
                    wx = min(x1, c + 1) - max(x0, c)
                    total += wy * wx * image[r, c]
            out[i, j] = total / (sy * sx)
    return out


def reference_align(gray: np.ndarray, final_size: int, offset: int, centre: int, align: bool = True) -> np.ndarray:
    """Crop one (H, W) gray map to its rows with content and a centred window, then area-resize."""
    image = gray.astype(np.float64) / 255.0
    if align:
        rows = [r for r in range(gray.shape[0]) if gray[r].any()]
        top, bottom = (rows[0], rows[-1]) if rows else (0, 0)
        half = (bottom - top + 1) // 2
        image = image[max(top - offset, 0):bottom + 1 + offset, max(centre - half, 0):centre + half + 1]
    resized = reference_area_resize(image, final_size)
    return np.floor(resized * 255 + 1e-9).clip(0, 255).astype(np.uint8)


def reference_render(pose: np.ndarray, config: HeatmapConfig | None = None) -> np.ndarray:
    """The whole step 1 for one sequence with the scalar renderer: (T, V, 3) -> (T, 2, S, S) uint8."""
    from ray_gait.heatmap.pipeline import normalize_pose, validate_pose
    config = config or load_heatmap_config()
    pts, values = normalize_pose(validate_pose(pose, config), config)
    gen, align = config.heatmap_generator_args, config.align_args
    out = np.zeros((pts.shape[0], 2, align.final_img_size, align.final_img_size), dtype=np.uint8)
    for t in range(pts.shape[0]):
        maps = reference_frame_maps(pts[t], values[t], gen.sigma, gen.img_h, gen.img_w, gen.eps)
        for c in range(2):
            out[t, c] = reference_align(maps[c], align.final_img_size, align.offset,
                                        align.heatmap_image_size // 2, align.align)
    return out
