"""What a sweep ends with: the table of trials, the best config as YAML, the Rank-1 / lr plot."""
from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import yaml

from ray_gait.evaluation.plots import lines_figure
from ray_gait.heatmap.config import HeatmapConfig
from ray_gait.io import fs
from ray_gait.tuning.space import SearchSpec
from ray_gait.yaml_config import apply_overrides

if TYPE_CHECKING:
    from matplotlib.figure import Figure

LR_KEY = "optimizer_cfg.lr"
SIGMA_KEY = "heatmap_generator_args.sigma"
BEST_CONFIG = "best_config.yaml"
BEST_HEATMAP = "best_heatmap.yaml"


@dataclass
class TrialRow:
    """One trial as the sweep saw it."""

    trial_id: str
    params: dict[str, Any]
    iteration: int
    last: float | None
    best: float | None
    status: str


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def trials_table(rows: Sequence[TrialRow], keys: Sequence[str], metric: str) -> str:
    """A fixed-width table: trial, each searched key, iterations reached, last and best metric, status."""
    header = ["trial", *keys, "iter", f"{metric} (last)", f"{metric} (best)", "status"]
    body = [[row.trial_id, *(_format(row.params.get(k)) for k in keys), str(row.iteration),
             "-" if row.last is None else f"{row.last:.2f}", "-" if row.best is None else f"{row.best:.2f}",
             row.status] for row in rows]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)) for line in [header, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def best_config_tree(base_tree: Mapping[str, Any], params: Mapping[str, Any], train_keys: Sequence[str],
                     fixed: Mapping[str, Any]) -> dict[str, Any]:
    """The base config with the best trial's training values and `fixed` (paths, save_name) set."""
    values = {key: params[key] for key in train_keys if key in params}
    values.update(fixed)
    return apply_overrides(dict(base_tree), values)


def best_trial(rows: list[TrialRow], mode: str) -> TrialRow | None:
    """The trial whose final metric is best among those that ran to the end (else among all scored)."""
    completed = [r for r in rows if r.status == "completed" and r.last is not None]
    pool = completed or [r for r in rows if r.best is not None]
    if not pool:
        return None
    value = (lambda r: r.last) if completed else (lambda r: r.best)
    return max(pool, key=value) if mode == "max" else min(pool, key=value)


def write_best_config(spec: SearchSpec, base_tree: Mapping[str, Any], best: TrialRow, out: str,
                      fixed: Mapping[str, Any], heatmap: HeatmapConfig | None = None) -> str:
    """`out/best_config.yaml` (the base config with the best trial's values and `fixed` set, under a header that
    says how to train it), and `out/best_heatmap.yaml` when the sweep searched heatmap keys; the config's path."""
    if heatmap is not None:
        fs.write_bytes_atomic(fs.resolve(os.path.join(out, BEST_HEATMAP)),
                              yaml.safe_dump(heatmap.to_dict(), sort_keys=False).encode("utf-8"))
    tree = best_config_tree(base_tree, best.params, spec.train_keys, fixed)
    target = os.path.join(out, BEST_CONFIG)
    header = (f"# Best trial {best.trial_id} of sweep {spec.name} ({spec.metric} {best.best:.2f}); "
              f"train it with: ray-gait train --cfgs {target}\n")
    fs.write_bytes_atomic(fs.resolve(target), (header + yaml.safe_dump(tree, sort_keys=False)).encode("utf-8"))
    return target


def trial_row(trial_id: str, params: dict[str, Any], values: Sequence[float], iteration: int, failed: bool,
              total_iter: int, mode: str) -> TrialRow:
    """One trial's row: its metric's last and best value (`mode` max or min) and how it ended: error, completed
    (reached `total_iter`), stopped early (scored, then stopped by the scheduler), or not run."""
    if failed:
        status = "error"
    elif iteration >= total_iter:
        status = "completed"
    else:
        status = "stopped early" if values else "not run"
    pick = max if mode == "max" else min
    return TrialRow(trial_id=trial_id, params=params, iteration=iteration, last=values[-1] if values else None,
                    best=pick(values) if values else None, status=status)


def _x_key(rows: Sequence[TrialRow], keys: Sequence[str]) -> str | None:
    if LR_KEY in keys:
        return LR_KEY
    numeric = [k for k in keys if all(isinstance(r.params.get(k), (int, float)) for r in rows)]
    return numeric[0] if numeric else None


def rank1_figure(rows: Sequence[TrialRow], train_keys: Sequence[str], heatmap_keys: Sequence[str],
                 metric: str) -> Figure | None:
    """The best metric of each trial against lr (log axis), one line per sigma (heatmap config); None when
    no trial has a score."""
    x_key = _x_key(rows, train_keys)
    scored = [r for r in rows if r.best is not None and x_key is not None]
    if not scored or x_key is None:
        return None
    xs = [float(r.params[x_key]) for r in scored]
    use_log = min(xs) > 0 and (x_key == LR_KEY or max(xs) / min(xs) >= 10)
    lines: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for row, x in zip(scored, xs):
        label = ", ".join(f"{k.split('.')[-1]} {_format(row.params[k])}" for k in heatmap_keys) or metric
        lines[label].append((x, float(row.best)))
    curves = {}
    for label, points in sorted(lines.items()):
        points.sort()
        curves[label] = ([p[0] for p in points], [p[1] for p in points])
    name = x_key.split(".")[-1]
    return lines_figure(curves, f"{metric} against {name}", f"{name} (log scale)" if use_log else name,
                        f"best {metric} (%)", y_range=(0.0, 100.0), markers=True, log_x=use_log)
