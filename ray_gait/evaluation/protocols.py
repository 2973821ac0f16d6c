"""Evaluation protocols, selected by OpenGait's ``eval_func`` names.

Each protocol takes the test set as four aligned arrays plus keyword options::

    protocol(source, labels, types, views, *, dataset=..., metric="euc", ...) -> dict

``source`` is either the embeddings ``[N, c, p]`` or a :data:`DistanceFn` (see
:func:`matrix_distance_fn` for a precomputed ``[N, N]`` matrix); ``labels``, ``types``, ``views``
are ``[N]`` (identity, sequence type, view; OpenGait's ``labels``/``types``/``views``); ``metric``
(``euc`` or ``cos``) applies when ``source`` is embeddings. The result is plain Python data, ready
for ``json.dump``::

    {"results": {CONDITION: {"rank1": %, ...}}, "overall": {"rank1": %, ...},
     "view_matrices": {CONDITION: {"probe_views": [...], "gallery_views": [...],
                                   "rank1": [[%]], "exclude_identical_view": bool}}}

``view_matrices`` (cross-view protocols only) holds the Rank-1 of every probe-view x gallery-view
pair, for heat maps; NaN marks a pair without probes or gallery. ``overall`` is the mean over the
conditions unless the data set defines its own overall condition (SUSTech-1K's ``Overall``).
Conditions without any probe are left out with a warning.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from time import localtime, strftime
from typing import Any, Union

import numpy as np

from ray_gait.evaluation.metrics import (
    cross_view_accuracy,
    distances,
    off_diagonal_mean,
    rank_metrics,
    topk_accuracy,
)
from ray_gait.io import fs
from ray_gait.config import CONFIG_DIR
from ray_gait.io.dataset import read_json
from ray_gait.registry import lookup
from ray_gait.yaml_config import read_yaml

logger = logging.getLogger(__name__)

DistanceFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""(probe indices ``[P]``, gallery indices ``[G]``) into the test set -> distances ``[P, G]``."""
Source = Union[np.ndarray, DistanceFn]
Labels = Union[Sequence[Any], np.ndarray]

PROTOCOL_DIR = os.path.join(CONFIG_DIR, "protocols")
"""The built-in data sets' protocols, one YAML file each, in the shape of a protocol.json (docs/formats.md)."""


def builtin_protocol(dataset: str, eval_func: str, part: str | None = None) -> dict[str, Any]:
    """The packaged protocol of `dataset` that `eval_func` evaluates (its `part`, e.g. the cross-view gallery);
    ValueError naming the data sets it supports otherwise."""
    specs = {}
    for name in sorted(os.listdir(PROTOCOL_DIR)):
        if name.endswith(".yaml"):
            spec = read_yaml(os.path.join(PROTOCOL_DIR, name))
            if spec.get("eval_func") == eval_func and (part is None or part in spec):
                specs[name[:-len(".yaml")]] = spec
    if dataset not in specs:
        what = f"{eval_func} ({part})" if part else eval_func
        raise ValueError(f"{what}: data set {dataset!r} is not supported; valid: {sorted(specs)}")
    return specs[dataset] if part is None else specs[dataset][part]


@dataclass(frozen=True)
class _TestSet:
    """The aligned test set: a distance function and ``[N]`` string arrays."""

    dist: DistanceFn
    labels: np.ndarray
    types: np.ndarray
    views: np.ndarray


def embedding_distance_fn(embeddings: Any, metric: str = "euc") -> DistanceFn:
    """A :data:`DistanceFn` over embeddings ``[N, c, p]`` using :func:`distances`."""
    emb = np.asarray(embeddings.detach().cpu().numpy() if hasattr(embeddings, "detach")
                     else embeddings)
    if emb.ndim != 3:
        raise ValueError(f"embeddings must be [N, c, p], got shape {list(emb.shape)}")

    def dist(probe_idx: np.ndarray, gallery_idx: np.ndarray) -> np.ndarray:
        return distances(emb[probe_idx], emb[gallery_idx], metric)

    return dist


def matrix_distance_fn(dist: Any) -> DistanceFn:
    """A :data:`DistanceFn` that slices a precomputed distance matrix ``[N, N]``."""
    full = np.asarray(dist)
    if full.ndim != 2 or full.shape[0] != full.shape[1]:
        raise ValueError(f"expected a square [N, N] distance matrix, got {list(full.shape)}")

    def sliced(probe_idx: np.ndarray, gallery_idx: np.ndarray) -> np.ndarray:
        return full[np.ix_(probe_idx, gallery_idx)]

    return sliced


def evaluate_Gait3D(
    source: Source, labels: Labels, types: Labels, views: Labels, *,
    dataset: str = "Gait3D", metric: str = "euc",
    probe_set: Iterable[str] | str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Gait3D: probes are the ``id-type-view`` names of ``probe_set``, the rest is the gallery.

    ``probe_set``: the ``PROBE_SET`` list of the partition JSON, or the path of that JSON.
    Rank-1/5/10, mAP and mINP as OpenGait's ``evaluate_rank``.
    """
    data = _test_set(source, labels, types, views, metric)
    probes = _load_name_set(probe_set, "PROBE_SET", "evaluate_Gait3D")
    names = np.char.add(np.char.add(np.char.add(data.labels, "-"), np.char.add(data.types, "-")),
                        data.views)
    probe_mask = np.isin(names, list(probes))
    if not probe_mask.any():
        raise ValueError("evaluate_Gait3D: no sequence of the test set is in probe_set")
    if probe_mask.all():
        raise ValueError("evaluate_Gait3D: every sequence is a probe; the gallery is empty")
    p_idx, g_idx = np.flatnonzero(probe_mask), np.flatnonzero(~probe_mask)
    logger.info("%s: %d probes, %d gallery, metric %s", dataset, p_idx.size, g_idx.size, metric)
    res = rank_metrics(data.dist(p_idx, g_idx), data.labels[p_idx], data.labels[g_idx], (1, 5, 10))
    logger.info("%s: %s", dataset, _fmt(res))
    return _report({dataset: res})


def evaluate_CCPG(
    source: Source, labels: Labels, types: Labels, views: Labels, *,
    dataset: str = "CCPG", metric: str = "euc",
) -> dict[str, Any]:
    """CCPG conditions CL/UP/DN/BG: cross-view Rank-1 (identical views excluded) and re-ID metrics.

    ``rank1`` is the mean over probe views of the mean over the other gallery views of the per
    view-pair Rank-1 (OpenGait's "Rank-1 (Exclude identical-view cases)", the figure reported for
    gait); ``rank1_include_identical_view`` averages every pair. ``reid_rank1``/``reid_rank5``/
    ``reid_rank10``, ``mAP``, ``mINP`` rank the whole gallery with same-identity same-view items
    removed (``evaluate_many``). A view is the text of ``views`` before its first ``_``.
    """
    spec = builtin_protocol("CCPG", "evaluate_CCPG")
    data = _test_set(source, labels, types, views, metric)
    data = _TestSet(data.dist, data.labels, data.types,
                    np.array([v.split(spec["view_separator"])[0] for v in data.views.tolist()], dtype=str))
    view_list = sorted(set(data.views.tolist()))
    results: dict[str, dict[str, float]] = {}
    matrices: dict[str, dict[str, Any]] = {}
    for cond, probe_types in spec["probes"].items():
        p_idx, g_idx = _of_types(data, probe_types), _of_types(data, spec["galleries"][cond])
        if not _has_condition(dataset, cond, p_idx, g_idx):
            continue
        dist = data.dist(p_idx, g_idx)
        reid = rank_metrics(dist, data.labels[p_idx], data.labels[g_idx], (1, 5, 10),
                            data.views[p_idx], data.views[g_idx])
        local = _TestSet(_block_distance_fn(dist, p_idx, g_idx), data.labels, data.types,
                         data.views)
        grid = _view_grid(local, p_idx, g_idx, view_list, (1,), decimals=spec["decimals"])[..., 0]
        results[cond] = {
            "rank1": _mean(off_diagonal_mean(grid, True)),
            "rank1_include_identical_view": _mean(grid),
            "reid_rank1": reid["rank1"], "reid_rank5": reid["rank5"],
            "reid_rank10": reid["rank10"], "mAP": reid["mAP"], "mINP": reid["mINP"],
        }
        matrices[cond] = _matrix_entry(grid, view_list, True)
        logger.info("%s %s: %s", dataset, cond, _fmt(results[cond]))
    return _report(results, view_matrices=matrices)


def _of_types(data: _TestSet, types: Iterable[Any]) -> np.ndarray:
    """Indices of the test set's sequences whose type is one of `types`."""
    return np.flatnonzero(np.isin(data.types, [str(t) for t in types]))


def _condition_view_grids(
    data: _TestSet, name: str, g_idx: np.ndarray, probes: Mapping[str, np.ndarray], view_list: list[str],
    ranks: tuple[int, ...], decimals: int | None, exclude: bool,
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, Any]]]:
    """The per-condition loop: each condition's probes against the gallery, view pair by view pair; Rank-k the mean
    over probe views of the mean over gallery views (the probe's own view left out when `exclude`), and the
    condition's Rank-1 view matrix.  A condition without probes or gallery is left out (`_has_condition`)."""
    results: dict[str, dict[str, float]] = {}
    matrices: dict[str, dict[str, Any]] = {}
    for cond, p_idx in probes.items():
        if not _has_condition(name, cond, p_idx, g_idx):
            continue
        grid = _view_grid(data, p_idx, g_idx, view_list, ranks, decimals=decimals)
        results[cond] = {f"rank{k}": _mean(off_diagonal_mean(grid[..., i], exclude)) for i, k in enumerate(ranks)}
        matrices[cond] = _matrix_entry(grid[..., 0], view_list, exclude)
        logger.info("%s %s: %s; per probe view %s", name, cond, _fmt(results[cond]),
                    np.round(off_diagonal_mean(grid[..., 0], exclude), 2).tolist())
    return results, matrices


def evaluate_indoor_dataset(
    source: Source, labels: Labels, types: Labels, views: Labels, *,
    dataset: str = "CASIA-B", metric: str = "euc", cross_view_gallery: bool = False,
) -> dict[str, Any]:
    """CASIA-B, OUMVLP, CASIA-E, SUSTech1K: per view-pair Rank-1, identical views excluded.

    Single-view gallery (default): per condition, ``rank{k}`` = mean over probe views of the mean
    over the other gallery views of the view-pair accuracy (each rounded to 2 decimals, as
    OpenGait); SUSTech1K reports Rank-1..5, matches types by substring and has an ``Overall``
    condition; CASIA-E leaves out view ``270``. ``cross_view_gallery`` (CASIA-B, OUMVLP): each probe
    view against the whole gallery, same-identity same-view items removed (``compute_ACC_mAP``).
    """
    data = _test_set(source, labels, types, views, metric)
    if cross_view_gallery:
        return _cross_view_gallery(data, dataset)
    spec = builtin_protocol(dataset, "evaluate_indoor_dataset")
    return _view_pair_protocol(data, spec, dataset, spec["ranks"])


def evaluate_real_scene(
    source: Source, labels: Labels, types: Labels, views: Labels, *,
    dataset: str = "GREW", metric: str = "euc",
) -> dict[str, Any]:
    """Real-scene sets (GREW, HID2021, TTG-200, ...): Rank-1/5/10/20, probe vs gallery types."""
    spec = builtin_protocol(dataset, "evaluate_real_scene")
    data = _test_set(source, labels, types, views, metric)
    gallery_types, probe_types = spec["gallery"], [t for listed in spec["probes"].values() for t in listed]
    g_idx, p_idx = _of_types(data, gallery_types), _of_types(data, probe_types)
    if p_idx.size == 0 or g_idx.size == 0:
        raise ValueError(f"{dataset}: {p_idx.size} probes (types {probe_types}) and "
                         f"{g_idx.size} gallery items (types {gallery_types}); need both")
    acc = topk_accuracy(data.dist(p_idx, g_idx), data.labels[p_idx], data.labels[g_idx], tuple(spec["ranks"]))
    res = {k: round(v, 2) for k, v in acc.items()}
    logger.info("%s: %s", dataset, _fmt(res))
    return _report({dataset: res})


def _with_dataset(protocol: Callable[..., dict[str, Any]], fixed: str, name: str, doc: str
                  ) -> Callable[..., dict[str, Any]]:
    """`protocol` with its data set fixed, under OpenGait's per-data-set name (a `dataset` argument is ignored)."""
    def evaluate(source: Source, labels: Labels, types: Labels, views: Labels, *, dataset: str = fixed,
                 metric: str = "euc") -> dict[str, Any]:
        return protocol(source, labels, types, views, dataset=fixed, metric=metric)
    evaluate.__name__ = evaluate.__qualname__ = name
    evaluate.__doc__ = doc
    return evaluate


evaluate_SUSTech1K = _with_dataset(evaluate_indoor_dataset, "SUSTech1K", "evaluate_SUSTech1K",
                                   "SUSTech-1K: its eight conditions and ``Overall``, Rank-1..5.")
evaluate_GREW = _with_dataset(evaluate_real_scene, "GREW", "evaluate_GREW",
                              "GREW with labelled probes: gallery type ``01``, probe type ``02``.")


def GREW_submission(
    source: Source, labels: Labels, types: Labels, views: Labels, *,
    output_dir: str | os.PathLike[str], dataset: str = "GREW", metric: str = "euc", num_rank: int = 20,
) -> dict[str, Any]:
    """Write GREW's submission CSV: per probe video (type ``03``), the nearest gallery ids.

    The gallery is types ``01`` and ``02``; a probe's video id is its ``views`` entry. The file is
    ``output_dir/GREW_result/<time>.csv`` (a folder or URI) with header ``videoId,rank1,...``; numeric gallery labels
    are written as integers, as OpenGait does. Returns empty metrics and ``submission`` = the path.
    """
    data = _test_set(source, labels, types, views, metric)
    split = builtin_protocol("GREW", "evaluate_real_scene", "submission")
    g_idx, p_idx = _of_types(data, split["gallery"]), _of_types(data, split["probes"])
    if p_idx.size == 0 or g_idx.size < num_rank:
        raise ValueError(f"{dataset} submission needs probes (type 03) and >= {num_rank} gallery "
                         f"items (types 01, 02); got {p_idx.size} and {g_idx.size}")
    rows = nearest_gallery(data.dist(p_idx, g_idx), num_rank)
    gallery_ids = [_submission_id(x) for x in data.labels[g_idx].tolist()]
    path = fs.resolve(str(output_dir)).join("GREW_result", strftime("%Y-%m%d-%H%M%S", localtime()) + ".csv")
    lines = ["videoId," + ",".join(f"rank{k}" for k in range(1, num_rank + 1))]
    for video, ranked in zip(data.views[p_idx].tolist(), rows):
        lines.append(",".join([video] + [gallery_ids[j] for j in ranked]))
    fs.write_bytes_atomic(path, ("\n".join(lines) + "\n").encode("utf-8"))
    logger.info("%s submission with %d probes written to %s", dataset, p_idx.size, path.uri)
    return {"results": {}, "overall": {}, "submission": path.uri}


def evaluate_protocol(
    source: Source, labels: Labels, types: Labels, views: Labels, *,
    protocol: Mapping[str, Any] | str | os.PathLike[str], dataset: str = "", metric: str = "euc",
    ranks: Sequence[int] = (1, 5),
) -> dict[str, Any]:
    """A protocol JSON (docs/formats.md, "Inputs"): per condition, Rank-k averaged over probe views and gallery views.

    ``protocol`` = ``{"gallery": [types], "probes": {COND: [types]}, "views": [...],
    "exclude_identical_view": true}`` or its path. ``rank{k}`` of a condition = mean over probe
    views of the mean over gallery views (the probe's own view left out when excluding) of the
    view-pair accuracy (not rounded). ``views`` defaults to the sorted distinct views of the data.
    """
    spec = _load_protocol(protocol)
    return _view_pair_protocol(_test_set(source, labels, types, views, metric), spec, dataset or "protocol", ranks)


def _view_pair_protocol(data: _TestSet, spec: Mapping[str, Any], name: str, ranks: Sequence[int]) -> dict[str, Any]:
    """A protocol spec (a protocol.json, or a built-in data set's) on the test set, view pair by view pair.

    Besides `gallery`, `probes`, `views` and `exclude_identical_view`, a spec may say `match: substring` (a type
    matches when it contains one of the listed ones), `decimals` (each view pair's accuracy rounded, as OpenGait
    does for its data sets), `leave_out_views` and `overall_condition` (a condition reported as the overall).
    """
    leave_out = {str(v) for v in spec.get("leave_out_views") or []}
    view_list = [str(v) for v in spec.get("views") or sorted(set(data.views.tolist())) if str(v) not in leave_out]
    by_substring = spec.get("match", "exact") == "substring"
    g_idx = np.flatnonzero(_type_mask(data.types, [str(t) for t in spec["gallery"]], by_substring))
    probes = {cond: np.flatnonzero(_type_mask(data.types, [str(t) for t in probe_types], by_substring))
              for cond, probe_types in spec["probes"].items()}
    results, matrices = _condition_view_grids(data, name, g_idx, probes, view_list, tuple(ranks),
                                              decimals=spec.get("decimals"),
                                              exclude=bool(spec.get("exclude_identical_view", True)))
    overall_condition = spec.get("overall_condition")
    overall = dict(results[overall_condition]) if overall_condition in results else None
    return _report(results, overall=overall, view_matrices=matrices)


PROTOCOLS: dict[str, Callable[..., dict[str, Any]]] = {
    "evaluate_Gait3D": evaluate_Gait3D,
    "evaluate_CCPG": evaluate_CCPG,
    "evaluate_indoor_dataset": evaluate_indoor_dataset,
    "evaluate_SUSTech1K": evaluate_SUSTech1K,
    "evaluate_real_scene": evaluate_real_scene,
    "evaluate_GREW": evaluate_GREW,
    "GREW_submission": GREW_submission,
    "evaluate_protocol": evaluate_protocol,
}


def get_protocol(name: str) -> Callable[..., dict[str, Any]]:
    """The protocol function registered as ``name`` (an OpenGait ``eval_func``)."""
    return lookup(PROTOCOLS, name, "evaluator_cfg.eval_func")


def nearest_gallery(dist: Any, k: int) -> np.ndarray:
    """Indices ``[P, min(k, G)]`` of the ``k`` nearest gallery items per probe (ties by index)."""
    d = np.asarray(dist)
    step = max(1, (1 << 22) // max(1, d.shape[1]))
    parts = [np.argsort(d[i:i + step], axis=1, kind="stable")[:, :k]
             for i in range(0, d.shape[0], step)]
    return np.concatenate(parts) if parts else np.zeros((0, min(k, d.shape[1])), np.int64)


def _cross_view_gallery(data: _TestSet, dataset: str) -> dict[str, Any]:
    """``cross_view_gallery_evaluation``: each probe view against the whole gallery."""
    spec = builtin_protocol(dataset, "evaluate_indoor_dataset", "cross_view_gallery")
    view_list = sorted(set(data.views.tolist()))
    g_idx = _of_types(data, spec["gallery"])
    results: dict[str, dict[str, float]] = {}
    per_view: dict[str, dict[str, Any]] = {}
    for cond, probe_types in spec["probes"].items():
        p_all = _of_types(data, probe_types)
        if not _has_condition(dataset, cond, p_all, g_idx):
            continue
        acc = np.full(len(view_list), np.nan)
        m_ap = np.full(len(view_list), np.nan)
        for v, view in enumerate(view_list):
            p_idx = p_all[data.views[p_all] == view]
            if p_idx.size == 0:
                continue
            res = cross_view_accuracy(data.dist(p_idx, g_idx), data.labels[p_idx],
                                      data.labels[g_idx], data.views[p_idx], data.views[g_idx])
            acc[v], m_ap[v] = round(res["rank1"], 2), round(res["mAP"], 2)
        results[cond] = {"rank1": _mean(acc), "mAP": _mean(m_ap)}
        per_view[cond] = {"views": view_list, "rank1": _floats(acc), "mAP": _floats(m_ap)}
        logger.info("%s %s (cross-view gallery): %s", dataset, cond, _fmt(results[cond]))
    return _report(results, per_view=per_view)


def _view_grid(data: _TestSet, p_idx: np.ndarray, g_idx: np.ndarray, view_list: Sequence[str],
               ranks: Sequence[int], decimals: int | None) -> np.ndarray:
    """Top-k accuracy ``[V, V, R]`` (percent) per probe view x gallery view; NaN if a side is empty.

    ``decimals``: round each cell as OpenGait does (2), or not (None).
    """
    grid = np.full((len(view_list), len(view_list), len(ranks)), np.nan)
    empty = 0
    for a, p_view in enumerate(view_list):
        probes = p_idx[data.views[p_idx] == p_view]
        for b, g_view in enumerate(view_list):
            gallery = g_idx[data.views[g_idx] == g_view]
            if probes.size == 0 or gallery.size == 0:
                empty += 1
                continue
            acc = topk_accuracy(data.dist(probes, gallery), data.labels[probes],
                                data.labels[gallery], ranks)
            grid[a, b] = [acc[f"rank{k}"] for k in ranks]
    if empty:
        logger.warning("%d of %d view pairs have no probe or no gallery item; left out of means",
                       empty, len(view_list) ** 2)
    return grid if decimals is None else np.round(grid, decimals)


def _block_distance_fn(dist: np.ndarray, p_idx: np.ndarray, g_idx: np.ndarray) -> DistanceFn:
    """A :data:`DistanceFn` over test-set indices served from a computed ``dist [P, G]`` block."""
    p_pos = {int(i): n for n, i in enumerate(p_idx)}
    g_pos = {int(i): n for n, i in enumerate(g_idx)}

    def sliced(probe_idx: np.ndarray, gallery_idx: np.ndarray) -> np.ndarray:
        rows = np.array([p_pos[int(i)] for i in probe_idx], dtype=np.int64)
        cols = np.array([g_pos[int(i)] for i in gallery_idx], dtype=np.int64)
        return dist[np.ix_(rows, cols)]

    return sliced


def _test_set(source: Source, labels: Labels, types: Labels, views: Labels,
              metric: str) -> _TestSet:
    """Validate and align the inputs of a protocol."""
    arrays = [np.asarray(x).astype(str).ravel() for x in (labels, types, views)]
    n = arrays[0].shape[0]
    if any(a.shape[0] != n for a in arrays):
        raise ValueError(f"labels, types, views differ in length: {[a.shape[0] for a in arrays]}")
    if callable(source):
        dist = source
    else:
        emb_len = len(source)
        if emb_len != n:
            raise ValueError(f"{emb_len} embeddings for {n} labels")
        dist = embedding_distance_fn(source, metric)
    return _TestSet(dist, *arrays)


def _type_mask(types: np.ndarray, wanted: Sequence[str], by_substring: bool) -> np.ndarray:
    """Sequences whose type is one of ``wanted`` (or contains one of them, for SUSTech1K)."""
    if not by_substring:
        return np.isin(types, wanted)
    return np.any([np.char.find(types, w) >= 0 for w in wanted], axis=0)


def _has_condition(dataset: str, cond: str, p_idx: np.ndarray, g_idx: np.ndarray) -> bool:
    """Whether a condition has probes and gallery; warn and skip it otherwise."""
    if p_idx.size and g_idx.size:
        return True
    logger.warning("%s %s: %d probes, %d gallery items; condition skipped", dataset, cond,
                   p_idx.size, g_idx.size)
    return False


def _load_name_set(names: Iterable[str] | str | os.PathLike[str] | None, key: str,
                   who: str) -> set[str]:
    """A set of sequence names, given directly or as the ``key`` list of a JSON file."""
    if names is None:
        raise ValueError(f"{who} needs {key.lower()}: the {key} list of the partition JSON "
                         f"(id-type-view names) or the path of that JSON")
    if isinstance(names, (str, os.PathLike)):
        content = read_json(fs.resolve(os.fspath(names)))
        if not isinstance(content, dict) or key not in content:
            raise ValueError(f"{who}: {os.fspath(names)} has no {key} list")
        names = content[key]
    return {str(x) for x in names}


def _load_protocol(protocol: Mapping[str, Any] | str | os.PathLike[str]) -> dict[str, Any]:
    """A protocol dict (docs/formats.md, "Inputs"), given directly or as a JSON path, checked for its keys."""
    if isinstance(protocol, (str, os.PathLike)):
        protocol = read_json(fs.resolve(os.fspath(protocol)))
    if not isinstance(protocol, Mapping):
        raise ValueError("a protocol is a JSON object with 'gallery' and 'probes'")
    spec = dict(protocol)
    gallery, probes = spec.get("gallery"), spec.get("probes")
    if not isinstance(gallery, list) or not gallery:
        raise ValueError("protocol needs 'gallery': a non-empty list of sequence types")
    if not isinstance(probes, Mapping) or not probes or not all(
            isinstance(v, list) for v in probes.values()):
        raise ValueError("protocol needs 'probes': {condition: [sequence types]}")
    if "views" in spec and not isinstance(spec["views"], list):
        raise ValueError("protocol 'views' must be a list")
    return spec


def _matrix_entry(grid: np.ndarray, view_list: Sequence[str], exclude: bool) -> dict[str, Any]:
    """The heat-map entry of one condition: views and the Rank-1 matrix as lists."""
    return {"probe_views": list(view_list), "gallery_views": list(view_list),
            "rank1": [_floats(row) for row in grid], "exclude_identical_view": exclude}


def _report(results: dict[str, dict[str, float]], overall: dict[str, float] | None = None,
            **extra: Any) -> dict[str, Any]:
    """The protocol result; ``overall`` defaults to the mean over conditions of shared metrics."""
    if not results:
        raise ValueError("no condition has both probes and gallery items; check the sequence types")
    if overall is None:
        keys = [k for k in next(iter(results.values())) if all(k in r for r in results.values())]
        overall = {k: _mean([r[k] for r in results.values()]) for k in keys}
    out: dict[str, Any] = {"results": results, "overall": overall}
    out.update({k: v for k, v in extra.items() if v})
    return out


def _mean(values: Any) -> float:
    """Mean of the non-NaN values as a Python float (NaN if there is none)."""
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[~np.isnan(arr)]
    return float(arr.mean()) if arr.size else float("nan")


def _floats(values: np.ndarray) -> list[float]:
    """A 1-D array as a list of Python floats."""
    return [float(v) for v in np.asarray(values).ravel()]


def _submission_id(label: str) -> str:
    """A gallery label as GREW's server expects it: an integer if numeric."""
    return str(int(label)) if label.strip().lstrip("+-").isdigit() else label


def _fmt(metrics: Mapping[str, float]) -> str:
    """Metrics as ``key value`` text for logs."""
    return ", ".join(f"{k} {v:.2f}" for k, v in metrics.items())
