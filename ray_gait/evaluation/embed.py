"""Test-phase embeddings of whole sequences (plain torch): one sequence per forward, as OpenGait.

The one way sequences are embedded: rank 0's evaluation during training, the Ray Data actors of
`ray-gait test`, and notebooks all go through `SequenceEmbedder`.
"""
from __future__ import annotations

import contextlib
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ray_gait.config import TrainConfig
from ray_gait.data.batches import model_input
from ray_gait.data.frames import FrameSampling, collate_frames
from ray_gait.data.reader import SequenceError
from ray_gait.data.sources import SequenceSource
from ray_gait.data.transforms import build_transform
from ray_gait.heap import release_free_heap
from ray_gait.models.precision import autocast_dtype


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


