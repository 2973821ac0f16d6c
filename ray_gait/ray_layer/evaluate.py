"""Evaluation on Ray: embeddings of the test split by Ray Data actors, then the configured protocol.

Writes `DIR/embeddings.npz` (embeddings with id, type, view, seq, so metrics can be recomputed
without the model), `DIR/metrics.json` (docs/formats.md) and PNG plots: Rank-1 per probe view x gallery view
and the CMC curves.
"""
from __future__ import annotations

import io
import logging
import os
import posixpath
import time
from typing import Any

import numpy as np
import ray
import ray.data
import torch

from ray_gait.console import track
from ray_gait.data.index import SplitIndex
from ray_gait.data.split import make_reader, split_index
from ray_gait.evaluation.config_protocol import evaluate_embeddings, protocol_kwargs
from ray_gait.evaluation.embed import SequenceEmbedder
from ray_gait.models.weights import check_eval_weights, load_eval_weights
from ray_gait.evaluation.metrics import distances, first_positive_rank
from ray_gait.evaluation.plots import cmc_figure, view_matrix_figure, write_figure
from ray_gait.io import fs
from ray_gait.io.dataset import read_json, write_json_atomic
from ray_gait.models import build_model
from ray_gait.ray_layer.session import ensure_ray
from ray_gait.config import TrainConfig
from ray_gait.training.state import saved_checkpoints

log = logging.getLogger(__name__)

CMC_RANKS = 20


class Embedder:
    """A Ray Data actor: loads the model once, reads and embeds the sequences whose positions it is given."""

    def __init__(self, cfg: TrainConfig, index: SplitIndex, weights: str, use_gpu: bool) -> None:
        if use_gpu and not torch.cuda.is_available():
            raise RuntimeError(f"ray_cfg.use_gpu is true but torch {torch.__version__} sees no CUDA device on node "
                               f"{ray.util.get_node_ip_address()}: install a CUDA build of torch there, or set "
                               "ray_cfg.use_gpu=false")
        self.device = torch.device("cuda" if use_gpu else "cpu")
        model = build_model(cfg.model_cfg)
        load_eval_weights(model, weights, strict=cfg.evaluator_cfg.restore_ckpt_strict)
        self.embedder = SequenceEmbedder(model.to(self.device).eval(), cfg, self.device)
        self.reader = make_reader(cfg, index, str(self.device) if self.device.type == "cuda" else None, once=True)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Positions in the index -> positions, float32 embedding bytes and shape (E, p), or why it is unreadable."""
        positions = [int(i) for i in batch["position"]]
        embedded, unreadable = self.embedder.embed_readable(self.reader, positions)
        arrays = [embedded[i].astype(np.float32) if i in embedded else np.zeros((0, 0), np.float32)
                  for i in positions]
        return {"position": np.asarray(positions, dtype=np.int64),
                "embedding": np.array([a.tobytes() for a in arrays], dtype=object),
                "shape": np.array([a.shape for a in arrays], dtype=np.int64).reshape(-1, 2),
                "unreadable": np.array([unreadable.get(i, "") for i in positions], dtype=object)}


def collect_embeddings(batches: Any, count: int) -> tuple[np.ndarray, list[int], dict[int, str]]:
    """Embeddings [n, E, p] of the readable positions (in order), those positions, and why each other one is unreadable."""
    embedded: dict[int, np.ndarray] = {}
    unreadable: dict[int, str] = {}
    for batch in batches:
        for position, raw, shape, reason in zip(batch["position"], batch["embedding"], batch["shape"],
                                                 batch["unreadable"]):
            if reason:
                unreadable[int(position)] = str(reason)
            else:
                embedded[int(position)] = np.frombuffer(raw, dtype=np.float32).reshape(tuple(int(v) for v in shape))
    kept = sorted(embedded)
    if len(kept) + len(unreadable) != count:
        raise RuntimeError(f"the embedding actors returned {len(kept) + len(unreadable)} of {count} sequences")
    if not kept:
        raise ValueError(f"no test sequence can be read ({next(iter(unreadable.values()), 'empty split')})")
    return np.stack([embedded[i] for i in kept]), kept, unreadable


def find_checkpoint(cfg: TrainConfig, explicit: str | None) -> str:
    """The weights to evaluate (--checkpoint, else restore_hint's iteration, else the latest checkpoint),
    checked here against the configured model, before any actor starts."""
    if explicit:
        if not fs.exists(fs.resolve(explicit)):
            raise FileNotFoundError(f"--checkpoint {explicit} does not exist")
        weights = explicit
    elif isinstance(cfg.evaluator_cfg.restore_hint, str) and cfg.evaluator_cfg.restore_hint:
        weights = cfg.evaluator_cfg.restore_hint
    else:
        run_dir = os.path.join(cfg.ray_cfg.storage_path, cfg.evaluator_cfg.save_name)
        found = saved_checkpoints(run_dir)
        if not found:
            raise FileNotFoundError(f"no checkpoint under {run_dir}; train first or pass --checkpoint")
        matching = [f for f in found if f[0] == cfg.evaluator_cfg.restore_hint]
        weights = (matching or found)[-1][1]
    check_eval_weights(cfg.model_cfg, weights, strict=cfg.evaluator_cfg.restore_ckpt_strict)
    return weights


def condition_plot_name(cond: str, where: str) -> str:
    """The file name of a condition's Rank-1 plot; ValueError when the condition cannot be part of a file name."""
    fs.safe_component(cond, f"condition name from {where}")
    return fs.safe_component(f"rank1_views_{cond}.png", f"plot file name of a condition from {where}")


def check_protocol_conditions(cfg: TrainConfig) -> None:
    """Refuse, before any work, a protocol JSON whose condition names cannot name plot files."""
    if cfg.evaluator_cfg.eval_func != "evaluate_protocol":
        return
    path = protocol_kwargs(cfg)["protocol"]
    spec = read_json(fs.resolve(path))
    probes = spec.get("probes") if isinstance(spec, dict) else None
    for cond in probes if isinstance(probes, dict) else {}:
        condition_plot_name(cond, path)


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
    check_protocol_conditions(cfg)
    weights = find_checkpoint(cfg, checkpoint)
    index = split_index(cfg, "TEST_SET")
    count = len(index)
    use_gpu = cfg.ray_cfg.use_gpu
    ensure_ray(shared={"--out": out_dir, "data_cfg.dataset_root": cfg.data_cfg.dataset_root},
               resources={"GPU": 1} if use_gpu else {"CPU": 1},
               what="the evaluation" + (" with ray_cfg.use_gpu" if use_gpu else ""))
    size = workers or max(1, min(cfg.ray_cfg.num_workers, count))
    log.info("embedding %d test sequences (%s) with %d actor(s), weights %s", count, index.kind, size, weights)
    positions = ray.data.from_items([{"position": i} for i in range(count)], override_num_blocks=max(1, min(count, 4 * size)))
    embedded = positions.map_batches(Embedder, fn_constructor_kwargs={"cfg": cfg, "index": index, "weights": weights,
                                                                      "use_gpu": use_gpu},
                                     batch_size=8, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=size),
                                     num_gpus=1 if use_gpu else 0, num_cpus=0 if use_gpu else 1)
    batches = track(embedded.iter_batches(batch_size=32, batch_format="numpy"), "test", total=count, unit="seq",
                    size=lambda batch: len(batch["position"]))
    emb, kept, unreadable = collect_embeddings(batches, count)
    for _, reason in sorted(unreadable.items()):
        log.warning("left out of the evaluation: %s", reason)
    kept_keys = [index.keys[i] for i in kept]
    keys = {name: np.array([key[i] for key in kept_keys]) for i, name in enumerate(("id", "type", "view", "seq"))}
    buffer = io.BytesIO()
    np.savez_compressed(buffer, embeddings=emb, **keys)
    fs.write_bytes_atomic(fs.resolve(out_dir).join("embeddings.npz"), buffer.getvalue())
    result = evaluate_embeddings(cfg, emb, kept_keys, out_dir)
    metrics = {"protocol": cfg.evaluator_cfg.eval_func, "metric": cfg.evaluator_cfg.metric,
               "results": result["results"], "overall": result.get("overall", {}),
               "view_matrices": result.get("view_matrices", {}), "checkpoint": weights,
               **({"submission": result["submission"]} if "submission" in result else {}),
               "sequences": len(kept), "seconds": time.perf_counter() - started,
               "unreadable": [{"sequence": "/".join(index.keys[i]), "reason": reason}
                              for i, reason in sorted(unreadable.items())]}
    plots = []
    for cond, grid in metrics["view_matrices"].items():
        path = posixpath.join(out_dir, condition_plot_name(cond, cfg.evaluator_cfg.eval_func))
        plots.append(write_figure(path, view_matrix_figure(grid["rank1"], grid["probe_views"], grid["gallery_views"],
                                                           f"{cond}: Rank-1 (%) per probe x gallery view")))
    if cfg.evaluator_cfg.eval_func == "evaluate_protocol":
        spec = read_json(fs.resolve(protocol_kwargs(cfg)["protocol"]))
        curves = cmc_curves(emb, keys["id"], keys["type"], keys["view"], spec, cfg.evaluator_cfg.metric)
        metrics["cmc"] = curves
        if curves:
            plots.append(write_figure(posixpath.join(out_dir, "cmc.png"), cmc_figure(curves, "CMC, cross-view")))
    metrics["plots"] = plots
    write_json_atomic(fs.resolve(out_dir).join("metrics.json"), metrics)
    return metrics
