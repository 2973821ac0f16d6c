"""PNG plots drawn with OpenCV: Rank-1 per probe view x gallery view, and CMC curves."""
from __future__ import annotations

import math
from typing import Sequence

import cv2
import numpy as np

WHITE, BLACK, GRID = (255, 255, 255), (30, 30, 30), (200, 200, 200)
COLOURS = [(180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148), (75, 86, 140)]


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float = 0.45, colour=BLACK) -> None:
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)


def view_heatmap(matrix: Sequence[Sequence[float]], probe_views: Sequence[str], gallery_views: Sequence[str],
                 title: str, cell: int = 56) -> np.ndarray:
    """A BGR image: Rank-1 (%) per probe view (rows) x gallery view (columns), numbers in the cells."""
    m = np.asarray(matrix, dtype=np.float64)
    left, top = 70, 60
    img = np.full((top + cell * m.shape[0] + 40, max(left + cell * m.shape[1] + 20, 440), 3), 255, np.uint8)
    _text(img, title, (10, 22), 0.55)
    _text(img, "gallery view ->", (left, 45))
    for i in range(m.shape[0]):
        _text(img, str(probe_views[i]), (10, top + i * cell + cell // 2 + 5))
        for j in range(m.shape[1]):
            value = m[i, j]
            shade = 255 if math.isnan(value) else int(255 - 2.2 * max(0.0, min(100.0, value)))
            colour = (255, shade, shade) if not math.isnan(value) else (235, 235, 235)
            x0, y0 = left + j * cell, top + i * cell
            cv2.rectangle(img, (x0, y0), (x0 + cell - 2, y0 + cell - 2), colour, -1)
            label = "-" if math.isnan(value) else f"{value:.0f}"
            _text(img, label, (x0 + 12, y0 + cell // 2 + 5), 0.5, WHITE if shade < 120 else BLACK)
    for j, view in enumerate(gallery_views):
        _text(img, str(view), (left + j * cell + 10, top + cell * m.shape[0] + 20))
    _text(img, "probe view", (4, top - 8), 0.4)
    return img


def line_plot(curves: dict[str, tuple[Sequence[float], Sequence[float]]], title: str, x_label: str,
              y_range: tuple[float, float] | None = None, size: tuple[int, int] = (560, 400),
              x_format: str = ".0f", markers: bool = False) -> np.ndarray:
    """A BGR image of named (xs, ys) lines with axis ticks and a legend (last value shown)."""
    width, height = size
    left, right, top, bottom = 60, 150, 40, 50
    img = np.full((height, width, 3), 255, np.uint8)
    _text(img, title, (10, 22), 0.55)
    plot_w, plot_h = width - left - right, height - top - bottom
    xs_all = [x for xs, _ in curves.values() for x in xs]
    ys_all = [y for _, ys in curves.values() for y in ys]
    x0, x1 = min(xs_all), max(xs_all)
    y0, y1 = y_range or (min(0.0, min(ys_all)), max(ys_all) * 1.05 or 1.0)
    sx = lambda x: left + int(plot_w * (x - x0) / ((x1 - x0) or 1))  # noqa: E731
    sy = lambda y: top + plot_h - int(plot_h * (y - y0) / ((y1 - y0) or 1))  # noqa: E731
    for i in range(6):
        value = y0 + (y1 - y0) * i / 5
        cv2.line(img, (left, sy(value)), (left + plot_w, sy(value)), GRID, 1)
        _text(img, f"{value:.3g}", (4, sy(value) + 5), 0.4)
    for i in range(5):
        value = x0 + (x1 - x0) * i / 4
        _text(img, format(value, x_format), (sx(value) - 8, top + plot_h + 18), 0.4)
    _text(img, x_label, (left + plot_w // 2 - 20, height - 10), 0.45)
    for n, (name, (xs, ys)) in enumerate(curves.items()):
        colour = COLOURS[n % len(COLOURS)]
        points = np.array([(sx(x), sy(y)) for x, y in zip(xs, ys)], np.int32)
        cv2.polylines(img, [points], False, colour, 2, cv2.LINE_AA)
        for point in points if markers else []:
            cv2.circle(img, (int(point[0]), int(point[1])), 4, colour, -1, cv2.LINE_AA)
        cv2.line(img, (width - right + 12, top + 12 + 20 * n), (width - right + 32, top + 12 + 20 * n), colour, 2)
        _text(img, f"{name} {ys[-1]:.3g}", (width - right + 38, top + 16 + 20 * n), 0.4)
    return img


def cmc_plot(curves: dict[str, Sequence[float]], title: str, size: tuple[int, int] = (560, 400)) -> np.ndarray:
    """A BGR image of CMC curves (accuracy % against rank 1..K), one line per condition."""
    ranked = {f"{name} R1": (list(range(1, len(c) + 1)), list(c)) for name, c in curves.items()}
    return line_plot(ranked, title, "rank", y_range=(0.0, 100.0), size=size)
