"""Write protocols.npz and protocols_expected.json: OpenGait's evaluator on small random sets.

Not used by the tests (they read the files it wrote). To regenerate, with an OpenGait checkout::

    OPENGAIT_ROOT=/path/to/OpenGait python tests/data/metrics/make_protocol_fixture.py

OpenGait's evaluator is imported unchanged; torchvision/tensorboard are stubbed (unused by the
evaluation code) and ``Tensor.cuda`` is the identity so that it runs on CPU.
"""
from __future__ import annotations

import glob
import json
import logging
import os
import sys
import tempfile
import types
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
logger = logging.getLogger("make_protocol_fixture")


def _load_opengait(root: str) -> tuple[object, object]:
    """OpenGait's ``evaluation.evaluator`` and ``evaluation.metric`` modules, on CPU."""
    sys.path.insert(0, os.path.join(root, "opengait"))
    for name in ("torchvision", "torchvision.utils", "torch.utils.tensorboard"):
        sys.modules[name] = types.ModuleType(name)
    sys.modules["torch.utils.tensorboard"].SummaryWriter = object
    import torch

    torch.Tensor.cuda = lambda self, *a, **k: self
    from evaluation import evaluator, metric

    class _Quiet:
        def log_info(self, *args: object, **kwargs: object) -> None:
            """Drop OpenGait's log lines."""

    evaluator.get_msg_mgr = lambda: _Quiet()
    return evaluator, metric


def _make(rng: np.random.Generator, ids: list[str], seq_types: list[str], views: list[str],
          noise: float) -> dict[str, np.ndarray]:
    """A random test set: an embedding centre per identity plus noise, ~5 % sequences dropped."""
    rows: list[tuple[str, str, str]] = []
    feats = []
    centres = {i: rng.standard_normal((4, 2)) for i in ids}
    for i in ids:
        for t in seq_types:
            for v in views:
                if rng.random() < 0.05:
                    continue
                rows.append((i, t, v))
                feats.append(centres[i] + noise * rng.standard_normal((4, 2)))
    lab, typ, vie = (np.array(c) for c in zip(*rows))
    return {"embeddings": np.asarray(feats, np.float32), "labels": lab, "types": typ,
            "views": vie}


def _info(case: dict[str, np.ndarray]) -> dict[str, object]:
    """OpenGait's ``info_dict`` for a case."""
    return {"embeddings": case["embeddings"], "labels": case["labels"].tolist(),
            "types": case["types"].tolist(), "views": case["views"].tolist()}


def main() -> None:
    """Build the cases, run OpenGait on each with euc and cos, write the files."""
    evaluator, metric = _load_opengait(os.environ["OPENGAIT_ROOT"])
    rng = np.random.default_rng(2024)
    casia_types = ["nm-01", "nm-02", "nm-03", "nm-04", "nm-05", "nm-06", "bg-01", "bg-02",
                   "cl-01", "cl-02"]
    cases = {
        "casia_b": _make(rng, [f"{i:03d}" for i in range(8)], casia_types,
                         ["000", "036", "072", "108", "144"], 1.5),
        "sustech1k": _make(rng, [f"{i:04d}" for i in range(10)],
                           ["00-nm", "01-nm", "02-bg", "03-cl", "02-cr", "04-ub", "01-uf",
                            "03-oc", "02-nt"], ["000", "090", "180"], 1.5),
        "ccpg": _make(rng, [f"{i:03d}" for i in range(20)],
                      ["U0_D0_BG", "U0_D0", "U1_D1", "U2_D2", "U3_D3", "U0_D3", "U1_D0"],
                      ["01_a", "02_b", "03_c", "04_d"], 1.5),
        "grew": _make(rng, [f"{i:05d}" for i in range(40)], ["01", "02"], ["v"], 2.5),
        "gait3d": _make(rng, [f"{i:04d}" for i in range(30)],
                        ["camid1_videoid1", "camid2_videoid1", "camid3_videoid2"],
                        ["seq0", "seq1"], 2.0),
    }
    names = ["-".join(x) for x in zip(*(cases["gait3d"][k] for k in ("labels", "types", "views")))]
    probe_set = names[::5] + ["9999-camid1_videoid1-seq0"]
    expected: dict[str, dict[str, object]] = {}
    for m in ("euc", "cos"):
        out: dict[str, object] = {}
        res = evaluator.evaluate_indoor_dataset(_info(cases["casia_b"]), "CASIA-B", m)
        out["casia_b"] = {c: float(res[f"scalar/test_accuracy/{c}@R1"]) for c in ("NM", "BG", "CL")}
        res = evaluator.evaluate_indoor_dataset(_info(cases["casia_b"]), "CASIA-B", m, True)
        out["casia_b_cross_view"] = {c: {"rank1": float(res[f"scalar/test_accuracy/{c}-Rank@1"]),
                                         "mAP": float(res[f"scalar/test_accuracy/{c}-mAP"])}
                                     for c in ("NM", "BG", "CL")}
        res = evaluator.evaluate_indoor_dataset(_info(cases["sustech1k"]), "SUSTech1K", m)
        out["sustech1k"] = {k.split("/")[-1][:-3]: float(v) for k, v in res.items()}
        ccpg = cases["ccpg"]
        res = evaluator.evaluate_CCPG(_info(ccpg), "CCPG", m)
        out["ccpg"] = {}
        for c in ("CL", "UP", "DN", "BG"):
            grid = res[f"scalar/test_accuracy/{c}"]
            out["ccpg"][c] = {"rank1": float(evaluator.de_diag(grid)),
                              "rank1_include_identical_view": float(np.mean(grid)),
                              "matrix": grid.tolist()}
        split_views = np.array([v.split("_")[0] for v in ccpg["views"]])
        for c, (pt, gt) in {"CL": (["U0_D0_BG", "U0_D0"], ["U1_D1", "U2_D2", "U3_D3"]),
                            "UP": (["U3_D3"], ["U0_D3"]), "DN": (["U1_D0"], ["U1_D1"]),
                            "BG": (["U0_D0_BG"], ["U0_D0"])}.items():
            pm, gm = np.isin(ccpg["types"], pt), np.isin(ccpg["types"], gt)
            dist = metric.cuda_dist(ccpg["embeddings"][pm], ccpg["embeddings"][gm], m).numpy()
            cmc, m_ap, m_inp = metric.evaluate_many(dist, ccpg["labels"][pm], ccpg["labels"][gm],
                                                    split_views[pm], split_views[gm])
            out["ccpg"][c].update(reid_rank1=float(cmc[0] * 100), mAP=float(m_ap * 100),
                                  mINP=float(m_inp * 100))
        res = evaluator.evaluate_real_scene(_info(cases["grew"]), "GREW", m)
        out["grew"] = {"rank1": float(res["scalar/test_accuracy/Rank-1"]),
                       "rank5": float(res["scalar/test_accuracy/Rank-5"])}
        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, "datasets", "Gait3D").mkdir(parents=True)
            Path(tmp, "datasets", "Gait3D", "Gait3D.json").write_text(
                json.dumps({"PROBE_SET": probe_set}))
            cwd = os.getcwd()
            os.chdir(tmp)
            try:
                res = evaluator.evaluate_Gait3D(_info(cases["gait3d"]), "Gait3D", m)
            finally:
                os.chdir(cwd)
        out["gait3d"] = {k.split("/")[-1]: float(v) for k, v in res.items()}
        expected[m] = out
    grew_sub = _make(rng, [f"{i:05d}" for i in range(30)], ["01", "02", "03"], ["v"], 2.5)
    probe = grew_sub["types"] == "03"
    grew_sub["views"] = np.where(probe, np.char.add("vid", np.arange(probe.size).astype(str)),
                                 grew_sub["views"])
    grew_sub["labels"] = np.where(probe, "probe", grew_sub["labels"])
    with tempfile.TemporaryDirectory() as tmp:
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            evaluator.GREW_submission(_info(grew_sub), "GREW", "euc")
        finally:
            os.chdir(cwd)
        csv_path = glob.glob(f"{tmp}/GREW_result/*.csv")[0]
        expected["grew_submission_euc_csv"] = Path(csv_path).read_text()
    cases["grew_submission"] = grew_sub
    arrays = {f"{name}/{k}": v for name, case in cases.items() for k, v in case.items()}
    arrays["gait3d/probe_set"] = np.array(probe_set)
    np.savez_compressed(HERE / "protocols.npz", **arrays)
    (HERE / "protocols_expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    logger.info("wrote %s", HERE / "protocols.npz")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
