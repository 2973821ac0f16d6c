"""The weights a model is evaluated, exported or served with: a ray_gait checkpoint (folder or state.pt) or an
OpenGait one, read, checked against the configured model and loaded."""
from __future__ import annotations

import posixpath
from typing import Any, Mapping

import torch
from torch import nn

from ray_gait.io import fs
from ray_gait.models import build_model, check_weights, export_opengait_checkpoint, load_opengait_checkpoint, load_weights
from ray_gait.models.checkpoint import STATE_FILE, read_state


def read_model_state(path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model state_dict of a ray_gait checkpoint (folder or state.pt) or an OpenGait one, and what it is."""
    if fs.is_dir(fs.resolve(path)) or posixpath.basename(path) == STATE_FILE:
        saved = read_state(path)
        return saved["model"], {"iteration": int(saved["iteration"]), "format": "ray_gait"}
    return load_opengait_checkpoint(path)["model"], {"iteration": None, "format": "opengait"}


def load_eval_weights(model: nn.Module, path: str, strict: bool = True) -> dict[str, Any]:
    """Load a ray_gait checkpoint (folder or state.pt) or an OpenGait one into `model`; returns info."""
    state, info = read_model_state(path)
    load_weights(model, state, strict=strict, source=path)
    return info


def check_state_fits(model_cfg: Mapping[str, Any], state: Mapping[str, Any], strict: bool, source: str) -> None:
    """Refuse (CheckpointError naming `source` and the keys) a state_dict that does not fit the configured model,
    without building its tensors (meta device): what a driver checks before any worker loads it."""
    with torch.device("meta"):
        model = build_model(dict(model_cfg))
    check_weights(model, state, strict=strict, source=source)


def check_eval_weights(model_cfg: Mapping[str, Any], path: str, strict: bool = True) -> dict[str, Any]:
    """`check_state_fits` for the weights `load_eval_weights` would load from `path`; returns info."""
    state, info = read_model_state(path)
    check_state_fits(model_cfg, state, strict, path)
    return info


def export_state_as_opengait(checkpoint: str, out: str) -> dict[str, Any]:
    """Write a ray_gait checkpoint (folder or state.pt) as OpenGait's checkpoint file `out`, after checking its
    weights against the model its own config describes (strict); the state read."""
    saved = read_state(checkpoint)
    model_cfg = (saved.get("config") or {}).get("model_cfg")
    if model_cfg:
        load_weights(build_model(model_cfg), saved["model"], strict=True)
    export_opengait_checkpoint(saved["model"], out, optimizer_state=saved.get("optimizer"),
                               scheduler_state=saved.get("scheduler"), iteration=int(saved["iteration"]))
    return saved
