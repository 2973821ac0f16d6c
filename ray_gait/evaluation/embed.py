"""Test-phase embeddings of whole sequences (plain torch): one sequence per forward, as OpenGait.

The one way sequences are embedded: rank 0's evaluation during training, the Ray Data actors of
`ray-gait test`, and notebooks all go through `SequenceEmbedder`.
"""
from __future__ import annotations

import contextlib
import posixpath
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ray_gait.data.frames import FrameSampling, collate_frames
from ray_gait.data.reader import SequenceError
from ray_gait.io import fs
from ray_gait.data.transforms import build_transform
from ray_gait.heap import release_free_heap
from ray_gait.training.config import TrainConfig
from ray_gait.training.data import SequenceSource, model_input
from ray_gait.training.loop import autocast_dtype


TRIM_EVERY = 8
"""Sequences embedded between two returns of the heap's free pages (ray_gait.heap)."""


class SequenceEmbedder:
    """Embeds sequences of a source with the evaluator's frame sampling, transforms and precision."""

    def __init__(self, model: nn.Module, cfg: TrainConfig, device: torch.device) -> None:
        self.model, self.device = model, device
        self.transforms = build_transform(cfg.evaluator_cfg.transform)
        self.sampling = FrameSampling.from_config(cfg.evaluator_cfg.sampler)
        self.amp = autocast_dtype(cfg.evaluator_cfg.enable_float16, device)

    def embed(self, source: SequenceSource, i: int) -> np.ndarray:
        """Inference embedding [E, p] float32 of sequence `i` (eval mode, no gradients)."""
        batch = collate_frames([source.arrays(i)], self.sampling, np.random.default_rng(0))
        x = model_input(source.model_arrays(batch.inputs), self.transforms, torch.Generator().manual_seed(0))
        lengths = None if batch.seq_lengths is None else [int(v) for v in batch.seq_lengths]
        context = torch.autocast(self.device.type, dtype=self.amp) if self.amp else contextlib.nullcontext()
        net = self.model.module if hasattr(self.model, "module") else self.model
        was_training = net.training
        net.eval()
        try:
            with torch.no_grad(), context:
                out = net(x.to(self.device), lengths)
        finally:
            if was_training:
                net.train()
        return out.inference[0].float().cpu().numpy()

    def embed_readable(self, source: SequenceSource,
                       indices: Sequence[int] | None = None) -> tuple[dict[int, np.ndarray], dict[int, str]]:
        """Embeddings of the readable sequences of `indices`, and the reason each other one cannot be read."""
        chosen = range(len(source.labels)) if indices is None else indices
        embedded: dict[int, np.ndarray] = {}
        unreadable: dict[int, str] = {}
        for n, i in enumerate(map(int, chosen), start=1):
            try:
                embedded[i] = self.embed(source, i)
            except SequenceError as exc:
                unreadable[i] = str(exc)
            if n % TRIM_EVERY == 0:
                release_free_heap()
        release_free_heap()
        return embedded, unreadable


def _eval_state(path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model state_dict of a ray_gait checkpoint (folder or state.pt) or an OpenGait one, and what it is."""
    from ray_gait.models import load_opengait_checkpoint
    from ray_gait.training.state import STATE_FILE, read_state
    if fs.is_dir(fs.resolve(path)) or posixpath.basename(path) == STATE_FILE:
        saved = read_state(path)
        return saved["model"], {"iteration": int(saved["iteration"]), "format": "ray_gait"}
    return load_opengait_checkpoint(path)["model"], {"iteration": None, "format": "opengait"}


def load_eval_weights(model: nn.Module, path: str, strict: bool = True) -> dict[str, Any]:
    """Load a ray_gait checkpoint (folder or state.pt) or an OpenGait one into `model`; returns info."""
    from ray_gait.models import load_weights
    state, info = _eval_state(path)
    load_weights(model, state, strict=strict, source=path)
    return info


def check_state_fits(model_cfg: Mapping[str, Any], state: Mapping[str, Any], strict: bool, source: str) -> None:
    """Refuse (CheckpointError naming `source` and the keys) a state_dict that does not fit the configured model,
    without building its tensors (meta device): what a driver checks before any worker loads it."""
    from ray_gait.models import build_model, check_weights
    with torch.device("meta"):
        model = build_model(dict(model_cfg))
    check_weights(model, state, strict=strict, source=source)


def check_eval_weights(model_cfg: Mapping[str, Any], path: str, strict: bool = True) -> dict[str, Any]:
    """`check_state_fits` for the weights `load_eval_weights` would load from `path`; returns info."""
    state, info = _eval_state(path)
    check_state_fits(model_cfg, state, strict, path)
    return info
