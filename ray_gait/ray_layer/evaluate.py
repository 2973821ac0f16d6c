"""Evaluation on Ray: embeddings of the test split by Ray Data actors, then the configured protocol.

Writes `DIR/embeddings.npz` (embeddings with id, type, view, seq, so metrics can be recomputed
without the model), `DIR/metrics.json` (SPEC 5) and PNG plots: Rank-1 per probe view x gallery view
and the CMC curves.
"""
from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

import numpy as np
import ray
import ray.data
import torch

from ray_gait.data.frames import FrameSampling
from ray_gait.data.transforms import build_transform
from ray_gait.evaluation.embed import embed_sequence, load_eval_weights
from ray_gait.evaluation.metrics import distances, first_positive_rank
from ray_gait.evaluation.plots import cmc_plot, view_heatmap
from ray_gait.evaluation.protocols import get_protocol
from ray_gait.heatmap.preview import write_png
from ray_gait.io import fs
from ray_gait.io.dataset import decode_heatmap, decode_silhouette, write_json_atomic
from ray_gait.models import build_model
from ray_gait.ray_layer.session import ensure_ray
from ray_gait.ray_layer.trainer import dataset_columns, partition_splits
from ray_gait.training.config import TrainConfig, config_from_tree, resolve_path
from ray_gait.training.data import input_columns
from ray_gait.training.loop import autocast_dtype
from ray_gait.training.state import saved_checkpoints

log = logging.getLogger(__name__)

CMC_RANKS = 20


class Embedder:
    """A Ray Data actor: loads the model once, embeds batches of whole sequences."""

    def __init__(self, config_tree: dict, source: str, weights: str, use_gpu: bool) -> None:
        cfg = config_from_tree(config_tree, source)
        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        self.model = build_model(cfg.model_cfg)
        load_eval_weights(self.model, weights, strict=cfg.evaluator_cfg.restore_ckpt_strict)
        self.model.to(self.device).eval()
        self.columns = input_columns(cfg.model_cfg["model"], cfg.data_cfg.data_in_use)
        self.transforms = build_transform(cfg.evaluator_cfg.transform)
        self.sampling = FrameSampling.from_config(cfg.evaluator_cfg.sampler)
        self.amp = autocast_dtype(cfg.evaluator_cfg.enable_float16, self.device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Rows in (heatmap, silhouette bytes) -> rows out (keys + embedding [E, p])."""
        out = []
        for i in range(len(batch["id"])):
            row = {k: batch[k][i] for k in batch}
            arrays = [decode_heatmap(row)] + ([decode_silhouette(row)] if "silhouette" in self.columns else [])
            out.append(embed_sequence(self.model, arrays, self.transforms, self.sampling, self.device, self.amp))
        return {"id": batch["id"], "type": batch["type"], "view": batch["view"], "seq": batch["seq"],
                "embedding": np.stack(out).astype(np.float32)}


def find_checkpoint(cfg: TrainConfig, explicit: str | None) -> str:
    """The weights to evaluate: --checkpoint, else restore_hint's iteration, else the latest checkpoint."""
    if explicit:
        if not os.path.exists(explicit):
            raise FileNotFoundError(f"--checkpoint {explicit} does not exist")
        return explicit
    hint = cfg.evaluator_cfg.restore_hint
    if isinstance(hint, str) and hint:
        return hint
    run_dir = os.path.join(resolve_path(cfg, cfg.ray_cfg.storage_path), cfg.evaluator_cfg.save_name)
    found = saved_checkpoints(run_dir)
    if not found:
        raise FileNotFoundError(f"no checkpoint under {run_dir}; train first or pass --checkpoint")
    matching = [f for f in found if f[0] == hint]
    return (matching or found)[-1][1]


def protocol_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """Keyword arguments of the configured protocol (its protocol.json, probe set, data set name)."""
    name = cfg.evaluator_cfg.eval_func
    kwargs: dict[str, Any] = {"metric": cfg.evaluator_cfg.metric}
    dataset = cfg.data_cfg.test_dataset_name or cfg.data_cfg.dataset_name
    if name == "evaluate_protocol":
        path = cfg.data_cfg.dataset_protocol or os.path.join(
            os.path.dirname(resolve_path(cfg, cfg.data_cfg.dataset_partition)), "protocol.json")
        kwargs["protocol"] = resolve_path(cfg, path)
    elif name == "evaluate_Gait3D":
        kwargs["probe_set"] = resolve_path(cfg, cfg.data_cfg.dataset_partition)
    else:
        kwargs["dataset"] = dataset
    if name == "evaluate_indoor_dataset":
        kwargs["cross_view_gallery"] = cfg.evaluator_cfg.cross_view_gallery
    return kwargs


def cmc_curves(emb: np.ndarray, labels: np.ndarray, types: np.ndarray, views: np.ndarray, protocol: dict,
               metric: str) -> dict[str, list[float]]:
    """Cross-view CMC (%) per condition of a protocol JSON, ranks 1..20."""
    gallery = np.isin(types, protocol["gallery"])
    exclude = bool(protocol.get("exclude_identical_view", True))
    curves = {}
    for cond, probe_types in protocol["probes"].items():
        probe = np.isin(types, probe_types)
        if not probe.any() or not gallery.any():
            continue
        dist = distances(emb[probe], emb[gallery], metric)
        same_view = views[probe][:, None] == views[gallery][None, :]
        if exclude:
            dist = np.where(same_view, np.inf, dist)
        positive = (labels[probe][:, None] == labels[gallery][None, :]) & ~(same_view & exclude)
        # rank among the gallery items still allowed (excluded ones sit at +inf, after every match)
        rank = first_positive_rank(dist, positive)
        curves[cond] = [float((rank < k).mean() * 100) for k in range(1, CMC_RANKS + 1)]
    return curves


def format_table(result: dict[str, Any]) -> str:
    """The results as OpenGait prints them: per condition Rank-k, then Rank-1 per probe view."""
    lines = []
    for cond, values in result["results"].items():
        lines.append(f"{cond}: " + "  ".join(f"{k}: {v:.2f}%" for k, v in values.items()
                                              if isinstance(v, (int, float))))
    for cond, grid in (result.get("view_matrices") or {}).items():
        per_view = [np.nanmean([v for j, v in enumerate(row) if not (grid.get("exclude_identical_view") and
                                                                      grid["gallery_views"][j] == pv)])
                    for pv, row in zip(grid["probe_views"], grid["rank1"])]
        lines.append(f"{cond} Rank-1 per probe view (identical views excluded): " +
                     " ".join(f"{v}: {x:.1f}" for v, x in zip(grid["probe_views"], per_view)))
    if "overall" in result:
        lines.append("overall: " + "  ".join(f"{k}: {v:.2f}%" for k, v in result["overall"].items()))
    return "\n".join(lines)


def run_evaluation(cfg: TrainConfig, config_tree: dict, out_dir: str, checkpoint: str | None = None,
                   workers: int | None = None) -> dict[str, Any]:
    """Embed the test split with Ray Data actors and evaluate it; returns the metrics dict."""
    started = time.perf_counter()
    weights = find_checkpoint(cfg, checkpoint)
    columns = dataset_columns(cfg)
    protocol_fn = get_protocol(cfg.evaluator_cfg.eval_func)
    test_ids = set(partition_splits(cfg)["TEST_SET"])
    ensure_ray()
    root = fs.resolve(resolve_path(cfg, cfg.data_cfg.dataset_root)).uri
    ds = ray.data.read_parquet(root).select_columns(columns).filter(lambda r: str(r["id"]) in test_ids).materialize()
    count = ds.count()
    if count == 0:
        raise ValueError(f"no sequence of the partition's TEST_SET found in {root}")
    use_gpu = cfg.ray_cfg.use_gpu
    size = workers or max(1, min(cfg.ray_cfg.num_workers, count))
    log.info("embedding %d test sequences with %d actor(s), weights %s", count, size, weights)
    embedded = ds.map_batches(Embedder, fn_constructor_kwargs={"config_tree": config_tree, "source": cfg.source,
                                                               "weights": weights, "use_gpu": use_gpu},
                              batch_size=8, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=size),
                              num_gpus=1 if use_gpu else 0, num_cpus=0 if use_gpu else 1).take_all()
    order = sorted(range(len(embedded)), key=lambda i: (embedded[i]["id"], embedded[i]["type"], embedded[i]["view"],
                                                        embedded[i]["seq"]))
    emb = np.stack([embedded[i]["embedding"] for i in order])
    keys = {k: np.array([str(embedded[i][k]) for i in order]) for k in ("id", "type", "view", "seq")}
    os.makedirs(out_dir, exist_ok=True)
    np.savez_compressed(os.path.join(out_dir, "embeddings.npz"), embeddings=emb, **keys)
    kwargs = protocol_kwargs(cfg)
    result = protocol_fn(emb, keys["id"], keys["type"], keys["view"], **kwargs)
    metrics = {"protocol": cfg.evaluator_cfg.eval_func, "metric": cfg.evaluator_cfg.metric,
               "results": result["results"], "overall": result.get("overall", {}),
               "view_matrices": result.get("view_matrices", {}), "checkpoint": weights,
               "sequences": int(count), "seconds": time.perf_counter() - started}
    plots = []
    for cond, grid in metrics["view_matrices"].items():
        path = os.path.join(out_dir, f"rank1_views_{cond}.png")
        write_png(fs.resolve(path), view_heatmap(grid["rank1"], grid["probe_views"], grid["gallery_views"],
                                                 f"{cond}: Rank-1 (%) per probe x gallery view"))
        plots.append(path)
    if "protocol" in kwargs:
        with open(kwargs["protocol"], "r", encoding="utf-8") as handle:
            spec = json.load(handle)
        curves = cmc_curves(emb, keys["id"], keys["type"], keys["view"], spec, cfg.evaluator_cfg.metric)
        metrics["cmc"] = curves
        if curves:
            path = os.path.join(out_dir, "cmc.png")
            write_png(fs.resolve(path), cmc_plot(curves, "CMC, cross-view"))
            plots.append(path)
    metrics["plots"] = plots
    write_json_atomic(fs.resolve(os.path.join(out_dir, "metrics.json")), metrics)
    return metrics
