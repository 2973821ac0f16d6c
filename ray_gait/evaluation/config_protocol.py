"""The configured protocol (`evaluator_cfg.eval_func` and its files) applied to embedded sequences."""
from __future__ import annotations

import posixpath
from typing import Any, Sequence

import numpy as np

from ray_gait.evaluation.protocols import get_protocol
from ray_gait.config import TrainConfig


def protocol_kwargs(cfg: TrainConfig, out_dir: str | None = None) -> dict[str, Any]:
    """Keyword arguments of the configured protocol (its protocol.json, probe set, data set name; GREW's
    submission file goes below `out_dir`)."""
    name = cfg.evaluator_cfg.eval_func
    kwargs: dict[str, Any] = {"metric": cfg.evaluator_cfg.metric}
    dataset = cfg.data_cfg.test_dataset_name or cfg.data_cfg.dataset_name
    if name == "evaluate_protocol":
        kwargs["protocol"] = cfg.data_cfg.dataset_protocol or posixpath.join(
            posixpath.dirname(cfg.data_cfg.dataset_partition), "protocol.json")
    elif name == "evaluate_Gait3D":
        kwargs["probe_set"] = cfg.data_cfg.dataset_partition
    else:
        kwargs["dataset"] = dataset
    if name == "GREW_submission":
        if not out_dir:
            raise ValueError("evaluator_cfg.eval_func GREW_submission writes a submission file: run it with "
                             "`ray-gait test` (below --out), not during training")
        kwargs["output_dir"] = out_dir
    if name == "evaluate_indoor_dataset":
        kwargs["cross_view_gallery"] = cfg.evaluator_cfg.cross_view_gallery
    return kwargs


def evaluate_embeddings(cfg: TrainConfig, embeddings: np.ndarray, keys: Sequence[tuple[str, str, str, str]],
                        out_dir: str | None = None) -> dict[str, Any]:
    """The configured protocol's result for embeddings [n, E, p] of sequences keyed (id, type, view, seq);
    a protocol that writes files (GREW's submission) writes them below `out_dir`."""
    table = np.array(keys, dtype=str).reshape(-1, 4)
    return get_protocol(cfg.evaluator_cfg.eval_func)(embeddings, table[:, 0], table[:, 1], table[:, 2],
                                                      **protocol_kwargs(cfg, out_dir))


def rank1_summary(result: dict[str, Any], prefix: str) -> dict[str, float]:
    """`<prefix>/<condition>/rank1` and `<prefix>/rank1` of a protocol result (what training reports)."""
    out = {f"{prefix}/{cond}/rank1": float(v["rank1"]) for cond, v in result["results"].items() if "rank1" in v}
    if "rank1" in result.get("overall", {}):
        out[f"{prefix}/rank1"] = float(result["overall"]["rank1"])
    return out
