"""Training batches from a sequence source: P x K identities, frame sampling, transforms.

Plain numpy/torch.  Every batch is a pure function of (seed, rank, step), so a resumed run sees
exactly the batches an uninterrupted one would, and prefetch threads can build the next batches
while the model trains on the current one.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Iterator

import numpy as np
import torch

from ray_gait.data.frames import FrameSampling, collate_frames
from ray_gait.data.reader import SequenceError, require_frames
from ray_gait.data.sampler import TripletSampler
from ray_gait.data.sources import SequenceSource
from ray_gait.data.transforms import build_transform, fuse_maps_and_silhouettes

log = logging.getLogger(__name__)


def model_input(arrays: list[np.ndarray | torch.Tensor], transforms: list, generator: torch.Generator) -> torch.Tensor:
    """Model input float [n, s, C, 64, 44] from sampled uint8 inputs (maps, and silhouettes for ++)."""
    if len(arrays) == 2:
        fused = fuse_maps_and_silhouettes(torch.as_tensor(arrays[0]), torch.as_tensor(arrays[1]))
        return transforms[0](fused, generator).float()
    return transforms[0](torch.as_tensor(arrays[0]), generator).float()


class BatchMaker:
    """This rank's share of training batch `step`: (input, labels, seq_lengths).

    A sequence that cannot be read (`SequenceError`) or holds 0 frames is reported once and replaced, in every batch
    that draws it, by the next readable sequence of the same identity; only an identity with no
    readable sequence left stops the run.
    """

    def __init__(self, source: SequenceSource, sampler_cfg: dict, transform_cfg: Any, seed: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:
        self.source = source
        self.seed, self.rank = seed, rank
        self.sampler = TripletSampler(source.labels, sampler_cfg["batch_size"],
                                      batch_shuffle=bool(sampler_cfg.get("batch_shuffle", False)),
                                      seed=seed, rank=rank, world_size=world_size)
        self.sampling = FrameSampling.from_config(sampler_cfg)
        self.transforms = build_transform(transform_cfg)
        self.class_of = {label: i for i, label in enumerate(self.sampler.label_set)}
        self.bad: dict[int, str] = {}

    @property
    def num_classes(self) -> int:
        """Identities in the training split."""
        return len(self.sampler.label_set)

    def _arrays(self, index: int) -> list[np.ndarray]:
        """The arrays of `index`, or of the next readable sequence of its identity."""
        same = self.sampler.indices_by_class[self.class_of[self.source.labels[index]]].tolist()
        start = same.index(index)
        for candidate in same[start:] + same[:start]:
            if candidate in self.bad:
                continue
            try:
                return self._checked(candidate)
            except SequenceError as exc:
                self.bad[candidate] = str(exc)
                log.warning("skipping a sequence that cannot be read: %s", exc)
        raise ValueError(f"no readable sequence of identity {self.source.labels[index]} left: "
                         + "; ".join(self.bad[i] for i in same))

    def _checked(self, index: int) -> list[np.ndarray]:
        """The arrays of sequence `index`; SequenceError when it cannot be read or has 0 frames."""
        arrays = self.source.arrays(index)
        try:
            require_frames(arrays)
        except ValueError as exc:
            raise SequenceError(f"sequence {self._name(index)}: {exc}") from None
        return arrays

    def _name(self, index: int) -> str:
        """The key of sequence `index` when the source has keys, else its identity."""
        keys = getattr(self.source, "keys", None)
        return "/".join(keys[index]) if keys else str(self.source.labels[index])

    def make(self, step: int) -> tuple[torch.Tensor, torch.Tensor, list[int] | None]:
        """The batch of `step` (deterministic in seed, rank and step)."""
        rng = np.random.default_rng([self.seed, self.rank, step])
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        indices = self.sampler.batch(step)
        batch = collate_frames([self._arrays(i) for i in indices], self.sampling, rng)
        x = model_input(self.source.model_arrays(batch.inputs), self.transforms, generator)
        labels = torch.tensor([self.class_of[self.source.labels[i]] for i in indices], dtype=torch.long)
        lengths = None if batch.seq_lengths is None else [int(v) for v in batch.seq_lengths]
        return x, labels, lengths


MIN_CUDA_INPUT_THREADS = 2
"""On an H200 one thread fed the seed-width step only 1.5-1.8x faster than it consumed (goal 2x);
8 threads 5.6-6.8x (benchmarks/README.md, "First GPU figures")."""


def input_threads(num_workers: int, device_type: str, reserved_cpus: float) -> int:
    """Batch-building threads of one training worker: `data_cfg.num_workers` on CPU; on CUDA at least
    2 and at least the CPUs Ray reserves for the worker less one (the step's own thread)."""
    if num_workers < 1:
        raise ValueError(f"data_cfg.num_workers must be >= 1, got {num_workers}")
    if device_type != "cuda":
        return num_workers
    return max(num_workers, MIN_CUDA_INPUT_THREADS, int(reserved_cpus) - 1)


def prefetch(maker: BatchMaker, start: int, stop: int, depth: int = 2,
             workers: int = 1) -> Iterator[tuple[int, Any, float]]:
    """Yield (step, batch, seconds waited) for steps start..stop-1, built ahead by `workers` threads.

    Each thread builds whole batches (their numpy and torch work releases the GIL: 2 threads give
    1.86x one on 2 cores), at most `depth + workers - 1` steps ahead of the consumer; batches come
    out in step order whatever the thread that built them.
    """
    if workers < 1:
        raise ValueError(f"data_cfg.num_workers must be >= 1, got {workers}")
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="batch-prefetch")
    ahead = depth + workers - 1
    pending: deque[Future] = deque()
    submitted = start
    try:
        for step in range(start, stop):
            while submitted < stop and len(pending) < ahead:
                pending.append(pool.submit(maker.make, submitted))
                submitted += 1
            began = time.perf_counter()
            batch = pending.popleft().result()
            yield step, batch, time.perf_counter() - began
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
