"""Pose preprocessing before rendering: fill missing joints, centre on the hips, scale the height.

A coordinate of exactly 0 means "missing" (the pose files' convention).  By default the reference
generator's behaviour is reproduced exactly, quirks included; `fix_quirks=True`
always fills what can be filled and keeps missing joints out of the centring and scaling.
"""
from __future__ import annotations

import numpy as np

KNN_NEIGHBOURS = 4


def _nan_euclidean(rows: np.ndarray, rows_present: np.ndarray, data: np.ndarray,
                   present: np.ndarray) -> np.ndarray:
    """Distances (R, T) ignoring missing coordinates, rescaled by D / (coordinates present in both)."""
    both = rows_present[:, None, :] & present[None, :, :]
    diff = np.where(both, rows[:, None, :] - data[None, :, :], 0.0)
    squared = np.einsum("rtd,rtd->rt", diff, diff)
    count = both.sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        dist = np.sqrt(squared * data.shape[1] / count)
    dist[count == 0] = np.nan
    return dist


def knn_impute(data: np.ndarray, k: int = KNN_NEIGHBOURS) -> np.ndarray:
    """Fill zeros of (T, D) from the k nearest frames (nan-Euclidean distance, 1/distance weights).

    The semantics of scikit-learn's KNNImputer(missing_values=0, weights="distance"): donors are
    the frames where the column is present; a receiver with no comparable donor gets the column
    mean; an exact match (distance 0) takes all the weight.  Columns missing in every frame stay 0.
    """
    data = np.asarray(data, dtype=np.float64)
    present = data != 0
    missing = ~present
    rows = np.flatnonzero(missing.any(axis=1))
    out = data.copy()
    if rows.size == 0:
        return out
    dist = _nan_euclidean(data[rows], present[rows], data, present)        # (R, T)
    # Per receiver row and column: candidate donors are the frames where that column is present.
    cand = np.where(present.T[None, :, :], dist[:, None, :], np.inf)        # (R, D, T)
    n_neighbours = min(k, data.shape[0])
    pick = np.argpartition(cand, n_neighbours - 1, axis=2)[:, :, :n_neighbours]
    picked = np.take_along_axis(cand, pick, axis=2)                         # (R, D, k)
    donors = data.T[np.arange(data.shape[1])[None, :, None], pick]          # (R, D, k)
    with np.errstate(divide="ignore"):
        weights = 1.0 / picked
    exact = np.isinf(weights) & (picked == 0)
    has_exact = exact.any(axis=2, keepdims=True)
    weights = np.where(has_exact, exact.astype(np.float64), weights)
    weights[np.isnan(weights)] = 0.0
    total = weights.sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        imputed = (weights * donors).sum(axis=2) / total
    col_count = present.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        col_mean = np.where(col_count > 0, (data * present).sum(axis=0) / np.maximum(col_count, 1), 0.0)
    comparable = np.isfinite(np.where(present.T[None, :, :], dist[:, None, :], np.nan)).any(axis=2)
    imputed = np.where(comparable, imputed, col_mean[None, :])
    fill = missing[rows] & (col_count > 0)[None, :]
    block = out[rows]
    block[fill] = imputed[fill]
    out[rows] = block
    return out


def mean_impute(data: np.ndarray) -> np.ndarray:
    """Fill zeros of (T, D) with the column mean of the present values (columns all missing stay 0)."""
    present = data != 0
    count = present.sum(axis=0)
    mean = np.where(count > 0, (data * present).sum(axis=0) / np.maximum(count, 1), 0.0)
    return np.where(present | (count == 0)[None, :], data, mean[None, :])


def _simple_quirk(pose: np.ndarray, missing: np.ndarray) -> np.ndarray:
    """The reference's `simple` padding: its mean imputer drops the columns missing in every frame
    and appends one indicator column (of ones) per column with a missing value.  The result only
    fits the pose's shape when those are the same columns; then the coordinates after a dropped
    column shift left and the tail is filled with ones.  Otherwise the input comes back unpadded.
    """
    all_missing = missing.all(axis=0)
    if missing.any(axis=0).sum() != all_missing.sum():
        return pose.astype(np.float64)
    coords = pose[..., :2].reshape(pose.shape[0], -1).astype(np.float64)
    shifted = np.concatenate([coords[:, ~all_missing], np.ones((pose.shape[0], int(all_missing.sum())))], axis=1)
    out = pose.astype(np.float64)
    out[..., :2] = shifted.reshape(pose.shape[0], pose.shape[1], 2)
    return out


def pad_keypoints(pose: np.ndarray, method: str = "knn", fix_quirks: bool = False) -> np.ndarray:
    """Fill missing joint coordinates of (T, V, 3) (x, y, confidence); confidences are left as they are.

    Reference behaviour (fix_quirks=False): `knn` leaves the sequence untouched when some coordinate
    is missing in every frame; `simple` almost never fills anything (see `_simple_quirk`).
    """
    coords = pose[..., :2].reshape(pose.shape[0], -1).astype(np.float64)
    missing = coords == 0
    if not missing.any():
        return pose.astype(np.float64)
    if method == "knn":
        if missing.all(axis=0).any() and not fix_quirks:
            return pose.astype(np.float64)
        filled = knn_impute(coords)
    elif method == "simple":
        if not fix_quirks:
            return _simple_quirk(pose, missing)
        filled = mean_impute(coords)
    else:
        raise ValueError(f"unknown pad_method {method!r}: use knn or simple")
    out = pose.astype(np.float64)
    out[..., :2] = filled.reshape(pose.shape[0], pose.shape[1], 2)
    return out


def center_and_scale(pose: np.ndarray, hips: tuple[int, int], image_height: int,
                     fix_quirks: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Centre (T, V, 3) on the hip midpoint, scale its height to `image_height // 1.5`, shift by half.

    Returns the (T, V, 2) coordinates in the map's pixels and a (T,) mask of frames that could be
    normalized.  Frames with zero or non-finite height (e.g. nothing detected) are marked invalid
    and their coordinates set to 0: they render as blank maps instead of failing.
    """
    xy = pose[..., :2].astype(np.float64)
    if fix_quirks:
        present = (xy != 0).any(axis=2)
        hip_ok = present[:, list(hips)]
        hip_xy = xy[:, list(hips)]
        n_hips = hip_ok.sum(axis=1, keepdims=True)
        joint_mean = (xy * present[..., None]).sum(axis=1) / np.maximum(present.sum(axis=1), 1)[:, None]
        hip = np.where(n_hips > 0, (hip_xy * hip_ok[..., None]).sum(axis=1) / np.maximum(n_hips, 1),
                       joint_mean)
        y_rel = np.where(present, xy[..., 1] - hip[:, None, 1], np.nan)
        y_max = np.fmax.reduce(y_rel, axis=1)
        y_min = np.fmin.reduce(y_rel, axis=1)
    else:
        hip = (xy[:, hips[0]] + xy[:, hips[1]]) / 2.0
    centred = xy - hip[:, None, :]
    if not fix_quirks:
        y_max = centred[:, :, 1].max(axis=1)
        y_min = centred[:, :, 1].min(axis=1)
    height = y_max - y_min
    valid = np.isfinite(height) & (height > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = (image_height // 1.5) / np.where(valid, height, 1.0)
    scaled = centred * factor[:, None, None]
    scaled += image_height // 2
    scaled[~valid] = 0.0
    return scaled, valid
