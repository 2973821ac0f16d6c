"""Frame sampling and batching of sequences (OpenGait's ``CollateFn`` behaviour).

``sample_type`` is ``<how many>_<order>``:

- ``fixed_*``: ``frames_num_fixed`` frames per sequence; the batch is stacked to ``[n, s, ...]``.
- ``unfixed_*``: a number of frames drawn per sequence in ``[frames_num_min, frames_num_max]``;
  the batch is packed along time to ``[1, sum(s_i), ...]`` with ``seq_lengths``.
- ``all_*``: every frame (the first ``frames_all_limit`` when that is set), packed like ``unfixed``.
- ``*_ordered`` (fixed / unfixed): a random window of ``frames + frames_skip_num`` consecutive
  frames, of which ``frames`` are kept in temporal order; a sequence shorter than the window is
  repeated end to end first. ``*_unordered``: frames drawn at random, unsorted, without
  replacement (with replacement when the sequence is too short).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

__all__ = ["FrameBatch", "FrameSampling", "SAMPLE_TYPES", "collate_frames", "sample_frame_indices"]

SAMPLE_TYPES = (
    "fixed_ordered",
    "fixed_unordered",
    "unfixed_ordered",
    "unfixed_unordered",
    "all_ordered",
    "all_unordered",
)

_KEYS = ("frames_num_fixed", "frames_num_min", "frames_num_max", "frames_skip_num", "frames_all_limit")


def _require(value: int | None, name: str, sample_type: str, minimum: int) -> int:
    """``value`` as an int >= ``minimum``, or ValueError naming the missing or bad key."""
    if value is None:
        raise ValueError(f"sample_type {sample_type!r} needs '{name}'")
    if int(value) != value or int(value) < minimum:
        raise ValueError(f"'{name}' must be an integer >= {minimum}, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class FrameSampling:
    """How frames are drawn from each sequence (the frame keys of an OpenGait ``sampler`` section)."""

    sample_type: str
    frames_num_fixed: int | None = None
    frames_num_min: int | None = None
    frames_num_max: int | None = None
    frames_skip_num: int | None = None
    frames_all_limit: int = -1

    def __post_init__(self) -> None:
        if self.sample_type not in SAMPLE_TYPES:
            raise ValueError(f"unknown sample_type {self.sample_type!r}; valid: {list(SAMPLE_TYPES)}")
        if self.mode == "fixed":
            _require(self.frames_num_fixed, "frames_num_fixed", self.sample_type, 1)
        if self.mode == "unfixed":
            low = _require(self.frames_num_min, "frames_num_min", self.sample_type, 1)
            if _require(self.frames_num_max, "frames_num_max", self.sample_type, 1) < low:
                raise ValueError(f"frames_num_max {self.frames_num_max} < frames_num_min {low}")
        if self.mode != "all" and self.ordered:
            _require(self.frames_skip_num, "frames_skip_num", self.sample_type, 0)
        if self.frames_all_limit != -1:
            _require(self.frames_all_limit, "frames_all_limit", self.sample_type, 1)

    @classmethod
    def from_config(cls, sampler_cfg: Mapping[str, Any]) -> FrameSampling:
        """Build from a ``trainer_cfg.sampler`` / ``evaluator_cfg.sampler`` mapping (other keys ignored)."""
        if "sample_type" not in sampler_cfg:
            raise ValueError("sampler config needs 'sample_type'")
        kwargs = {k: sampler_cfg[k] for k in _KEYS if sampler_cfg.get(k) is not None}
        return cls(sample_type=sampler_cfg["sample_type"], **kwargs)

    @property
    def mode(self) -> str:
        """``fixed``, ``unfixed`` or ``all``."""
        return self.sample_type.split("_")[0]

    @property
    def ordered(self) -> bool:
        """Whether frames keep their temporal order."""
        return self.sample_type.endswith("_ordered")

    @property
    def packed(self) -> bool:
        """Whether a batch is packed along time with ``seq_lengths`` (``unfixed`` and ``all``)."""
        return self.mode != "fixed"


class FrameBatch(NamedTuple):
    """A collated batch: one array per input, and frames per sequence when packed."""

    inputs: list[np.ndarray]
    seq_lengths: np.ndarray | None


def _ordered_indices(seq_len: int, frames: int, skip: int, rng: np.random.Generator) -> np.ndarray:
    """``frames`` sorted frames from a random window of ``frames + skip`` (sequence repeated if short)."""
    window = frames + skip
    length = seq_len * math.ceil(window / seq_len) if seq_len < window else seq_len
    start = int(rng.integers(0, length - window + 1))
    picks = np.sort(rng.choice(window, size=frames, replace=False)) + start
    return picks % seq_len


def _frames_to_draw(sampling: FrameSampling, rng: np.random.Generator) -> int:
    """Frames to take from one sequence: fixed, or drawn in ``[frames_num_min, frames_num_max]``."""
    if sampling.mode == "fixed":
        return int(sampling.frames_num_fixed or 0)
    return int(rng.integers(sampling.frames_num_min or 0, (sampling.frames_num_max or 0) + 1))


def sample_frame_indices(seq_len: int, sampling: FrameSampling, rng: np.random.Generator) -> np.ndarray:
    """Frame indices ``[s]`` to take from a sequence of ``seq_len`` frames."""
    if seq_len < 1:
        raise ValueError("cannot sample frames from an empty sequence")
    if sampling.mode == "all":
        limit = sampling.frames_all_limit
        return np.arange(min(seq_len, limit) if limit > -1 else seq_len)
    frames = _frames_to_draw(sampling, rng)
    if sampling.ordered:
        return _ordered_indices(seq_len, frames, sampling.frames_skip_num or 0, rng)
    return rng.choice(seq_len, size=frames, replace=seq_len < frames)


def _as_inputs(item: np.ndarray | Sequence[np.ndarray], n_inputs: int | None) -> list[np.ndarray]:
    """One sequence as a list of aligned arrays ``[T, ...]``, checked for equal ``T``."""
    arrays = [np.asarray(item)] if isinstance(item, np.ndarray) else [np.asarray(a) for a in item]
    if n_inputs is not None and len(arrays) != n_inputs:
        raise ValueError(f"every sequence needs {n_inputs} input arrays, got {len(arrays)}")
    lengths = {a.shape[0] if a.ndim else -1 for a in arrays}
    if len(lengths) != 1 or -1 in lengths:
        raise ValueError(f"the input arrays of a sequence must share their first (time) axis, got {sorted(lengths)}")
    return arrays


def _take(arrays: list[np.ndarray], indices: np.ndarray) -> list[np.ndarray]:
    """The frames ``indices`` of each aligned array."""
    return [a[indices] for a in arrays]


def collate_frames(
    sequences: Sequence[np.ndarray | Sequence[np.ndarray]],
    sampling: FrameSampling,
    rng: np.random.Generator,
) -> FrameBatch:
    """Sample frames from each sequence and batch them.

    Each sequence is an array ``[T, ...]`` or a list of aligned arrays ``[T, ...]`` (e.g. heatmap
    ``[T, 2, 64, 64]`` and silhouette ``[T, 64, 44]``), which get the same frame indices.
    Returns per input ``[n, s, ...]`` (fixed; ``seq_lengths`` None) or ``[1, sum(s_i), ...]`` with
    ``seq_lengths`` ``[n]`` (unfixed, all).
    """
    if len(sequences) == 0:
        raise ValueError("cannot collate an empty list of sequences")
    first = _as_inputs(sequences[0], None)
    per_sequence = [first] + [_as_inputs(seq, len(first)) for seq in sequences[1:]]
    picked = [_take(arrays, sample_frame_indices(arrays[0].shape[0], sampling, rng)) for arrays in per_sequence]
    columns = list(zip(*picked))
    if not sampling.packed:
        return FrameBatch([np.stack(col) for col in columns], None)
    lengths = np.asarray([frames[0].shape[0] for frames in picked], dtype=np.int64)
    return FrameBatch([np.concatenate(col)[np.newaxis] for col in columns], lengths)
