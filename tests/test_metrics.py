"""Tests of ray_gait.evaluation.metrics: hand-computed cases and OpenGait parity."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ray_gait.evaluation.metrics import (
    cross_view_accuracy,
    distances,
    first_positive_rank,
    off_diagonal_mean,
    rank_metrics,
    topk_accuracy,
)

DATA = Path(__file__).parent / "data" / "metrics"


@pytest.fixture(scope="module")
def feats() -> dict[str, np.ndarray]:
    """OpenGait's probe/gallery embeddings, labels, cameras and views."""
    with np.load(DATA / "feats.npz") as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def expected() -> dict[str, dict]:
    """OpenGait's results on ``feats``, in percent."""
    return json.loads((DATA / "expected.json").read_text())["results"]


def _emb(parts: list[list[float]]) -> np.ndarray:
    """One embedding [1, c, p] from a list of p part vectors of length c."""
    return np.asarray(parts, dtype=np.float32).T[None]


# ---------------------------------------------------------------- distances, by hand

def test_euc_distance_is_mean_over_parts_of_l2() -> None:
    probe = _emb([[0, 0], [3, 4]])
    gallery = np.concatenate([_emb([[3, 4], [0, 0]]), _emb([[0, 0], [3, 4]]),
                              _emb([[0, 0], [0, 1]])])
    d = distances(probe, gallery, "euc")
    assert d.dtype == np.float32 and d.shape == (1, 3)
    np.testing.assert_allclose(d, [[5.0, 0.0, (0 + np.sqrt(9 + 9)) / 2]], atol=1e-6)


def test_cos_distance_is_one_minus_mean_cosine() -> None:
    probe = _emb([[1, 0], [0, 2]])
    gallery = np.concatenate([_emb([[2, 0], [0, -1]]), _emb([[0, 1], [1, 1]]),
                              _emb([[0, 0], [0, 5]])])
    d = distances(probe, gallery, "cos")
    expected = [1 - (1 - 1) / 2, 1 - (0 + 1 / np.sqrt(2)) / 2, 1 - (0 + 1) / 2]
    np.testing.assert_allclose(d, [expected], atol=1e-6)


def test_euc_clamps_negative_rounding_to_zero() -> None:
    rng = np.random.default_rng(0)
    x = (1000 * rng.standard_normal((5, 64, 4))).astype(np.float32)
    d = distances(x, x, "euc")
    assert np.all(np.isfinite(d)) and np.all(d >= 0)
    assert np.all(np.diag(d) < 1e-1 * np.median(d))


def test_chunked_distance_equals_unchunked() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((37, 16, 4)).astype(np.float32)
    y = rng.standard_normal((23, 16, 4)).astype(np.float32)
    for metric in ("euc", "cos"):
        whole = distances(x, y, metric, chunk_size=10_000)
        for chunk in (1, 5, 16):
            np.testing.assert_allclose(distances(x, y, metric, chunk_size=chunk), whole,
                                       rtol=1e-6, atol=1e-6)


def test_distance_accepts_float64_and_tensors() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 8, 2))
    ref = distances(x.astype(np.float32), x.astype(np.float32))
    np.testing.assert_allclose(distances(x, x), ref, atol=1e-5)
    np.testing.assert_allclose(distances(torch.from_numpy(x), torch.from_numpy(x)), ref, atol=1e-5)


@pytest.mark.parametrize("kwargs, match", [
    ({"metric": "l1"}, "metric"),
    ({"chunk_size": 0}, "chunk_size"),
])
def test_distance_rejects_bad_options(kwargs: dict, match: str) -> None:
    x = np.zeros((2, 3, 4), np.float32)
    with pytest.raises(ValueError, match=match):
        distances(x, x, **kwargs)


def test_distance_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"\[n, c, p\]"):
        distances(np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="differ"):
        distances(np.zeros((2, 3, 4)), np.zeros((2, 3, 5)))


def test_empty_sides_give_empty_matrix() -> None:
    d = distances(np.zeros((0, 3, 2)), np.ones((4, 3, 2)))
    assert d.shape == (0, 4)


# ---------------------------------------------------------------- distances, OpenGait parity

@pytest.mark.parametrize("metric", ["euc", "cos"])
def test_distance_matches_opengait(feats: dict, metric: str) -> None:
    ref = np.load(DATA / f"dist_{metric}.npy")
    ours = distances(feats["probe_feats"], feats["gallery_feats"], metric, chunk_size=13)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- rank metrics, by hand

HAND_DIST = np.array([[0.10, 0.20, 0.30, 0.40],    # probe a: matches at ranks 2 and 4
                      [0.05, 0.10, 0.20, 0.30],    # probe b: matches at ranks 1 and 3
                      [0.10, 0.20, 0.30, 0.40]])   # probe z: no match in the gallery
HAND_PROBES = np.array(["a", "b", "z"])
HAND_GALLERY = np.array(["b", "a", "b", "a"])


def test_rank_metrics_by_hand() -> None:
    res = rank_metrics(HAND_DIST, HAND_PROBES, HAND_GALLERY, ranks=(1, 2, 3))
    ap = [(1 / 2 + 2 / 4) / 2, (1 / 1 + 2 / 3) / 2]
    inp = [2 / 4, 2 / 3]
    assert res == pytest.approx({"rank1": 50.0, "rank2": 100.0, "rank3": 100.0,
                                 "mAP": 100 * np.mean(ap), "mINP": 100 * np.mean(inp)})


def test_rank_metrics_removes_same_id_same_camera() -> None:
    res = rank_metrics(HAND_DIST, HAND_PROBES, HAND_GALLERY, ranks=(1, 2),
                       probe_cams=["c1", "c1", "c1"], gallery_cams=["c1", "c2", "c1", "c1"])
    # a keeps only gallery 1 (a, c2) at rank 2; b loses both matches and is skipped
    assert res == pytest.approx({"rank1": 0.0, "rank2": 100.0, "mAP": 50.0, "mINP": 50.0})


def test_rank_metrics_without_any_match_raises() -> None:
    with pytest.raises(ValueError, match="gallery"):
        rank_metrics(HAND_DIST[2:], ["z"], HAND_GALLERY)


def test_rank_beyond_gallery_size_counts_any_match() -> None:
    res = rank_metrics(HAND_DIST, HAND_PROBES, HAND_GALLERY, ranks=(50,))
    assert res["rank50"] == 100.0


def test_ties_are_broken_by_gallery_index() -> None:
    tie = np.array([[0.1, 0.1, 0.1]])
    assert rank_metrics(tie, ["a"], ["b", "a", "a"], (1,))["rank1"] == 0.0
    assert rank_metrics(tie, ["a"], ["a", "b", "a"], (1,))["rank1"] == 100.0
    assert rank_metrics(tie, ["a"], ["a", "b", "a"], (1,))["mAP"] == pytest.approx(
        100 * (1 + 2 / 3) / 2)
    assert topk_accuracy(tie, ["a"], ["b", "a", "a"], (1, 2)) == {"rank1": 0.0, "rank2": 100.0}


def test_ties_between_same_identity_do_not_matter(feats: dict, expected: dict) -> None:
    ref = np.load(DATA / "dist_euc.npy")
    assert np.array_equal(ref[:, 0], ref[:, 1])
    order = np.r_[1, 0, 2:ref.shape[1]]
    res = rank_metrics(ref[:, order], feats["probe_labels"], feats["gallery_labels"][order])
    assert res["mAP"] == pytest.approx(expected["gait3d/euc"]["mAP"], abs=1e-6)


def test_cross_view_accuracy_by_hand() -> None:
    res = cross_view_accuracy(HAND_DIST, HAND_PROBES, HAND_GALLERY, ["v0", "v0", "v0"],
                              ["v0", "v1", "v0", "v0"], ranks=(1, 2))
    # every probe counts for accuracy; only a (rank 2 match) counts for mAP
    assert res == pytest.approx({"rank1": 0.0, "rank2": 100 / 3, "mAP": 50.0})


def test_cross_view_accuracy_needs_a_gallery_per_probe() -> None:
    with pytest.raises(ValueError, match="no gallery"):
        cross_view_accuracy(np.array([[0.1]]), ["a"], ["a"], ["v0"], ["v0"])


def test_topk_accuracy_counts_probes_without_match_as_misses() -> None:
    res = topk_accuracy(HAND_DIST, HAND_PROBES, HAND_GALLERY, ranks=(1, 2, 20))
    assert res == pytest.approx({"rank1": 100 / 3, "rank2": 200 / 3, "rank20": 200 / 3})


def test_first_positive_rank_equals_stable_sort() -> None:
    rng = np.random.default_rng(3)
    dist = rng.integers(0, 6, size=(40, 30)).astype(np.float32)
    positive = rng.random((40, 30)) < 0.15
    ranks = first_positive_rank(dist, positive)
    for i in range(dist.shape[0]):
        order = np.argsort(dist[i], kind="stable")
        hits = np.flatnonzero(positive[i][order])
        assert ranks[i] == (hits[0] if hits.size else np.iinfo(np.int64).max)


def test_rank_metrics_equal_naive_stable_sort_with_ties() -> None:
    rng = np.random.default_rng(4)
    dist = rng.integers(0, 5, size=(30, 25)).astype(np.float64)
    p_lab, g_lab = rng.integers(0, 8, 30), rng.integers(0, 8, 25)
    ap, first = [], []
    for i in range(30):
        match = (g_lab[np.argsort(dist[i], kind="stable")] == p_lab[i])
        if match.any():
            pos = np.flatnonzero(match)
            first.append(pos[0])
            ap.append(np.mean(np.arange(1, pos.size + 1) / (pos + 1)))
    res = rank_metrics(dist, p_lab, g_lab, ranks=(1, 3))
    assert res["rank1"] == pytest.approx(100 * np.mean(np.array(first) < 1))
    assert res["rank3"] == pytest.approx(100 * np.mean(np.array(first) < 3))
    assert res["mAP"] == pytest.approx(100 * np.mean(ap))


def test_rank_metrics_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="ranks"):
        rank_metrics(HAND_DIST, HAND_PROBES, HAND_GALLERY, ranks=(0,))
    with pytest.raises(ValueError, match="labels"):
        rank_metrics(HAND_DIST, HAND_PROBES[:2], HAND_GALLERY)
    with pytest.raises(ValueError, match="both"):
        rank_metrics(HAND_DIST, HAND_PROBES, HAND_GALLERY, probe_cams=["c"] * 3)
    with pytest.raises(ValueError, match="NaN"):
        rank_metrics(np.full((3, 4), np.nan), HAND_PROBES, HAND_GALLERY)


def test_off_diagonal_mean_by_hand() -> None:
    m = np.array([[100.0, 50.0, 20.0], [50.0, 0.0, np.nan], [10.0, 30.0, 90.0]])
    np.testing.assert_allclose(off_diagonal_mean(m), [35.0, 50.0, 20.0])
    np.testing.assert_allclose(off_diagonal_mean(m, exclude_diagonal=False),
                               [170 / 3, 25.0, 130 / 3])
    with pytest.raises(ValueError, match="two views"):
        off_diagonal_mean(np.ones((1, 1)))


# ---------------------------------------------------------------- rank metrics, OpenGait parity

def _check(ours: dict, theirs: dict, keys: tuple[str, ...]) -> None:
    """Compare our metric keys with OpenGait's names (``Rank-1``, ...)."""
    names = {"rank1": "Rank-1", "rank5": "Rank-5", "rank10": "Rank-10", "mAP": "mAP",
             "mINP": "mINP"}
    for k in keys:
        assert ours[k] == pytest.approx(theirs[names[k]], abs=1e-4), k


@pytest.mark.parametrize("metric", ["euc", "cos"])
@pytest.mark.parametrize("source", ["opengait", "ours"])
def test_rank_metrics_match_opengait(feats: dict, expected: dict, metric: str, source: str) -> None:
    dist = (np.load(DATA / f"dist_{metric}.npy") if source == "opengait"
            else distances(feats["probe_feats"], feats["gallery_feats"], metric))
    p, g = feats["probe_labels"], feats["gallery_labels"]
    _check(rank_metrics(dist, p, g), expected[f"gait3d/{metric}"],
           ("rank1", "rank5", "rank10", "mAP", "mINP"))
    _check(rank_metrics(dist, p, g, probe_cams=feats["probe_cams"],
                        gallery_cams=feats["gallery_cams"]),
           expected[f"many/{metric}"], ("rank1", "rank5", "rank10", "mAP", "mINP"))
    _check(cross_view_accuracy(dist, p, g, feats["probe_views"], feats["gallery_views"],
                               ranks=(1, 5, 10)),
           expected[f"acc/{metric}"], ("rank1", "rank5", "rank10", "mAP"))
