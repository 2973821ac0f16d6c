"""Training batches from a sequence source: P x K identities, frame sampling, transforms.

Plain numpy/torch.  Every batch is a pure function of (seed, rank, step), so a resumed run sees
exactly the batches an uninterrupted one would, and prefetch threads can build the next batches
while the model trains on the current one.
"""
from __future__ import annotations

import json
import logging
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Iterator, Protocol, Sequence

import numpy as np
import torch

from ray_gait.data.frames import FrameSampling, collate_frames
from ray_gait.data.sampler import TripletSampler
from ray_gait.data.transforms import build_transform, fuse_maps_and_silhouettes
from ray_gait.io import fs

log = logging.getLogger(__name__)

MODEL_INPUTS = {"DeepGaitV2": ("heatmap",), "SkeletonGaitPP": ("heatmap", "silhouette")}


def input_columns(model_name: str, data_in_use: Sequence[bool] | None) -> tuple[str, ...]:
    """The data set columns a model reads: `data_in_use` = [heatmap, silhouette] (OpenGait's order)."""
    if model_name not in MODEL_INPUTS:
        raise ValueError(f"model_cfg.model {model_name!r} is not one of {sorted(MODEL_INPUTS)}")
    wanted = MODEL_INPUTS[model_name]
    if data_in_use is not None:
        chosen = tuple(name for name, use in zip(("heatmap", "silhouette"), data_in_use) if use)
        if chosen != wanted:
            raise ValueError(f"data_cfg.data_in_use {list(data_in_use)} selects {list(chosen)}, but "
                             f"{model_name} needs {list(wanted)}")
    return wanted


def needs_silhouettes(model_name: str, data_in_use: Sequence[bool] | None) -> bool:
    """Whether the model reads the silhouette column (SkeletonGait++), i.e. its data set must be paired."""
    return "silhouette" in input_columns(model_name, data_in_use)


def read_partition(path: str) -> dict[str, list[str]]:
    """OpenGait's partition JSON {"TRAIN_SET": [...], "TEST_SET": [...]}, ids as strings."""
    loc = fs.resolve(path)
    if not fs.exists(loc) or fs.is_dir(loc):
        raise FileNotFoundError(f"partition file not found: {path}")
    try:
        data = json.loads(fs.read_bytes(loc).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a partition JSON ({err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a partition is a mapping of TRAIN_SET / TEST_SET to ids")
    for key in ("TRAIN_SET", "TEST_SET"):
        if key not in data:
            raise ValueError(f"{path}: partition needs {key}")
    splits = {k: [str(i) for i in v] for k, v in data.items() if isinstance(v, list)}
    for key, ids in splits.items():
        for ident in ids:
            fs.safe_component(ident, f"{key} id in {path}")
    return splits


def split_ids(partition: dict[str, list[str]], val_ids: int = 0) -> dict[str, list[str]]:
    """TRAIN / VAL / TEST identities: the partition's VAL_SET, else the last `val_ids` of TRAIN_SET (sorted)."""
    train = sorted(set(partition["TRAIN_SET"]))
    if "VAL_SET" in partition:
        val = sorted(set(partition["VAL_SET"]))
        train = [i for i in train if i not in set(val)]
    elif val_ids > 0:
        if val_ids >= len(train):
            raise ValueError(f"data_cfg.val_ids {val_ids} leaves no training identity (TRAIN_SET has {len(train)})")
        train, val = train[:-val_ids], train[-val_ids:]
    else:
        val = []
    return {"TRAIN_SET": train, "VAL_SET": val, "TEST_SET": list(partition["TEST_SET"])}


@dataclass
class SequenceSet:
    """Sequences held in memory (tests, benchmarks, notebooks): the source interface of `SequenceReader`."""

    columns: tuple[str, ...]
    inputs: list[list[np.ndarray]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    keys: list[tuple[str, str, str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    def add(self, row: dict[str, Any]) -> None:
        """Add a decoded data set row (its arrays are kept, not copied)."""
        self.inputs.append([row[c] for c in self.columns])
        self.labels.append(str(row["id"]))
        self.keys.append((str(row["id"]), str(row["type"]), str(row["view"]), str(row["seq"])))

    def arrays(self, i: int) -> list[np.ndarray]:
        """Sequence `i` as aligned arrays [T, ...]."""
        return self.inputs[i]

    def model_arrays(self, collated: list[np.ndarray]) -> list[np.ndarray]:
        """Collated arrays are already what the model input is built from."""
        return collated


class SequenceSource(Protocol):
    """What batches are built from: labels, and the arrays of a sequence when asked (SequenceSet, SequenceReader)."""

    labels: list[str]

    def arrays(self, i: int) -> list[np.ndarray]:
        """Sequence `i` as aligned arrays [T, ...]."""

    def model_arrays(self, collated: list[np.ndarray]) -> list[np.ndarray]:
        """Collated sampled frames -> the arrays the model input is built from."""


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
        from ray_gait.data.reader import SequenceError
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
        from ray_gait.data.reader import SequenceError, require_frames
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
