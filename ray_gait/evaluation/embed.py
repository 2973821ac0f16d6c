"""Test-phase embeddings of whole sequences (plain torch): one sequence per forward, as OpenGait."""
from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch
from torch import nn

from ray_gait.data.frames import FrameSampling, collate_frames
from ray_gait.training.data import model_input


def embed_sequence(model: nn.Module, arrays: list[np.ndarray], transforms: list, sampling: FrameSampling,
                   device: torch.device, amp_dtype: torch.dtype | None = None) -> np.ndarray:
    """Inference embedding [E, p] float32 of one sequence (its maps, and silhouettes for ++)."""
    batch = collate_frames([arrays], sampling, np.random.default_rng(0))
    x = model_input(batch.inputs, transforms, torch.Generator().manual_seed(0)).to(device)
    lengths = None if batch.seq_lengths is None else [int(v) for v in batch.seq_lengths]
    context = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()
    with torch.no_grad(), context:
        out = model(x, lengths)
    return out.inference[0].float().cpu().numpy()


def load_eval_weights(model: nn.Module, path: str, strict: bool = True) -> dict[str, Any]:
    """Load a ray_gait checkpoint (folder or state.pt) or an OpenGait one into `model`; returns info."""
    import os
    from ray_gait.models import load_weights
    from ray_gait.training.state import STATE_FILE, read_state
    if os.path.isdir(path) or os.path.basename(path) == STATE_FILE:
        saved = read_state(path)
        load_weights(model, saved["model"], strict=strict)
        return {"iteration": int(saved["iteration"]), "format": "ray_gait"}
    load_weights(model, path, strict=strict)
    return {"iteration": None, "format": "opengait"}
