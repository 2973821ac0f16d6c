"""`ray-gait tune`: Ray Tune over training keys (lr, ...) and heatmap keys (sigma, ...).

Before any trial starts, every distinct heatmap config of the sweep is rendered once by the step-1
job (and paired with silhouettes for SkeletonGait++) into a cache keyed by the config's hash; a
rerun finds them there and renders nothing.  Each trial is a driver function that builds a Ray
Train run (its own worker resources) on the data set of its heatmap config; the validation Rank-1
it reports at every save_iter drives ASHA.  The sweep lives in `<storage>/<name>`: a rerun restores
it (`Tuner.restore`) and finishes what was left.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import ray
import ray.tune
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from ray_gait.console import Stage, settings, stage
from ray_gait.evaluation.plots import write_figure
from ray_gait.io import fs
from ray_gait.io.dataset import write_json_atomic
from ray_gait.ray_layer.heatmap_job import run_heatmap_job
from ray_gait.ray_layer.link_job import run_link_job
from ray_gait.ray_layer.session import ensure_ray
from ray_gait.data.split import partition_splits
from ray_gait.ray_layer.cluster_checks import autoscaler_running, max_cluster_resources
from ray_gait.ray_layer.trainer import check_training_config, make_trainer, training_bundle
from ray_gait.config import TrainConfig, config_from_tree, path_overrides
from ray_gait.models import needs_silhouettes
from ray_gait.tuning.report import TrialRow, best_trial, rank1_figure, trial_row, trials_table, write_best_config
from ray_gait.tuning.space import SearchSpec, heatmap_configs, trial_count, trial_heatmap_config, trials_that_fit
from ray_gait.yaml_config import apply_overrides

log = logging.getLogger(__name__)

TRIAL_DRIVER_MEMORY = 256 * 1024 ** 2
SUMMARY = "sweep.json"
PLOT = "rank1_vs_lr.png"


@dataclass
class RenderRecord:
    """One heatmap config of the sweep: where its data set is, and whether this run rendered it."""

    config_hash: str
    overrides: dict[str, Any]
    dataset: str
    rendered_frames: int
    paired: bool


@dataclass
class SweepSummary:
    """What a sweep produced."""

    path: str
    rows: list[TrialRow]
    renders: list[RenderRecord]
    best: TrialRow | None
    table: str
    best_config: str | None
    plot: str | None
    restored: bool
    seconds: float


class _MetricReport(TuneReportCallback):
    """Forward to Tune only the reports that carry the sweep's metric (the validation points)."""

    def __init__(self, metric: str) -> None:
        super().__init__()
        self.metric = metric

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        """Pass rank 0's report on when it holds the metric."""
        if metrics and self.metric in metrics[0]:
            super().after_report(run_context, metrics, checkpoint)


_open_sweep: list[Stage] = []     # the progress stage of the sweep running on this driver (read by _TrialsDone)


class _TrialsDone(ray.tune.Callback):
    """Runs on the driver: counts every trial that ends (completed, stopped early, failed) in the sweep's stage,
    with the best metric so far.  It finds the stage in `_open_sweep`, not in itself, since Tune pickles it with
    the sweep."""

    def __init__(self, metric: str, mode: str) -> None:
        self.metric, self.mode = metric, mode

    def _done(self, trial: Any) -> None:
        if not _open_sweep:
            return
        progress = _open_sweep[-1]
        key = f"best {self.metric}"
        value, best = (trial.last_result or {}).get(self.metric), progress.info.get(key)
        better = value is not None and (best is None or (value > best if self.mode == "max" else value < best))
        progress.update(1, **({key: float(value)} if better else {}))

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        """A trial completed or was stopped early."""
        self._done(trial)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        """A trial failed."""
        self._done(trial)


def prepare_datasets(spec: SearchSpec, cfg: TrainConfig, cache_root: str) -> list[RenderRecord]:
    """Render (and pair) each distinct heatmap config of the sweep once; reuse what the cache holds."""
    data = spec.data
    records = []
    for overrides, hcfg in heatmap_configs(spec):
        key = hcfg.hash()
        summary = run_heatmap_job(data.pose_data_path, cache_root, data.dataset_name, hcfg, ext_name=key)
        log.info("heatmaps %s (%s): %s", key, overrides or "base config",
                 f"rendered {summary.rendered_frames} frames" if summary.rendered_frames else "already in the cache")
        dataset, paired = summary.output, False
        if needs_silhouettes(cfg.model_cfg.get("model", ""), cfg.data_cfg.data_in_use):
            if not data.silhouette_data_path:
                raise ValueError(f"{cfg.model_cfg['model']} needs silhouettes: set data.silhouette_data_path "
                                 "in the search space file")
            linked = run_link_job(summary.output, data.silhouette_data_path, f"{summary.output}_paired")
            dataset, paired = linked.output, not linked.up_to_date
        records.append(RenderRecord(key, overrides, dataset, summary.rendered_frames, paired))
    return records


def run_trial(params: dict[str, Any], base_tree: dict[str, Any], source: str, spec: SearchSpec,
              datasets: dict[str, str], train_storage: str) -> None:
    """One trial (a Tune function trainable): a Ray Train run of the base config with these values."""
    trial_id = ray.tune.get_context().get_trial_id()
    values = {key: params[key] for key in spec.train_keys}
    values["trainer_cfg.save_name"] = trial_id
    if datasets:
        values["data_cfg.dataset_root"] = datasets[trial_heatmap_config(spec, params).hash()]
    tree = apply_overrides(base_tree, values)
    cfg = config_from_tree(tree, source=source)
    trainer = make_trainer(cfg, tree, storage=train_storage, callbacks=[_MetricReport(spec.metric)])
    trainer.fit()


def _distribution(value: dict[str, Any]) -> Any:
    kind, args = next(iter(value.items()))
    return getattr(ray.tune, kind)(args) if kind in ("grid_search", "choice") else getattr(ray.tune, kind)(*args)


def _concurrency(spec: SearchSpec, cfg: TrainConfig) -> int:
    """Trials run at once: as many as the cluster can hold, all of them where an autoscaler can add nodes
    (bounded by its config's limits when known); `max_concurrent_trials` caps either."""
    trials = trial_count(spec) or 1
    if autoscaler_running():
        capacity = max_cluster_resources()
        fits = trials if not capacity else min(trials, trials_that_fit(capacity, training_bundle(cfg),
                                                                       cfg.ray_cfg.num_workers))
    else:
        fits = trials_that_fit(ray.cluster_resources(), training_bundle(cfg), cfg.ray_cfg.num_workers)
    cap = spec.max_concurrent_trials
    return max(1, min(fits, cap) if cap > 0 else fits)


def _rows(results: ray.tune.ResultGrid, spec: SearchSpec, total_iter: int) -> list[TrialRow]:
    """The table's rows, from what Tune kept of each trial (its metric's history, last iteration, error)."""
    rows = []
    for result in results:
        history = result.metrics_dataframe
        values = [] if history is None or spec.metric not in history else [
            float(v) for v in history[spec.metric].dropna()]
        metrics = result.metrics or {}
        rows.append(trial_row(str(metrics.get("trial_id") or os.path.basename(result.path or "?")),
                              {key: result.config.get(key) for key in spec.space}, values,
                              int(metrics.get("iteration", 0) or 0), result.error is not None, total_iter, spec.mode))
    rows.sort(key=lambda r: r.trial_id)
    return rows


def _check_trial_configs(spec: SearchSpec, cfg: TrainConfig, base_tree: dict[str, Any],
                         datasets: dict[str, str]) -> None:
    """Fail before any trial starts when the base config, or its values at a grid point, cannot train."""
    grid = {key: next(iter(value.values())) for key, value in spec.space.items()
            if next(iter(value)) in ("grid_search", "choice") and key in spec.train_keys}
    values: dict[str, Any] = {key: options[0] for key, options in grid.items()}
    if datasets:
        values["data_cfg.dataset_root"] = next(iter(datasets.values()))
    check_training_config(config_from_tree(apply_overrides(base_tree, values), source=cfg.source))


def run_sweep(spec: SearchSpec, cfg: TrainConfig, base_tree: dict[str, Any]) -> SweepSummary:
    """Render what the sweep needs, run (or restore) the Tuner, and write the table, best config and plot."""
    started = time.perf_counter()
    if spec.metric.startswith("val/") and not partition_splits(cfg)["VAL_SET"]:
        raise ValueError(f"the sweep's metric {spec.metric} needs a validation split: set data_cfg.val_ids "
                         "(identities held out of TRAIN_SET) or give the partition a VAL_SET")
    ensure_ray(shared={"ray_cfg.storage_path": cfg.ray_cfg.storage_path,
                       "data_cfg.dataset_root": cfg.data_cfg.dataset_root},
               resources=training_bundle(cfg), what="the sweep's trainings (ray_cfg)")
    storage = cfg.ray_cfg.storage_path
    sweep_dir = os.path.join(storage, spec.name)
    datasets: dict[str, str] = {}
    renders: list[RenderRecord] = []
    if spec.data is not None and spec.data.pose_data_path:
        cache_root = spec.data.cache_root or os.path.join(storage, "heatmap_cache")
        renders = prepare_datasets(spec, cfg, cache_root)
        datasets = {r.config_hash: r.dataset for r in renders}
    _check_trial_configs(spec, cfg, base_tree, datasets)
    trainable = ray.tune.with_parameters(run_trial, base_tree=base_tree, source=cfg.source, spec=spec,
                                         datasets=datasets, train_storage=os.path.join(sweep_dir, "trials"))
    trainable = ray.tune.with_resources(trainable, {"cpu": 0, "memory": TRIAL_DRIVER_MEMORY})
    param_space = {key: _distribution(value) for key, value in spec.space.items()}
    total_iter = cfg.trainer_cfg.total_iter
    restored = ray.tune.Tuner.can_restore(sweep_dir)
    if restored:
        log.info("resuming the sweep in %s", sweep_dir)
        tuner = ray.tune.Tuner.restore(sweep_dir, trainable, resume_errored=True, param_space=param_space)
    else:
        if spec.scheduler.type == "asha":
            grace = spec.scheduler.grace_period or cfg.trainer_cfg.save_iter
            scheduler = ASHAScheduler(time_attr="iteration", max_t=total_iter, grace_period=min(grace, total_iter),
                                      reduction_factor=spec.scheduler.reduction_factor)
        else:
            scheduler = FIFOScheduler()
        concurrency = _concurrency(spec, cfg)
        log.info("sweep %s: %d trial(s) at a time, %s, runs in %s", spec.name, concurrency, spec.scheduler.type,
                 sweep_dir)
        tuner = ray.tune.Tuner(
            trainable, param_space=param_space,
            tune_config=ray.tune.TuneConfig(metric=spec.metric, mode=spec.mode, num_samples=spec.num_samples,
                                            scheduler=scheduler, max_concurrent_trials=concurrency),
            run_config=ray.tune.RunConfig(name=spec.name, storage_path=storage, verbose=1 if settings().verbose else 0,
                                          callbacks=[_TrialsDone(spec.metric, spec.mode)]))
    with stage("tune", total=None if restored else trial_count(spec), unit="trial") as progress:
        _open_sweep.append(progress)
        try:
            results = tuner.fit()
        finally:
            _open_sweep.remove(progress)
    errors = [result.error for result in results if result.error is not None]
    if errors:
        log.warning("%d trial(s) failed; the first: %s", len(errors), " ".join(str(errors[0]).split())[-500:])
    rows = _rows(results, spec, total_iter)
    keys = list(spec.space)
    table = trials_table(rows, keys, spec.metric)
    best = best_trial(rows, spec.mode)
    fs.makedirs(fs.resolve(sweep_dir))
    best_path = None
    if best:
        fixed = {**path_overrides(cfg), "trainer_cfg.save_name": f"{spec.name}_best",
                 "evaluator_cfg.save_name": f"{spec.name}_best"}
        heatmap = trial_heatmap_config(spec, best.params) if datasets else None
        if heatmap is not None:
            fixed["data_cfg.dataset_root"] = datasets[heatmap.hash()]
        best_path = write_best_config(spec, base_tree, best, sweep_dir, fixed, heatmap)
    drawn = [k for k in spec.train_keys if k.startswith("heatmap_cfg.")]      # maps drawn on the fly per trial
    figure = rank1_figure(rows, [k for k in spec.train_keys if k not in drawn] or drawn, spec.heatmap_keys + drawn,
                          spec.metric)
    plot = None if figure is None else write_figure(os.path.join(sweep_dir, PLOT), figure)
    summary = SweepSummary(path=sweep_dir, rows=rows, renders=renders, best=best, table=table,
                           best_config=best_path, plot=plot, restored=restored,
                           seconds=time.perf_counter() - started)
    write_json_atomic(fs.resolve(os.path.join(sweep_dir, SUMMARY)), {
        "name": spec.name, "metric": spec.metric, "mode": spec.mode, "restored": restored,
        "trials": [r.__dict__ for r in rows], "best": best.__dict__ if best else None,
        "renders": [r.__dict__ for r in renders], "best_config": best_path, "plot": plot,
        "seconds": summary.seconds})
    return summary
