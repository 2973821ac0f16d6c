"""Plots drawn with matplotlib (Agg, no display): CMC curves, Rank-1 per probe x gallery view, training curves.

Each `*_figure` function is pure: data in, a `matplotlib.figure.Figure` out (axes labelled, nothing
drawn on screen or written).  `figure_png` and `figure_image` render one, as PNG bytes or as the
BGR array that `ray_gait.heatmap.preview.write_png` encodes.  matplotlib is imported when the first
figure is drawn, so that the Ray workers which import this module's callers and never draw do not
load it (0.7 s per process).
"""
from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING, Mapping, Sequence

import cv2
import numpy as np

from ray_gait.io import fs

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 100
SIZE = (640, 480)
Curve = tuple[Sequence[float], Sequence[float]]


def _figure(size: tuple[int, int] = SIZE) -> Figure:
    """A blank figure of `size` pixels (width, height) on the Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    figure = Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _integer_ticks():
    """A tick locator that puts ticks on integers only."""
    from matplotlib.ticker import MaxNLocator
    return MaxNLocator(integer=True)


def figure_image(figure: Figure) -> np.ndarray:
    """The figure rendered as a BGR uint8 image (height, width, 3)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    canvas = figure.canvas if isinstance(figure.canvas, FigureCanvasAgg) else FigureCanvasAgg(figure)
    canvas.draw()
    return cv2.cvtColor(np.asarray(canvas.buffer_rgba()), cv2.COLOR_RGBA2BGR)


def figure_png(figure: Figure) -> bytes:
    """The figure as PNG bytes, at its own size."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def write_figure(target: str, figure: Figure) -> str:
    """Write a figure as a PNG file (local path or URI), atomically; returns `target`."""
    fs.write_bytes_atomic(fs.resolve(target), figure_png(figure))
    return target


def view_matrix_figure(matrix: Sequence[Sequence[float]], probe_views: Sequence[str],
                       gallery_views: Sequence[str], title: str) -> Figure:
    """Rank-1 (%) per probe view (rows) x gallery view (columns), each cell annotated; NaN cells blank."""
    values = np.asarray(matrix, dtype=np.float64)
    rows, cols = values.shape
    figure = _figure((max(SIZE[0], 120 + 64 * cols), max(360, 140 + 48 * rows)))
    axes = figure.add_subplot()
    image = axes.imshow(np.ma.masked_invalid(values), cmap="Blues", vmin=0.0, vmax=100.0, aspect="auto")
    for i in range(rows):
        for j in range(cols):
            value = values[i, j]
            text = "-" if math.isnan(value) else f"{value:.0f}"
            colour = "white" if not math.isnan(value) and value > 60 else "black"
            axes.text(j, i, text, ha="center", va="center", color=colour, fontsize=9)
    axes.set_xticks(range(cols), [str(v) for v in gallery_views])
    axes.set_yticks(range(rows), [str(v) for v in probe_views])
    axes.set_xlabel("gallery view")
    axes.set_ylabel("probe view")
    axes.set_title(title)
    figure.colorbar(image, ax=axes, label="Rank-1 (%)")
    return figure


def lines_figure(curves: Mapping[str, Curve], title: str, x_label: str, y_label: str,
                 y_range: tuple[float, float] | None = None, markers: bool = False, log_x: bool = False,
                 size: tuple[int, int] = SIZE) -> Figure:
    """Named (xs, ys) lines on one labelled axes, with a legend."""
    figure = _figure(size)
    axes = figure.add_subplot()
    for name, (xs, ys) in curves.items():
        axes.plot(list(xs), list(ys), marker="o" if markers else None, markersize=4, label=name)
    if log_x:
        axes.set_xscale("log")
    if y_range is not None:
        axes.set_ylim(*y_range)
    axes.set_xlabel(x_label)
    axes.set_ylabel(y_label)
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    if curves:
        axes.legend(fontsize=8)
    return figure


def cmc_figure(curves: Mapping[str, Sequence[float]], title: str) -> Figure:
    """CMC curves: identification rate (%) against rank 1..K, one line per condition (Rank-1 in the legend)."""
    ranked = {f"{name} (Rank-1 {c[0]:.1f}%)": (list(range(1, len(c) + 1)), list(c))
              for name, c in curves.items() if len(c)}
    figure = lines_figure(ranked, title, "rank", "identification rate (%)", y_range=(0.0, 100.0), markers=True)
    axes = figure.axes[0]
    axes.set_xlim(0.5, max((len(c) for c in curves.values()), default=1) + 0.5)
    axes.xaxis.set_major_locator(_integer_ticks())
    return figure


def training_figure(loss: Mapping[str, Curve], rank1: Mapping[str, Curve], title: str) -> Figure:
    """Training curves: losses (left) and Rank-1 (%) of the evaluated splits (right) against the iteration."""
    figure = _figure((960, 400))
    left, right = figure.subplots(1, 2)
    for axes, curves, y_label in ((left, loss, "loss"), (right, rank1, "Rank-1 (%)")):
        for name, (xs, ys) in curves.items():
            axes.plot(list(xs), list(ys), marker="o" if len(xs) < 30 else None, markersize=3, label=name)
        axes.set_xlabel("iteration")
        axes.xaxis.set_major_locator(_integer_ticks())
        axes.set_ylabel(y_label)
        axes.grid(True, alpha=0.3)
        if curves:
            axes.legend(fontsize=8)
        else:
            axes.text(0.5, 0.5, "not evaluated during training", ha="center", va="center",
                      transform=axes.transAxes, color="gray")
            axes.set_xticks([])
    right.set_ylim(0.0, 100.0)
    left.set_title("loss")
    right.set_title("Rank-1")
    figure.suptitle(title)
    return figure


def _curves(scalars: Mapping[str, Sequence[tuple[int, float]]], tags: Sequence[str]) -> dict[str, Curve]:
    return {tag: ([s for s, _ in scalars[tag]], [v for _, v in scalars[tag]]) for tag in tags if scalars.get(tag)}


def training_curves_figure(scalars: Mapping[str, Sequence[tuple[int, float]]], title: str) -> Figure | None:
    """Training curves from a run's scalars ({tag: [(iteration, value)]}, as TensorBoard holds them): the total
    and per-term losses, and the Rank-1 of each evaluated split; None when no loss was recorded."""
    loss_tags = ["train/loss", *sorted(t for t in scalars if t.endswith("/loss") and t != "train/loss")]
    rank1_tags = sorted(t for t in scalars if t.endswith("/rank1"))
    loss = _curves(scalars, loss_tags)
    if not loss:
        return None
    return training_figure(loss, _curves(scalars, rank1_tags), title)
