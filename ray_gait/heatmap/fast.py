"""Compiled fast path of the map renderer (the optional C extension `ray_gait.heatmap._kernel`).

`render_maps_fast` computes what `ray_gait.heatmap.render.render_maps` computes (same windows,
values, limbs, 256-level gray table), frame by frame in C: only the pixels inside each item's
window are evaluated, in float32 in the log2 domain (adds and maxima per item, one vectorized 2^x
per pixel at the end), so a 128x128 frame costs about 100k cheap pixel updates instead of 34
full grids.  Agreement with the numpy renderer and with
OpenGait's outputs: tests/test_heatmap_fast.py.

`render_maps_with_rows` also reports the rows with content, which `align.align_maps` takes.

The extension is optional (setup.py skips it when there is no C compiler).  Where the package was
copied without it (`ray job submit --working-dir .` leaves out every `*.so`), it is built here once
per machine from `_kernel.c` (`kernel_build`).  `available()` says whether a kernel is loaded,
`kernel_origin()` from where, or why there is none; nothing here raises ImportError.
"""
from __future__ import annotations

import logging

import numpy as np

from ray_gait.heatmap import kernel_build
from ray_gait.heatmap.render import GRAY
from ray_gait.pose.skeleton import LIMB_INDEX


def _load_kernel():
    """The installed kernel, else one built on this machine: (module or None, where it came from, or why not)."""
    try:
        from ray_gait.heatmap import _kernel as installed
        return installed, "installed"
    except ImportError as exc:  # not built at install time, left out of an uploaded copy, or for another Python
        missing = f"not installed ({exc})"
    if not kernel_build.build_allowed():
        return None, f"{missing}; building it here is off ({kernel_build.BUILD_ENV}=0)"
    try:
        module = kernel_build.load_built_kernel()
    except kernel_build.KernelBuildError as exc:
        return None, f"{missing}; could not build it here: {exc}"
    return module, f"built here ({module.__file__})"


log = logging.getLogger(__name__)

_kernel, _ORIGIN = _load_kernel()
_WHY_NOT = _ORIGIN if _kernel is None else "switched off in this process"

_LIMBS = np.ascontiguousarray(LIMB_INDEX, dtype=np.int64)
_GRAY = np.ascontiguousarray(GRAY, dtype=np.uint8)


def available() -> bool:
    """True when the compiled kernel is loaded."""
    return _kernel is not None


def loaded_kernel():
    """The compiled kernel module (installed or built here), or None."""
    return _kernel


def kernel_origin() -> str:
    """Where the kernel came from ("installed", "built here (<file>)"), or why there is none."""
    return _ORIGIN if _kernel is not None else _WHY_NOT


_warned_fallback = False


def warn_numpy_fallback() -> None:
    """Log once per process that maps are drawn with numpy because the kernel is missing (and why)."""
    global _warned_fallback
    if not _warned_fallback:
        _warned_fallback = True
        log.warning("the compiled heatmap kernel is missing here, maps are drawn with numpy (about 10x slower): %s",
                    kernel_origin())


def _render(pts: np.ndarray, values: np.ndarray, sigma: float, height: int, width: int,
            eps: float, rows: bool) -> tuple[np.ndarray, np.ndarray | None]:
    if _kernel is None:
        raise RuntimeError("the compiled heatmap kernel is not built (ray_gait.heatmap.fast.available() is False)")
    pts = np.ascontiguousarray(pts, dtype=np.float64)
    values = np.ascontiguousarray(values, dtype=np.float64)
    if pts.ndim != 3 or pts.shape[2] != 2:
        raise ValueError(f"pts must be (T, V, 2), got shape {pts.shape}")
    if values.shape != pts.shape[:2]:
        raise ValueError(f"values must be (T, V) = {pts.shape[:2]}, got shape {values.shape}")
    n_frames, n_joints = pts.shape[:2]
    if n_joints <= int(_LIMBS.max()):
        raise ValueError(f"the COCO-17 limbs need at least {int(_LIMBS.max()) + 1} joints, got {n_joints}")
    height, width = int(height), int(width)
    out = np.empty((n_frames, 2, height, width), dtype=np.uint8)
    used = np.empty((n_frames, 2, 2), dtype=np.int32) if rows else None
    _kernel.render_maps(pts, values, _LIMBS, _GRAY, out, used, n_frames, n_joints, float(sigma),
                        height, width, float(eps))
    return out, used


def render_maps_fast(pts: np.ndarray, values: np.ndarray, sigma: float, height: int, width: int,
                     eps: float = 1e-3) -> np.ndarray:
    """Gray limb and joint maps (T, 2, H, W) uint8 of normalized poses pts (T, V, 2), values (T, V).

    Drop-in for `render_maps(ArrayOps(np), pts, values, sigma, height, width, eps)`; raises
    RuntimeError when `available()` is False.  Releases the GIL while rendering.
    """
    return _render(pts, values, sigma, height, width, eps, rows=False)[0]


def render_maps_with_rows(pts: np.ndarray, values: np.ndarray, sigma: float, height: int, width: int,
                          eps: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """`render_maps_fast` plus (T, 2, 2) int32: first and last row with a non-zero gray level per
    frame and channel (-1, -1 for a blank map), which the alignment's crop needs."""
    out, used = _render(pts, values, sigma, height, width, eps, rows=True)
    return out, used
