"""SkeletonGait (OpenGait's ``DeepGaitV2``) and SkeletonGait++ (``SkeletonGaitPP``) in plain torch.

``state_dict`` keys and shapes equal OpenGait's, so its checkpoints load with ``strict=True``.

    model = build_model(model_cfg)                       # model_cfg: OpenGait yaml section
    load_weights(model, "GaitModel-60000.pt")            # OpenGait checkpoint, weights only
    emb = embed(model, x)                                # x [n, s, C, 64, 44] -> [n, E, 16]
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ray_gait.registry import lookup

from .checkpoint import (
    CheckpointError,
    IncompatibleKeys,
    check_weights,
    export_opengait_checkpoint,
    load_opengait_checkpoint,
    load_weights,
)
from .deepgaitv2 import PARTS_NUM, DeepGaitV2, GaitModel, GaitOutput
from .skeletongait_pp import AttentionFusion, SkeletonGaitPP

__all__ = [
    "AttentionFusion",
    "CheckpointError",
    "DeepGaitV2",
    "GaitModel",
    "GaitOutput",
    "IncompatibleKeys",
    "MODELS",
    "PARTS_NUM",
    "SkeletonGaitPP",
    "build_model",
    "check_weights",
    "embed",
    "export_opengait_checkpoint",
    "input_columns",
    "load_opengait_checkpoint",
    "load_weights",
    "needs_silhouettes",
]

MODELS: dict[str, type[GaitModel]] = {"DeepGaitV2": DeepGaitV2, "SkeletonGaitPP": SkeletonGaitPP}


def build_model(
    model_cfg: Mapping[str, Any],
    *,
    weights: str | os.PathLike | Mapping[str, Any] | None = None,
    strict: bool = True,
) -> GaitModel:
    """Build the model named by ``model_cfg['model']`` and optionally load ``weights`` (path or state_dict)."""
    if not isinstance(model_cfg, Mapping):
        raise ValueError(f"model_cfg must be a mapping, got {type(model_cfg).__name__}")
    model = lookup(MODELS, model_cfg.get("model"), "model_cfg.model").from_config(model_cfg)
    if weights is not None:
        load_weights(model, weights, strict=strict)
    return model


def input_columns(model_name: str, data_in_use: Sequence[bool] | None) -> tuple[str, ...]:
    """The data set columns a model reads (its class's ``inputs``), checked against ``data_in_use`` =
    [heatmap, silhouette] (OpenGait's order)."""
    wanted = lookup(MODELS, model_name, "model_cfg.model").inputs
    if data_in_use is not None:
        chosen = tuple(name for name, use in zip(("heatmap", "silhouette"), data_in_use) if use)
        if chosen != wanted:
            raise ValueError(f"data_cfg.data_in_use {list(data_in_use)} selects {list(chosen)}, but "
                             f"{model_name} needs {list(wanted)}")
    return wanted


def needs_silhouettes(model_name: str, data_in_use: Sequence[bool] | None) -> bool:
    """Whether the model reads the silhouette column (SkeletonGait++), i.e. its data set must be paired."""
    return "silhouette" in input_columns(model_name, data_in_use)


def embed(
    model: nn.Module,
    x: Tensor | np.ndarray,
    seq_lengths: Sequence[int] | Tensor | None = None,
) -> Tensor:
    """Eval-mode, no-grad inference embeddings ``[n, E, 16]`` (``[k, E, 16]`` for k packed sequences).

    ``x`` is float ``[n, s, C, h, w]`` in [0, 1], on any device (moved to the model's); C = 2 heatmaps
    for SkeletonGait, 2 heatmaps + 1 silhouette for SkeletonGait++. ``seq_lengths`` packs several
    sequences along ``s`` with ``n = 1``, as OpenGait's ``seqL``. The model's train/eval mode is
    restored afterwards.
    """
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise ValueError(f"embed expects a float tensor in [0, 1], got {getattr(x, 'dtype', type(x).__name__)}")
    param = next(model.parameters())
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x.to(device=param.device, dtype=param.dtype), seq_lengths)
    finally:
        model.train(was_training)
    return out.inference
