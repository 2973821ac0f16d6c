"""P x K identity sampling across DDP ranks (OpenGait's ``TripletSampler``).

Each step draws one global batch of P identities x K sequences from a generator seeded with
``(seed, step)``, identically on every rank, and each rank keeps the strided slice
``global[rank::world_size]`` (OpenGait's split). Because a step's batch depends only on
``(seed, step)``, training resumes at any step with ``sampler.batches(start_step=N)``.
"""
from __future__ import annotations

import logging
from collections.abc import Hashable, Iterator, Sequence

import numpy as np
import torch.distributed as dist

__all__ = ["TripletSampler", "encode_labels"]

logger = logging.getLogger(__name__)


def encode_labels(labels: Sequence[Hashable]) -> tuple[list[Hashable], np.ndarray]:
    """Sorted distinct labels and each sequence's class index into them (OpenGait's ``label_set.index``)."""
    label_set = sorted(set(labels))
    index = {label: i for i, label in enumerate(label_set)}
    return label_set, np.asarray([index[label] for label in labels], dtype=np.int64)


def _distributed_rank_and_size() -> tuple[int, int]:
    """(rank, world size) of the default process group, (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _draw(rng: np.random.Generator, population: int, k: int) -> np.ndarray:
    """``k`` distinct positions of ``range(population)``, or ``k`` with replacement if it is smaller."""
    return rng.choice(population, size=k, replace=population < k)


class TripletSampler:
    """Infinite P x K batches of sequence indices, this rank's share of each global batch.

    Args:
        labels: one identity label per sequence index.
        batch_size: ``[P, K]``: identities per batch, sequences per identity.
        batch_shuffle: shuffle the P x K indices of a batch before the rank split (OpenGait's key).
        seed: the shared seed; every rank must use the same one.
        rank: this process's rank; default: from ``torch.distributed`` (0 without it).
        world_size: number of ranks; default: from ``torch.distributed`` (1 without it).
    """

    def __init__(
        self,
        labels: Sequence[Hashable],
        batch_size: Sequence[int],
        *,
        batch_shuffle: bool = False,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        if len(batch_size) != 2 or any(int(v) < 1 for v in batch_size):
            raise ValueError(f"batch_size must be [P, K] with positive P and K, got {list(batch_size)}")
        if len(labels) == 0:
            raise ValueError("TripletSampler needs at least one labelled sequence")
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        default_rank, default_size = _distributed_rank_and_size()
        self.rank = default_rank if rank is None else int(rank)
        self.world_size = default_size if world_size is None else int(world_size)
        self.p, self.k = int(batch_size[0]), int(batch_size[1])
        self.batch_shuffle = bool(batch_shuffle)
        self.seed = int(seed)
        self._check_split()
        self.label_set, class_ids = encode_labels(labels)
        self.indices_by_class = [np.flatnonzero(class_ids == c) for c in range(len(self.label_set))]
        if len(self.label_set) < self.p:
            logger.warning(
                "only %d identities for P=%d: identities are drawn with replacement", len(self.label_set), self.p
            )

    def _check_split(self) -> None:
        """Reject a rank outside the world or a P x K batch that does not split evenly."""
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is outside a world of size {self.world_size}")
        if (self.p * self.k) % self.world_size:
            raise ValueError(
                f"batch_size P x K = {self.p} x {self.k} = {self.p * self.k} is not divisible "
                f"by the world size {self.world_size}"
            )

    @property
    def global_batch_size(self) -> int:
        """P x K, the number of sequences in a step over all ranks."""
        return self.p * self.k

    @property
    def local_batch_size(self) -> int:
        """P x K / world size, the number of sequences this rank gets per step."""
        return self.global_batch_size // self.world_size

    def global_batch(self, step: int) -> list[int]:
        """The P x K sequence indices of ``step`` over all ranks (same on every rank)."""
        if step < 0:
            raise ValueError(f"step must be non-negative, got {step}")
        rng = np.random.default_rng((self.seed, int(step)))
        classes = _draw(rng, len(self.label_set), self.p)
        chosen = [self.indices_by_class[c][_draw(rng, len(self.indices_by_class[c]), self.k)] for c in classes]
        indices = np.concatenate(chosen)
        if self.batch_shuffle:
            indices = indices[rng.permutation(len(indices))]
        return indices.tolist()

    def batch(self, step: int) -> list[int]:
        """This rank's share of ``step``: ``global_batch(step)[rank::world_size]``."""
        return self.global_batch(step)[self.rank :: self.world_size]

    def batches(self, start_step: int = 0) -> Iterator[list[int]]:
        """This rank's batches from ``start_step`` on, forever."""
        step = start_step
        while True:
            yield self.batch(step)
            step += 1

    def __iter__(self) -> Iterator[list[int]]:
        """This rank's batches from step 0, forever."""
        return self.batches(0)
