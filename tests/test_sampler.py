"""P x K identity sampler: rank split, determinism, resume, small identities."""
from __future__ import annotations

import itertools
from collections import Counter

import pytest

from ray_gait.data.sampler import TripletSampler, encode_labels

# 6 identities with 5 sequences each, one identity ("z") with only 2.
LABELS = [f"id{i}" for i in range(6) for _ in range(5)] + ["z", "z"]


def _ranks(world: int, **kwargs: object) -> list[TripletSampler]:
    return [TripletSampler(LABELS, [4, 4], rank=r, world_size=world, seed=7, **kwargs) for r in range(world)]


@pytest.mark.parametrize("shuffle", [False, True])
def test_ranks_cover_one_p_by_k_batch(shuffle: bool) -> None:
    samplers = _ranks(2, batch_shuffle=shuffle)
    for step in range(20):
        parts = [s.batch(step) for s in samplers]
        assert [len(p) for p in parts] == [8, 8]
        union = parts[0] + parts[1]
        assert Counter(union) == Counter(samplers[0].global_batch(step))
        ids = Counter(LABELS[i] for i in union)
        assert len(ids) == 4 and set(ids.values()) == {4}


def test_rank_slice_is_strided_as_opengait() -> None:
    samplers = _ranks(2)
    full = samplers[0].global_batch(3)
    assert samplers[0].batch(3) == full[0::2] and samplers[1].batch(3) == full[1::2]


def test_deterministic_and_resumable() -> None:
    a, b = _ranks(1)[0], _ranks(1)[0]
    first = list(itertools.islice(a.batches(), 10))
    assert first == list(itertools.islice(b, 10))
    assert list(itertools.islice(a.batches(start_step=6), 4)) == first[6:]
    other = TripletSampler(LABELS, [4, 4], seed=8)
    assert [other.batch(s) for s in range(10)] != first


def test_shuffle_permutes_the_same_draw() -> None:
    plain, shuffled = _ranks(1)[0], _ranks(1, batch_shuffle=True)[0]
    assert sorted(plain.global_batch(0)) == sorted(shuffled.global_batch(0))
    assert any(plain.global_batch(s) != shuffled.global_batch(s) for s in range(5))


def test_distinct_when_enough_and_replacement_for_small_identity() -> None:
    sampler = TripletSampler(LABELS, [7, 4], seed=0)
    small = [i for i, label in enumerate(LABELS) if label == "z"]
    for step in range(10):
        batch = sampler.global_batch(step)
        by_id: dict[str, list[int]] = {}
        for i in batch:
            by_id.setdefault(LABELS[i], []).append(i)
        assert len(by_id) == 7
        for label, idx in by_id.items():
            assert len(idx) == 4
            if label == "z":
                assert set(idx) <= set(small)  # 4 draws from 2 sequences: with replacement
            else:
                assert len(set(idx)) == 4


def test_fewer_identities_than_p_draws_with_replacement(caplog: pytest.LogCaptureFixture) -> None:
    sampler = TripletSampler(["a", "a", "b", "b"], [3, 2], seed=0)
    assert "with replacement" in caplog.text
    assert len(sampler.global_batch(0)) == 6


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="not divisible"):
        TripletSampler(LABELS, [3, 3], rank=0, world_size=2)
    with pytest.raises(ValueError, match="outside"):
        TripletSampler(LABELS, [4, 4], rank=2, world_size=2)
    with pytest.raises(ValueError, match=r"\[P, K\]"):
        TripletSampler(LABELS, [16])
    with pytest.raises(ValueError, match="at least one"):
        TripletSampler([], [2, 2])


def test_defaults_without_ddp_and_label_encoding() -> None:
    sampler = TripletSampler(LABELS, [2, 2])
    assert (sampler.rank, sampler.world_size) == (0, 1)
    assert sampler.local_batch_size == sampler.global_batch_size == 4
    label_set, ids = encode_labels(["b", "a", "c", "a"])
    assert label_set == ["a", "b", "c"] and ids.tolist() == [1, 0, 2, 0]
