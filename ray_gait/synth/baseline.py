"""A hand-made pose baseline: normalized joint statistics and cross-view nearest neighbour.

It shows that the synthetic data carries identity: the features know nothing of the generator,
only of the pose files. Per sequence: joints are centred on the hip midpoint and divided by the
person's median pixel height, then summarised by the mean and spread of each joint's vertical
position, long-percentile 2D bone lengths, and the step frequency (cycles per frame) from the
spectrum of left-right leg differences. Features are z-scored over the evaluated set and matched
by Euclidean nearest neighbour under the data set's protocol (docs/formats.md).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ray_gait.synth.dataset import read_array

__all__ = ["pose_features", "nuisance_features", "baseline_rank1"]

log = logging.getLogger(__name__)

_BONES = ((5, 7), (7, 9), (6, 8), (8, 10), (11, 13), (13, 15), (12, 14), (14, 16), (5, 11), (6, 12), (5, 6), (11, 12))
_LEG_PAIRS = ((13, 14), (15, 16))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence numpy's all-NaN slice warnings inside a block."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        yield


def _masked(pose: np.ndarray) -> np.ndarray:
    """Pixel coordinates ``(T, 17, 2)`` float64 with missing joints (conf 0) as NaN."""
    if pose.ndim != 3 or pose.shape[1:] != (17, 3):
        raise ValueError(f"pose must be (T, 17, 3), got {pose.shape}")
    xy = pose[..., :2].astype(np.float64)
    xy[pose[..., 2] <= 0] = np.nan
    return xy


def _fill(signal: np.ndarray) -> np.ndarray:
    """Linear interpolation over NaNs of a 1-D signal (zeros if nothing is known)."""
    known = np.isfinite(signal)
    if known.sum() < 2:
        return np.zeros_like(signal)
    idx = np.arange(signal.size)
    return np.interp(idx, idx[known], signal[known])


def _step_frequency(signals: list[np.ndarray]) -> float:
    """Dominant gait-cycle frequency (cycles per frame) of periodic leg signals."""
    n = signals[0].size
    size = 1024
    power = np.zeros(size // 2 + 1)
    window = np.hanning(n)
    for s in signals:
        x = _fill(s)
        x = x - np.polyval(np.polyfit(np.arange(n), x, 1), np.arange(n))
        power += np.abs(np.fft.rfft(x * window, size)) ** 2
    freq = np.fft.rfftfreq(size)
    band = (freq > 0.02) & (freq < 0.08)
    k = int(np.flatnonzero(band)[np.argmax(power[band])])
    if 0 < k < power.size - 1:
        a, b, c = power[k - 1], power[k], power[k + 1]
        denom = a - 2 * b + c
        offset = 0.5 * (a - c) / denom if denom != 0 else 0.0
        return float(freq[k] + offset * (freq[1] - freq[0]))
    return float(freq[k])


def pose_features(pose: np.ndarray) -> np.ndarray:
    """View-robust identity features ``(D,)`` of one pose sequence ``(T, 17, 3)`` (NaN where unknown)."""
    xy = _masked(pose)
    with np.errstate(invalid="ignore"), _quiet():
        hip = np.nanmean(xy[:, 11:13], axis=1)
        extent = np.nanmax(xy[..., 1], axis=1) - np.nanmin(xy[..., 1], axis=1)
        scale = float(np.nanmedian(extent))
        if not np.isfinite(scale) or scale <= 0:
            raise ValueError("pose has no frame with two valid joints")
        norm = (xy - hip[:, None]) / scale
        y = norm[..., 1]
        y_mean = np.nanmean(y, axis=0)
        y_std = np.nanstd(y, axis=0)
        bones = np.stack([np.linalg.norm(norm[:, a] - norm[:, b], axis=-1) for a, b in _BONES], -1)
        bone_len = np.nanpercentile(bones, 90, axis=0)
    legs = [norm[:, a, 1] - norm[:, b, 1] for a, b in _LEG_PAIRS]
    legs += [norm[:, a, 0] - norm[:, b, 0] for a, b in _LEG_PAIRS]
    freq = _step_frequency(legs)
    return np.concatenate([y_mean, y_std, bone_len, [freq]])


def nuisance_features(pose: np.ndarray) -> np.ndarray:
    """Features of the recording, not the walker: pixel height, mean hip position, length ``(4,)``."""
    xy = _masked(pose)
    with np.errstate(invalid="ignore"), _quiet():
        extent = np.nanmax(xy[..., 1], axis=1) - np.nanmin(xy[..., 1], axis=1)
        hip = np.nanmean(xy[:, 11:13], axis=1)
        return np.array([np.nanmedian(extent), *np.nanmean(hip, axis=0), float(pose.shape[0])])


_FEATURES: dict[str, Callable[[np.ndarray], np.ndarray]] = {"pose": pose_features, "nuisance": nuisance_features}


def _nn_accuracy(probe: np.ndarray, gallery: np.ndarray, probe_labels: np.ndarray, gallery_labels: np.ndarray) -> float:
    """Fraction of probes whose Euclidean nearest gallery sample has their label."""
    d = ((probe[:, None] - gallery[None]) ** 2).sum(-1)
    return float(np.mean(gallery_labels[d.argmin(axis=1)] == probe_labels))


def baseline_rank1(
    dataset_root: str | os.PathLike,
    shuffle_ids: bool = False,
    seed: int = 0,
    features: str = "pose",
) -> dict[str, Any]:
    """Cross-view Rank-1 (%) per probe condition of the baseline on the TEST_SET of a data set.

    Uses ``protocol.json`` and ``partition.json`` under ``dataset_root``: gallery types against
    each condition's probe types, per (probe view, gallery view) pair with identical views excluded
    when the protocol says so; Rank-1 = mean over probe views of the mean over gallery views.
    ``shuffle_ids`` permutes the labels within every (type, view) group (each label still occurs
    once per group), which must bring accuracy to chance. ``features`` is "pose" or "nuisance".
    """
    if features not in _FEATURES:
        raise ValueError(f"features must be one of {sorted(_FEATURES)}, got {features!r}")
    root = Path(dataset_root)
    protocol = json.loads((root / "protocol.json").read_text())
    partition = json.loads((root / "partition.json").read_text())
    views = list(protocol["views"])
    gallery_types = list(protocol["gallery"])
    probe_types = {cond: list(types) for cond, types in protocol["probes"].items()}
    wanted = set(gallery_types).union(*probe_types.values())
    ids = [str(i) for i in partition["TEST_SET"]]

    feats, labels, types, seq_views = [], [], [], []
    for label, sid in enumerate(ids):
        for t in sorted(wanted):
            for v in views:
                folder = root / "pose" / sid / t / v
                for path in sorted(folder.glob("*.pkl")):
                    feats.append(_FEATURES[features](read_array(path)))
                    labels.append(label)
                    types.append(t)
                    seq_views.append(v)
    if not feats:
        raise ValueError(f"no test sequences found under {root / 'pose'}")
    x = np.stack(feats)
    labels_a, types_a, views_a = np.array(labels), np.array(types), np.array(seq_views)
    if shuffle_ids:
        rng = np.random.default_rng(seed)
        for t in wanted:
            for v in views:
                idx = np.flatnonzero((types_a == t) & (views_a == v))
                labels_a[idx] = labels_a[rng.permutation(idx)]
    with _quiet():
        mu, sd = np.nanmean(x, axis=0), np.nanstd(x, axis=0)
    x = np.nan_to_num((x - mu) / np.where(sd > 0, sd, 1.0))

    exclude = bool(protocol.get("exclude_identical_view", True))
    is_gallery = np.isin(types_a, gallery_types)
    result: dict[str, Any] = {"rank1": {}, "per_view": {}}
    for cond, ptypes in probe_types.items():
        is_probe = np.isin(types_a, ptypes)
        per_view = {}
        for pv in views:
            accs = []
            for gv in views:
                if exclude and gv == pv:
                    continue
                p = is_probe & (views_a == pv)
                g = is_gallery & (views_a == gv)
                if p.any() and g.any():
                    accs.append(_nn_accuracy(x[p], x[g], labels_a[p], labels_a[g]))
            if accs:
                per_view[pv] = 100.0 * float(np.mean(accs))
        result["per_view"][cond] = per_view
        result["rank1"][cond] = float(np.mean(list(per_view.values()))) if per_view else float("nan")
    result["mean"] = float(np.mean(list(result["rank1"].values())))
    result["chance"] = 100.0 / len(ids)
    result["ids"] = len(ids)
    result["sequences"] = int(x.shape[0])
    result["features"] = features
    result["shuffled"] = shuffle_ids
    log.info("baseline (%s, shuffled=%s): %s, chance %.1f", features, shuffle_ids,
             {k: round(v, 1) for k, v in result["rank1"].items()}, result["chance"])
    return result
