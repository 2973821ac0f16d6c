"""Frame sampling per sample_type, on short and long sequences (OpenGait's CollateFn rules)."""
from __future__ import annotations

import numpy as np
import pytest

from ray_gait.data.frames import FrameSampling, collate_frames, sample_frame_indices


def _seq(length: int) -> np.ndarray:
    """A sequence [T, 2, 3, 3] whose frame t is filled with t, so outputs reveal the indices."""
    return np.broadcast_to(np.arange(length, dtype=np.int32)[:, None, None, None], (length, 2, 3, 3)).copy()


def _frames(batch_row: np.ndarray) -> np.ndarray:
    return batch_row[:, 0, 0, 0]


FIXED_ORDERED = FrameSampling("fixed_ordered", frames_num_fixed=30, frames_skip_num=4)


def test_fixed_ordered_long_sequence() -> None:
    rng = np.random.default_rng(0)
    starts = set()
    for _ in range(200):
        idx = sample_frame_indices(100, FIXED_ORDERED, rng)
        assert len(idx) == 30 and len(set(idx.tolist())) == 30
        assert np.all(np.diff(idx) > 0) and idx[-1] - idx[0] <= 33  # sorted, inside a 34-frame window
        starts.add(int(idx[0]))
    assert min(starts) <= 4 and max(starts) >= 60  # the window start is uniform over [0, 66]


def test_fixed_ordered_short_sequence_is_repeated() -> None:
    rng = np.random.default_rng(1)
    for _ in range(100):
        idx = sample_frame_indices(10, FIXED_ORDERED, rng)
        assert len(idx) == 30 and idx.min() >= 0 and idx.max() < 10
        # the window covers the sequence repeated 4 times: unwrapping must give increasing positions
        unwrapped = idx + 10 * np.cumsum(np.r_[0, np.diff(idx) <= 0])
        assert np.all(np.diff(unwrapped) > 0) and unwrapped[-1] - unwrapped[0] <= 33
        assert np.bincount(idx, minlength=10).max() <= 4


def test_fixed_unordered_long_and_short() -> None:
    rng = np.random.default_rng(2)
    sampling = FrameSampling("fixed_unordered", frames_num_fixed=10)
    long_idx = sample_frame_indices(50, sampling, rng)
    assert len(set(long_idx.tolist())) == 10
    assert any(np.any(np.diff(sample_frame_indices(50, sampling, rng)) < 0) for _ in range(5))
    short_idx = sample_frame_indices(4, sampling, rng)
    assert len(short_idx) == 10 and set(short_idx.tolist()) <= set(range(4))


def test_fixed_batch_is_stacked() -> None:
    batch = collate_frames([_seq(100), _seq(7)], FIXED_ORDERED, np.random.default_rng(3))
    assert batch.seq_lengths is None and len(batch.inputs) == 1
    assert batch.inputs[0].shape == (2, 30, 2, 3, 3)
    assert _frames(batch.inputs[0][1]).max() < 7


def test_unfixed_ordered_packed() -> None:
    sampling = FrameSampling("unfixed_ordered", frames_num_min=5, frames_num_max=9, frames_skip_num=2)
    batch = collate_frames([_seq(40), _seq(3), _seq(20)], sampling, np.random.default_rng(4))
    lengths = batch.seq_lengths
    assert lengths is not None and lengths.shape == (3,)
    assert np.all((lengths >= 5) & (lengths <= 9))
    assert batch.inputs[0].shape == (1, int(lengths.sum()), 2, 3, 3)
    first = _frames(batch.inputs[0][0, : lengths[0]])
    assert np.all(np.diff(first) > 0)
    assert _frames(batch.inputs[0][0, lengths[0]: lengths[0] + lengths[1]]).max() < 3


def test_all_ordered_keeps_every_frame_in_order() -> None:
    batch = collate_frames([_seq(12), _seq(5)], FrameSampling("all_ordered"), np.random.default_rng(5))
    assert batch.seq_lengths.tolist() == [12, 5]
    assert _frames(batch.inputs[0][0]).tolist() == list(range(12)) + list(range(5))


def test_all_ordered_limit_takes_first_frames() -> None:
    sampling = FrameSampling.from_config({"sample_type": "all_ordered", "frames_all_limit": 8, "batch_size": 4})
    batch = collate_frames([_seq(12), _seq(5)], sampling, np.random.default_rng(6))
    assert batch.seq_lengths.tolist() == [8, 5]
    assert _frames(batch.inputs[0][0, :8]).tolist() == list(range(8))


def test_aligned_inputs_get_the_same_frames() -> None:
    heat = _seq(25)
    sil = np.arange(25, dtype=np.uint8)[:, None, None] * np.ones((25, 4, 3), np.uint8)
    sampling = FrameSampling("fixed_unordered", frames_num_fixed=6)
    batch = collate_frames([(heat, sil), (heat[:9], sil[:9])], sampling, np.random.default_rng(7))
    maps, sils = batch.inputs
    assert maps.shape == (2, 6, 2, 3, 3) and sils.shape == (2, 6, 4, 3)
    np.testing.assert_array_equal(maps[:, :, 0, 0, 0], sils[:, :, 0, 0])


def test_same_rng_same_batch() -> None:
    seqs = [_seq(30), _seq(11)]
    a = collate_frames(seqs, FIXED_ORDERED, np.random.default_rng(8))
    b = collate_frames(seqs, FIXED_ORDERED, np.random.default_rng(8))
    np.testing.assert_array_equal(a.inputs[0], b.inputs[0])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sample_type": "fixed_random"}, "valid"),
        ({"sample_type": "fixed_ordered", "frames_num_fixed": 30}, "frames_skip_num"),
        ({"sample_type": "fixed_unordered"}, "frames_num_fixed"),
        ({"sample_type": "unfixed_unordered", "frames_num_min": 9, "frames_num_max": 5}, "frames_num_max"),
    ],
)
def test_invalid_sampling(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FrameSampling(**kwargs)


def test_invalid_sequences() -> None:
    sampling = FrameSampling("fixed_unordered", frames_num_fixed=3)
    with pytest.raises(ValueError, match="empty"):
        collate_frames([_seq(0)], sampling, np.random.default_rng(0))
    with pytest.raises(ValueError, match="time"):
        collate_frames([(_seq(5), _seq(6))], sampling, np.random.default_rng(0))
