"""Retrieval metrics of OpenGait's evaluation, in plain numpy.

Behaviour follows ``opengait/evaluation/metric.py`` (``cuda_dist``, ``evaluate_rank``,
``evaluate_many``, ``compute_ACC_mAP``) and the top-k accuracy of ``evaluator.py``; memory stays
bounded by working in blocks of probes and gallery items.

Conventions:
- embeddings are ``[n, c, p]`` (n sequences, c channels, p horizontal parts);
- a distance matrix is ``[P, G]`` (probes x gallery), smaller is closer;
- metrics are returned in percent, keys ``rank{k}``, ``mAP``, ``mINP``;
- equal distances are ranked by gallery index (a stable sort). OpenGait's ``np.argsort`` and
  ``torch.topk`` leave the order of ties unspecified; a fixed order makes results reproducible,
  and the order only matters when tied items have different identities.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

METRICS = ("euc", "cos")
DEFAULT_CHUNK_SIZE = 1024
_RANK_BLOCK_ELEMENTS = 1 << 22
_NO_HIT = np.iinfo(np.int64).max


def distances(
    probe: Any,
    gallery: Any,
    metric: str = "euc",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> np.ndarray:
    """Part-averaged distance ``[P, G]`` float32 between embeddings ``[P, c, p]`` and ``[G, c, p]``.

    ``euc``: mean over parts of ``sqrt(relu(|x|^2 + |y|^2 - 2 x.y))``, as OpenGait's ``cuda_dist``;
    ``cos``: ``1 -`` mean over parts of the cosine (vectors L2-normalised over ``c`` per part).
    Probes and gallery are processed in blocks of ``chunk_size`` rows, so memory beyond the inputs
    and the output is ``O(chunk_size**2 + chunk_size * c * p)``. Accepts numpy arrays or tensors.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    x = _as_embeddings(probe, "probe")
    y = _as_embeddings(gallery, "gallery")
    if x.shape[1:] != y.shape[1:]:
        raise ValueError(
            f"probe [n, c, p] = {list(x.shape)} and gallery {list(y.shape)} differ in c or p")
    out = np.empty((x.shape[0], y.shape[0]), dtype=np.float32)
    for g0, g1 in _blocks(y.shape[0], chunk_size):
        gallery_block = _PartBlock(y[g0:g1], metric)
        for p0, p1 in _blocks(x.shape[0], chunk_size):
            probe_block = _PartBlock(x[p0:p1], metric)
            out[p0:p1, g0:g1] = _block_distance(probe_block, gallery_block, metric)
    return out


def _matched_probe_sums(chunks: Any, ranks: np.ndarray) -> tuple[np.ndarray, float, float, int]:
    """Over the probes with a true match (the positives' ranks of each, chunk by chunk): hits at each rank,
    the sums of average precision and of inverse negative penalty, and how many probes there were."""
    hits = np.zeros(len(ranks), dtype=np.int64)
    ap_sum = inp_sum = 0.0
    valid = 0
    for pos_ranks in chunks:
        for r in pos_ranks:
            if r.size == 0:
                continue
            valid += 1
            hits += r[0] < ranks
            ap_sum += _average_precision(r)
            inp_sum += float(r.size / (r[-1] + 1.0))
    return hits, ap_sum, inp_sum, valid


def rank_metrics(
    dist: Any,
    probe_labels: Sequence[Any] | np.ndarray,
    gallery_labels: Sequence[Any] | np.ndarray,
    ranks: Sequence[int] = (1, 5, 10),
    probe_cams: Sequence[Any] | np.ndarray | None = None,
    gallery_cams: Sequence[Any] | np.ndarray | None = None,
) -> dict[str, float]:
    """CMC ``rank{k}``, ``mAP``, ``mINP`` (percent) of ``dist [P, G]``, as ``evaluate_rank``.

    Probes whose identity has no gallery item are left out of every metric (OpenGait skips them;
    its ``remove_no_gallery`` config key is read by no code). With ``probe_cams``/``gallery_cams``
    this is ``evaluate_many``: gallery items with the probe's identity *and* camera are removed
    from that probe's ranking first. Raises ``ValueError`` when no probe has a true match.
    """
    ranks = _check_ranks(ranks)
    d = _as_distance(dist)
    p_codes, g_codes = _encode_pair(probe_labels, gallery_labels, d.shape, "labels")
    cams = None
    if (probe_cams is None) != (gallery_cams is None):
        raise ValueError("give both probe_cams and gallery_cams, or neither")
    if probe_cams is not None:
        cams = _encode_pair(probe_cams, gallery_cams, d.shape, "cams")
    hits, ap_sum, inp_sum, valid = _matched_probe_sums(_positive_ranks(d, p_codes, g_codes, cams), ranks)
    if valid == 0:
        raise ValueError("no probe identity appears in the gallery")
    logger.debug("rank_metrics: %d of %d probes have a gallery match", valid, d.shape[0])
    out = {f"rank{k}": 100.0 * float(h) / valid for k, h in zip(ranks, hits)}
    out["mAP"] = 100.0 * ap_sum / valid
    out["mINP"] = 100.0 * inp_sum / valid
    return out


def cross_view_accuracy(
    dist: Any,
    probe_labels: Sequence[Any] | np.ndarray,
    gallery_labels: Sequence[Any] | np.ndarray,
    probe_views: Sequence[Any] | np.ndarray,
    gallery_views: Sequence[Any] | np.ndarray,
    ranks: Sequence[int] = (1,),
) -> dict[str, float]:
    """Accuracy ``rank{k}`` and ``mAP`` (percent), identical views excluded, as ``compute_ACC_mAP``.

    For each probe, gallery items of the same identity *and* the same view are removed. Accuracy
    counts every probe (one without a remaining true match is a miss); mAP averages over probes
    with a match. Raises ``ValueError`` if a probe is left with an empty gallery.
    """
    ranks = _check_ranks(ranks)
    d = _as_distance(dist)
    p_codes, g_codes = _encode_pair(probe_labels, gallery_labels, d.shape, "labels")
    views = _encode_pair(probe_views, gallery_views, d.shape, "views")
    hits, ap_sum, _, valid = _matched_probe_sums(_positive_ranks(d, p_codes, g_codes, views, require_gallery=True),
                                                 ranks)
    out = {f"rank{k}": 100.0 * float(h) / d.shape[0] for k, h in zip(ranks, hits)}
    out["mAP"] = 100.0 * ap_sum / valid if valid else float("nan")
    return out


def topk_accuracy(
    dist: Any,
    probe_labels: Sequence[Any] | np.ndarray,
    gallery_labels: Sequence[Any] | np.ndarray,
    ranks: Sequence[int] = (1,),
) -> dict[str, float]:
    """Percent of probes whose ``k`` nearest gallery items hold a true match, per ``rank{k}``.

    OpenGait's per-view-pair accuracy (``topk`` then a label check): every probe counts, one
    without a match in the gallery is a miss; ``k`` beyond the gallery size means all of it.
    """
    ranks = _check_ranks(ranks)
    d = _as_distance(dist)
    if d.shape[0] == 0 or d.shape[1] == 0:
        raise ValueError(f"topk_accuracy needs probes and gallery items, got dist {list(d.shape)}")
    p_codes, g_codes = _encode_pair(probe_labels, gallery_labels, d.shape, "labels")
    hits = np.zeros(len(ranks), dtype=np.int64)
    for r0, r1 in _blocks(d.shape[0], _rows_per_block(d.shape[1])):
        block = _checked_block(d, r0, r1)
        positive = p_codes[r0:r1, None] == g_codes[None, :]
        first = first_positive_rank(block, positive)
        hits += (first[:, None] < ranks[None, :]).sum(axis=0)
    return {f"rank{k}": float(h) * 100.0 / d.shape[0] for k, h in zip(ranks, hits)}


def first_positive_rank(dist: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """0-based rank ``[P]`` of each row's nearest positive in ``dist [P, G]``; int64 max if none.

    ``positive`` is a bool mask ``[P, G]``; equal distances rank by gallery index.
    """
    cols = np.arange(dist.shape[1])
    masked = np.where(positive, dist, np.inf)
    best = np.argmin(masked, axis=1)
    rows = np.arange(dist.shape[0])
    best_d = dist[rows, best][:, None]
    before = (dist < best_d) | ((dist == best_d) & (cols[None, :] < best[:, None]))
    rank = before.sum(axis=1).astype(np.int64)
    rank[~positive[rows, best]] = _NO_HIT
    return rank


def off_diagonal_mean(matrix: np.ndarray, exclude_diagonal: bool = True) -> np.ndarray:
    """Row means ``[V]`` of a probe-view x gallery-view matrix ``[V, V]``, diagonal left out or not.

    OpenGait's ``de_diag(acc, each_angle=True)``; NaN cells (empty view pairs) are ignored.
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"expected a square [V, V] matrix, got shape {list(m.shape)}")
    if exclude_diagonal:
        if m.shape[0] < 2:
            raise ValueError("excluding identical views needs at least two views")
        m = m.copy()
        np.fill_diagonal(m, np.nan)
    with np.errstate(all="ignore"):
        counts = np.sum(~np.isnan(m), axis=1)
        sums = np.nansum(m, axis=1)
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


class _PartBlock:
    """Rows of embeddings laid out per part: ``parts [p, n, c]`` float32, ``sq [p, n]`` for euc."""

    def __init__(self, emb: np.ndarray, metric: str) -> None:
        parts = np.ascontiguousarray(emb.transpose(2, 0, 1), dtype=np.float32)
        if metric == "cos":
            norm = np.sqrt(np.einsum("pnc,pnc->pn", parts, parts))
            parts /= np.maximum(norm, np.float32(1e-12))[..., None]
            self.sq = None
        else:
            self.sq = np.einsum("pnc,pnc->pn", parts, parts)
        self.parts = parts


def _block_distance(x: _PartBlock, y: _PartBlock, metric: str) -> np.ndarray:
    """Distance ``[n, m]`` between two blocks, summed part by part in OpenGait's order."""
    n_parts, n, m = x.parts.shape[0], x.parts.shape[1], y.parts.shape[1]
    acc = np.zeros((n, m), dtype=np.float32)
    prod = np.empty((n, m), dtype=np.float32)
    if metric == "cos":
        for i in range(n_parts):
            np.matmul(x.parts[i], y.parts[i].T, out=prod)
            acc += prod
        acc /= np.float32(n_parts)
        return np.subtract(np.float32(1.0), acc, out=acc)
    sq = np.empty((n, m), dtype=np.float32)
    for i in range(n_parts):
        np.add(x.sq[i][:, None], y.sq[i][None, :], out=sq)
        np.matmul(x.parts[i] * np.float32(2.0), y.parts[i].T, out=prod)  # = 2 x.y exactly
        sq -= prod
        np.maximum(sq, np.float32(0.0), out=sq)
        np.sqrt(sq, out=sq)
        acc += sq
    acc /= np.float32(n_parts)
    return acc


def _positive_ranks(
    d: np.ndarray,
    p_codes: np.ndarray,
    g_codes: np.ndarray,
    exclude: tuple[np.ndarray, np.ndarray] | None,
    require_gallery: bool = False,
) -> Iterator[list[np.ndarray]]:
    """Per block of probes, the sorted 0-based ranks of each probe's true matches.

    ``exclude`` = (probe keys, gallery keys): a gallery item with the probe's identity and key is
    removed from that probe's ranking (set to +inf, so it ranks after every kept item).
    """
    if require_gallery and (d.shape[0] == 0 or d.shape[1] == 0):
        raise ValueError(f"needs probes and gallery items, got dist {list(d.shape)}")
    for r0, r1 in _blocks(d.shape[0], _rows_per_block(d.shape[1])):
        block = _checked_block(d, r0, r1)
        positive = p_codes[r0:r1, None] == g_codes[None, :]
        if exclude is not None:
            removed = positive & (exclude[0][r0:r1, None] == exclude[1][None, :])
            if require_gallery and np.any(removed.all(axis=1)):
                raise ValueError("a probe has no gallery left after excluding identical-view items")
            block = np.where(removed, np.inf, block)
            positive &= ~removed
        ordered = np.sort(block, axis=1)
        out = []
        for i in range(r1 - r0):
            pos_cols = np.flatnonzero(positive[i])
            out.append(_ranks_in_row(block[i], ordered[i], pos_cols))
        yield out


def _ranks_in_row(row: np.ndarray, ordered: np.ndarray, pos_cols: np.ndarray) -> np.ndarray:
    """Sorted stable ranks of the items ``pos_cols`` of ``row [G]`` (``ordered`` = sorted row)."""
    if pos_cols.size == 0:
        return pos_cols.astype(np.int64)
    values = row[pos_cols]
    lo = np.searchsorted(ordered, values, side="left")
    hi = np.searchsorted(ordered, values, side="right")
    for t in np.flatnonzero(hi - lo > 1):
        lo[t] += np.count_nonzero(row[: pos_cols[t]] == values[t])
    return np.sort(lo.astype(np.int64))


def _average_precision(ranks: np.ndarray) -> float:
    """AP from the sorted 0-based ranks of the true matches."""
    return float(np.mean(np.arange(1, ranks.size + 1) / (ranks + 1.0)))


def _check_ranks(ranks: Sequence[int]) -> np.ndarray:
    """Ranks as an int64 array; each must be >= 1."""
    arr = np.asarray(list(ranks), dtype=np.int64)
    if arr.ndim != 1 or arr.size == 0 or np.any(arr < 1):
        raise ValueError(f"ranks must be a non-empty sequence of integers >= 1, got {ranks!r}")
    return arr


def _as_array(x: Any) -> np.ndarray:
    """A numpy view of an array-like or a (CPU or CUDA) tensor, without importing torch."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _as_embeddings(x: Any, name: str) -> np.ndarray:
    """Embeddings ``[n, c, p]`` as a numpy array (dtype unchanged; blocks convert to float32)."""
    arr = _as_array(x)
    if arr.ndim != 3:
        raise ValueError(f"{name} embeddings must be [n, c, p], got shape {list(arr.shape)}")
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name} embeddings must be numeric, got dtype {arr.dtype}")
    return arr


def _as_distance(dist: Any) -> np.ndarray:
    """A distance matrix ``[P, G]`` as a numpy array."""
    arr = _as_array(dist)
    if arr.ndim != 2:
        raise ValueError(f"dist must be [P, G], got shape {list(arr.shape)}")
    return arr


def _checked_block(d: np.ndarray, r0: int, r1: int) -> np.ndarray:
    """Rows ``r0:r1`` of ``d`` as floats, rejecting NaN."""
    block = np.asarray(d[r0:r1])
    if not np.issubdtype(block.dtype, np.floating):
        block = block.astype(np.float64)
    if np.isnan(block).any():
        raise ValueError("dist contains NaN")
    return block


def _encode_pair(a: Any, b: Any, shape: tuple[int, ...],
                 what: str) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes for two label arrays such that equal labels get equal codes."""
    x, y = _as_array(a).ravel(), _as_array(b).ravel()
    if x.shape[0] != shape[0] or y.shape[0] != shape[1]:
        raise ValueError(
            f"{what}: {x.shape[0]} probe and {y.shape[0]} gallery entries for dist {list(shape)}")
    if x.dtype.kind != y.dtype.kind or x.dtype.kind == "O":
        x, y = x.astype(str), y.astype(str)
    _, codes = np.unique(np.concatenate([x, y]), return_inverse=True)
    codes = codes.ravel()
    return codes[: x.shape[0]], codes[x.shape[0]:]


def _rows_per_block(n_cols: int) -> int:
    """Probe rows per block so that a block holds about ``_RANK_BLOCK_ELEMENTS`` distances."""
    return max(1, _RANK_BLOCK_ELEMENTS // max(1, n_cols))


def _blocks(n: int, size: int) -> Iterator[tuple[int, int]]:
    """Half-open ranges ``[start, stop)`` covering ``range(n)`` in steps of ``size``."""
    for start in range(0, n, size):
        yield start, min(n, start + size)
