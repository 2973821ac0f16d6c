"""What a sweep ends with: the table of trials, the best config as YAML, the Rank-1 / lr plot."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ray_gait.evaluation.plots import lines_figure
from ray_gait.yaml_config import apply_overrides

if TYPE_CHECKING:
    from matplotlib.figure import Figure

LR_KEY = "optimizer_cfg.lr"
SIGMA_KEY = "heatmap_generator_args.sigma"


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
