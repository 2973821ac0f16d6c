"""Tests of ray_gait.evaluation.protocols: hand-computed cases and OpenGait parity."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ray_gait.evaluation.metrics import distances
from ray_gait.evaluation.protocols import (
    PROTOCOLS,
    GREW_submission,
    evaluate_CCPG,
    evaluate_Gait3D,
    evaluate_GREW,
    evaluate_indoor_dataset,
    evaluate_protocol,
    evaluate_real_scene,
    evaluate_SUSTech1K,
    get_protocol,
    matrix_distance_fn,
    nearest_gallery,
)

DATA = Path(__file__).parent / "data" / "metrics"


def _set(rows: list[tuple[str, str, str, float]]) -> tuple[np.ndarray, ...]:
    """Test set from (label, type, view, value) rows; embeddings are 1-D: [N, 1, 1]."""
    labels, types, views, values = zip(*rows)
    emb = np.asarray(values, dtype=np.float32).reshape(-1, 1, 1)
    return emb, np.array(labels), np.array(types), np.array(views)


# Two identities, two views. Gallery "nm-01": A at 0 / 10, B at 1 / 11 (views 000 / 090).
# NM probes: view 000 -> cells (000,000) 2/2, (000,090) 1/2;
#            view 090 -> cells (090,000) 1/2, (090,090) 1/2.
# BG probes: view 000 -> cells 2/2, 1/2; view 090 (A only, at 10.4) -> 0/1, 1/1.
GRID_ROWS = [
    ("A", "nm-01", "000", 0.0), ("A", "nm-01", "090", 10.0),
    ("B", "nm-01", "000", 1.0), ("B", "nm-01", "090", 11.0),
    ("A", "nm-05", "000", 0.2), ("B", "nm-05", "000", 0.9),
    ("A", "nm-05", "090", 10.9), ("B", "nm-05", "090", 11.2),
    ("A", "bg-01", "000", 0.4), ("B", "bg-01", "000", 0.6), ("A", "bg-01", "090", 10.4),
]
PROTOCOL = {"gallery": ["nm-01"], "probes": {"NM": ["nm-05"], "BG": ["bg-01"]},
            "views": ["000", "090"], "exclude_identical_view": True, "note": "ignored"}


def test_evaluate_protocol_by_hand() -> None:
    out = evaluate_protocol(*_set(GRID_ROWS), protocol=PROTOCOL, ranks=(1,))
    assert out["results"] == {"NM": {"rank1": 50.0}, "BG": {"rank1": 25.0}}
    assert out["overall"] == {"rank1": 37.5}
    nm = out["view_matrices"]["NM"]
    assert nm["probe_views"] == nm["gallery_views"] == ["000", "090"]
    assert nm["rank1"] == [[100.0, 50.0], [50.0, 50.0]]
    assert nm["exclude_identical_view"] is True
    assert out["view_matrices"]["BG"]["rank1"] == [[100.0, 50.0], [0.0, 100.0]]
    json.dumps(out)


def test_evaluate_protocol_including_identical_views() -> None:
    spec = dict(PROTOCOL, exclude_identical_view=False)
    out = evaluate_protocol(*_set(GRID_ROWS), protocol=spec, ranks=(1, 2))
    assert out["results"] == {"NM": {"rank1": 62.5, "rank2": 100.0},
                              "BG": {"rank1": 62.5, "rank2": 100.0}}


def test_evaluate_protocol_from_file_and_distance_fn(tmp_path: Path) -> None:
    emb, labels, types, views = _set(GRID_ROWS)
    path = tmp_path / "protocol.json"
    path.write_text(json.dumps({k: v for k, v in PROTOCOL.items() if k != "views"}))
    dist_fn = matrix_distance_fn(distances(emb, emb))
    out = evaluate_protocol(dist_fn, labels, types, views, protocol=path, ranks=(1,))
    assert out["results"] == {"NM": {"rank1": 50.0}, "BG": {"rank1": 25.0}}


def test_evaluate_protocol_skips_empty_conditions(caplog: pytest.LogCaptureFixture) -> None:
    spec = dict(PROTOCOL, probes={"NM": ["nm-05"], "CL": ["cl-01"]})
    out = evaluate_protocol(*_set(GRID_ROWS), protocol=spec, ranks=(1,))
    assert list(out["results"]) == ["NM"]
    assert "CL" in caplog.text


@pytest.mark.parametrize("spec, match", [
    ({"probes": {"NM": ["nm-05"]}}, "gallery"),
    ({"gallery": ["nm-01"], "probes": ["nm-05"]}, "probes"),
    ({"gallery": ["nm-01"], "probes": {"NM": ["xx"]}}, "no condition"),
])
def test_evaluate_protocol_rejects_bad_protocols(spec: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        evaluate_protocol(*_set(GRID_ROWS), protocol=spec)


def test_casia_b_single_view_gallery_by_hand() -> None:
    out = evaluate_indoor_dataset(*_set(GRID_ROWS), dataset="CASIA-B")
    assert out["results"] == {"NM": {"rank1": 50.0}, "BG": {"rank1": 25.0}}
    assert out["overall"] == {"rank1": 37.5}
    assert out["view_matrices"]["NM"]["rank1"] == [[100.0, 50.0], [50.0, 50.0]]


def test_casia_b_cross_view_gallery_by_hand() -> None:
    rows = [("A", "nm-02", "000", 0.0), ("A", "nm-02", "090", 10.0),
            ("B", "nm-02", "000", 1.0), ("B", "nm-02", "090", 11.0),
            ("A", "nm-01", "000", 0.2), ("B", "nm-01", "090", 9.0)]
    out = evaluate_indoor_dataset(*_set(rows), dataset="CASIA-B", cross_view_gallery=True)
    # A@000 (0.2) vs {A@090 10, B@000 1, B@090 11}: B@000 first, A second -> miss, AP 1/2.
    # B@090 (9.0) vs {A@000 0, A@090 10, B@000 1}: A@090 first, B@000 second -> miss, AP 1/2.
    assert out["results"] == {"NM": {"rank1": 0.0, "mAP": 50.0}}
    assert out["per_view"]["NM"] == {"views": ["000", "090"], "rank1": [0.0, 0.0],
                                     "mAP": [50.0, 50.0]}


def test_sustech1k_conditions_by_substring_and_overall() -> None:
    rows = [(lab, "00-nm" if t == "nm-01" else {"nm-05": "01-nm", "bg-01": "02-bg"}[t], v, x)
            for lab, t, v, x in GRID_ROWS]
    out = evaluate_SUSTech1K(*_set(rows))
    assert list(out["results"]) == ["Normal", "Bag", "Overall"]
    assert out["results"]["Normal"]["rank1"] == 50.0
    assert out["results"]["Bag"]["rank1"] == 25.0
    assert list(out["results"]["Normal"]) == ["rank1", "rank2", "rank3", "rank4", "rank5"]
    assert out["results"]["Normal"]["rank2"] == 100.0
    # Overall pools the 01/02 probes: view 000 -> (000,090) 2/4; view 090 -> (090,000) 1/3.
    assert out["results"]["Overall"]["rank1"] == pytest.approx((50.0 + 33.33) / 2)
    assert out["overall"] == out["results"]["Overall"]


def test_ccpg_by_hand() -> None:
    rows = [("A", "U1_D1", "01_x", 0.0), ("A", "U1_D1", "02_y", 10.0),
            ("B", "U1_D1", "01_x", 1.0), ("B", "U1_D1", "02_y", 11.0),
            ("A", "U0_D0", "01_z", 0.2), ("B", "U0_D0", "01_z", 0.9),
            ("A", "U0_D0", "02_z", 10.9), ("B", "U0_D0", "02_z", 11.2)]
    out = evaluate_CCPG(*_set(rows))
    assert list(out["results"]) == ["CL"]
    cl = out["results"]["CL"]
    assert cl["rank1"] == 50.0 and cl["rank1_include_identical_view"] == 62.5
    assert out["view_matrices"]["CL"]["rank1"] == [[100.0, 50.0], [50.0, 50.0]]
    # re-ID: same-id same-view gallery removed. A@01 (0.2) -> [B 1, A 10, B 11]: AP 1/2;
    # B@01 (0.9) -> [A 0, A 10, B 11]: AP 1/3; A@02 (10.9) -> [B 11, B 1, A 0]: AP 1/3;
    # B@02 (11.2) -> [A 10, B 1, A 0]: AP 1/2. All miss at rank 1, all hit at rank 5.
    assert cl["reid_rank1"] == 0.0 and cl["reid_rank5"] == 100.0
    assert cl["mAP"] == pytest.approx(100 * 5 / 12) and cl["mINP"] == pytest.approx(100 * 5 / 12)


def test_gait3d_by_hand(tmp_path: Path) -> None:
    rows = [("A", "cam1", "s0", 0.0), ("A", "cam2", "s0", 5.0), ("B", "cam1", "s0", 1.0),
            ("A", "cam3", "s1", 0.9), ("B", "cam3", "s1", 4.0), ("C", "cam3", "s1", 2.0)]
    probe_set = ["A-cam3-s1", "B-cam3-s1", "C-cam3-s1", "Z-cam9-s9"]
    out = evaluate_Gait3D(*_set(rows), probe_set=probe_set)
    # A (0.9) -> [B 1, A 0, A 5]: ranks 2, 3; B (4.0) -> [A 5, B 1, A 0]: rank 2; C skipped.
    ap_a, ap_b = (1 / 2 + 2 / 3) / 2, 1 / 2
    assert out["results"]["Gait3D"] == pytest.approx({
        "rank1": 0.0, "rank5": 100.0, "rank10": 100.0, "mAP": 100 * (ap_a + ap_b) / 2,
        "mINP": 100 * (2 / 3 + 1 / 2) / 2})
    path = tmp_path / "Gait3D.json"
    path.write_text(json.dumps({"PROBE_SET": probe_set, "TRAIN_SET": []}))
    assert evaluate_Gait3D(*_set(rows), probe_set=path) == out
    with pytest.raises(ValueError, match="probe_set"):
        evaluate_Gait3D(*_set(rows))


def test_real_scene_by_hand() -> None:
    rows = [("A", "01", "v", 0.0), ("B", "01", "v", 1.0), ("C", "01", "v", 2.0),
            ("A", "02", "v", 0.1), ("B", "02", "v", 1.9), ("D", "02", "v", 3.0)]
    out = evaluate_real_scene(*_set(rows), dataset="GREW")
    expected = {"rank1": 33.33, "rank5": 66.67, "rank10": 66.67, "rank20": 66.67}
    assert out["results"] == {"GREW": expected}
    assert evaluate_GREW(*_set(rows))["results"] == {"GREW": expected}
    with pytest.raises(ValueError, match="not supported"):
        evaluate_real_scene(*_set(rows), dataset="Nowhere")


def test_grew_submission_by_hand(tmp_path: Path) -> None:
    rows = [("00007", "01", "a", 0.0), ("00003", "02", "b", 1.0), ("00012", "01", "c", 2.0),
            ("probe", "03", "vid1", 1.8), ("probe", "03", "vid2", -1.0)]
    out = GREW_submission(*_set(rows), output_dir=tmp_path, num_rank=3)
    text = Path(out["submission"]).read_text().splitlines()
    assert Path(out["submission"]).parent == tmp_path / "GREW_result"
    assert text == ["videoId,rank1,rank2,rank3", "vid1,12,3,7", "vid2,7,3,12"]
    with pytest.raises(ValueError, match="gallery"):
        GREW_submission(*_set(rows), output_dir=tmp_path)


def test_nearest_gallery_breaks_ties_by_index() -> None:
    d = np.array([[0.5, 0.1, 0.1, 0.0], [1.0, 1.0, 1.0, 1.0]])
    np.testing.assert_array_equal(nearest_gallery(d, 3), [[3, 1, 2], [0, 1, 2]])


def test_registry() -> None:
    for name in ("evaluate_Gait3D", "evaluate_CCPG", "evaluate_indoor_dataset",
                 "evaluate_real_scene", "evaluate_GREW", "GREW_submission", "evaluate_protocol"):
        assert get_protocol(name) is PROTOCOLS[name]
    with pytest.raises(ValueError, match="evaluate_CCPG"):
        get_protocol("evaluate_nothing")


def test_input_checks() -> None:
    emb, labels, types, views = _set(GRID_ROWS)
    with pytest.raises(ValueError, match="length"):
        evaluate_protocol(emb, labels[:-1], types, views, protocol=PROTOCOL)
    with pytest.raises(ValueError, match="embeddings"):
        evaluate_protocol(emb[:-1], labels, types, views, protocol=PROTOCOL)
    with pytest.raises(ValueError, match="not supported"):
        evaluate_indoor_dataset(emb, labels, types, views, dataset="Gait3D")
    with pytest.raises(ValueError, match="not supported"):
        evaluate_indoor_dataset(emb, labels, types, views, dataset="SUSTech1K",
                                cross_view_gallery=True)


# ---------------------------------------------------------------- OpenGait parity

@pytest.fixture(scope="module")
def cases() -> dict[str, tuple[np.ndarray, ...]]:
    """The random test sets of protocols.npz as (embeddings, labels, types, views)."""
    with np.load(DATA / "protocols.npz") as f:
        arrays = {k: f[k] for k in f.files}
    names = {k.split("/")[0] for k in arrays}
    out = {n: tuple(arrays[f"{n}/{k}"] for k in ("embeddings", "labels", "types", "views"))
           for n in names}
    out["gait3d_probe_set"] = (arrays["gait3d/probe_set"],)
    return out


@pytest.fixture(scope="module")
def opengait() -> dict:
    """OpenGait's results on ``cases``."""
    return json.loads((DATA / "protocols_expected.json").read_text())


@pytest.mark.parametrize("metric", ["euc", "cos"])
def test_indoor_matches_opengait(cases: dict, opengait: dict, metric: str) -> None:
    exp = opengait[metric]
    out = evaluate_indoor_dataset(*cases["casia_b"], dataset="CASIA-B", metric=metric)
    for cond, value in exp["casia_b"].items():
        assert out["results"][cond]["rank1"] == pytest.approx(value, abs=1e-6)
    out = evaluate_indoor_dataset(*cases["casia_b"], dataset="CASIA-B", metric=metric,
                                  cross_view_gallery=True)
    for cond, value in exp["casia_b_cross_view"].items():
        assert out["results"][cond] == pytest.approx(value, abs=1e-6)
    out = evaluate_indoor_dataset(*cases["sustech1k"], dataset="SUSTech1K", metric=metric)
    for cond, value in exp["sustech1k"].items():
        assert out["results"][cond]["rank1"] == pytest.approx(value, abs=1e-6)


@pytest.mark.parametrize("metric", ["euc", "cos"])
def test_ccpg_matches_opengait(cases: dict, opengait: dict, metric: str) -> None:
    out = evaluate_CCPG(*cases["ccpg"], metric=metric)
    for cond, exp in opengait[metric]["ccpg"].items():
        res = out["results"][cond]
        assert out["view_matrices"][cond]["rank1"] == exp["matrix"]
        for key in ("rank1", "rank1_include_identical_view", "reid_rank1", "mAP", "mINP"):
            assert res[key] == pytest.approx(exp[key], abs=1e-4), (cond, key)


@pytest.mark.parametrize("metric", ["euc", "cos"])
def test_real_scene_and_gait3d_match_opengait(cases: dict, opengait: dict, metric: str) -> None:
    out = evaluate_real_scene(*cases["grew"], dataset="GREW", metric=metric)
    for key, value in opengait[metric]["grew"].items():
        assert out["results"]["GREW"][key] == pytest.approx(value, abs=1e-6)
    out = evaluate_Gait3D(*cases["gait3d"], metric=metric,
                          probe_set=cases["gait3d_probe_set"][0].tolist())
    names = {"rank1": "Rank-1", "rank5": "Rank-5", "rank10": "Rank-10", "mAP": "mAP",
             "mINP": "mINP"}
    for key, name in names.items():
        assert out["results"]["Gait3D"][key] == pytest.approx(opengait[metric]["gait3d"][name],
                                                              abs=1e-4)


def test_grew_submission_matches_opengait(cases: dict, opengait: dict, tmp_path: Path) -> None:
    out = GREW_submission(*cases["grew_submission"], output_dir=tmp_path)
    assert Path(out["submission"]).read_text() == opengait["grew_submission_euc_csv"]
