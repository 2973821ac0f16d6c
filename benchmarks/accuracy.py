"""The number that matters: cross-view Rank-1 on the default synthetic set, CPU training.

Generates the default synthetic set (60 ids, 5 views, 8 sequences), renders and pairs it, trains
SkeletonGait++ and SkeletonGait (maps only) on Ray Train, evaluates both with `evaluate_protocol`,
and evaluates a hand-made pose baseline (normalized joint statistics, nearest neighbour) with the
same code on the same split.

    python benchmarks/accuracy.py --out bench-accuracy [--iters-pp 400] [--iters-sg 400] [--set key=value ...]
        [--pp-from-poses]     # SkeletonGait++ also trained straight from poses, maps drawn on the fly
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import numpy as np  # noqa: E402

from ray_gait.evaluation.protocols import evaluate_protocol  # noqa: E402
from ray_gait.io.safe_pickle import loads_arrays  # noqa: E402
from ray_gait.ray_layer.demo import run_demo  # noqa: E402
from ray_gait.synth.baseline import pose_features  # noqa: E402
from ray_gait.config import CONFIG_DIR  # noqa: E402
from ray_gait.yaml_config import parse_override  # noqa: E402


def baseline(data_dir: str) -> dict:
    """The pose baseline through evaluate_protocol: features [N, F, 1] of the TEST_SET sequences."""
    test_ids = set(json.loads(Path(data_dir, "partition.json").read_text())["TEST_SET"])
    feats, ids, types, views = [], [], [], []
    for path in sorted(Path(data_dir, "pose").glob("*/*/*/*.pkl")):
        sid, stype, view = path.parts[-4:-1]
        if sid not in test_ids:
            continue
        feats.append(pose_features(loads_arrays(path.read_bytes())))
        ids.append(sid)
        types.append(stype)
        views.append(view)
    x = np.stack(feats)
    mu, sd = np.nanmean(x, axis=0), np.nanstd(x, axis=0)
    emb = np.nan_to_num((x - mu) / np.where(sd > 0, sd, 1.0))[:, :, None].astype(np.float32)
    return evaluate_protocol(emb, np.array(ids), np.array(types), np.array(views),
                             protocol=str(Path(data_dir, "protocol.json")))


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench-accuracy")
    parser.add_argument("--iters-pp", type=int, default=400, help="SkeletonGait++ iterations")
    parser.add_argument("--iters-sg", type=int, default=400, help="SkeletonGait iterations")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                        help="override a training config key of both models (repeatable)")
    parser.add_argument("--pp-from-poses", action="store_true",
                        help="also train SkeletonGait++ straight from the poses (maps drawn on the fly, silhouettes "
                             "from the sil tree), same iterations, and compare it with training from rendered maps")
    args = parser.parse_args()
    extra = dict(parse_override(item) for item in args.set)
    rows = {}
    times = {}
    data = os.path.abspath(os.path.join(args.out, "data"))
    poses = {"data_cfg.dataset_root": os.path.join(data, "pose"), "data_cfg.silhouette_root": os.path.join(data, "sil"),
             "trainer_cfg.save_name": "SkeletonGaitPP_synth_from_poses"}
    runs = [("SkeletonGait++", "skeletongait++_synth.yaml", args.iters_pp, {}),
            ("SkeletonGait", "skeletongait_synth.yaml", args.iters_sg, {})]
    if args.pp_from_poses:
        runs.insert(1, ("SkeletonGait++ (poses)", "skeletongait++_synth.yaml", args.iters_pp, poses))
    for name, cfg, iters, inputs in runs:
        if iters <= 0:
            continue
        started = time.perf_counter()
        result = run_demo(args.out, ids=60, total_iter=iters, config=os.path.join(CONFIG_DIR, "skeletongait", cfg),
                          overrides={"evaluator_cfg.enable_float16": False, **extra, **inputs})
        times[name] = time.perf_counter() - started
        rows[name] = result["metrics"]
    rows["pose baseline"] = baseline(os.path.join(args.out, "data"))
    print(f"{'method':>16} | {'NM':>6} | {'BG':>6} | {'CL':>6} | {'mean':>6} | seconds")
    for name, metrics in rows.items():
        values = [metrics["results"][c]["rank1"] for c in ("NM", "BG", "CL")]
        print(f"{name:>16} | " + " | ".join(f"{v:6.2f}" for v in values) +
              f" | {np.mean(values):6.2f} | {times.get(name, 0):.0f}")
    if "SkeletonGait++" in rows:
        pp = np.mean([rows["SkeletonGait++"]["results"][c]["rank1"] for c in ("NM", "BG", "CL")])
        base = np.mean([rows["pose baseline"]["results"][c]["rank1"] for c in ("NM", "BG", "CL")])
        print(f"SkeletonGait++ / pose baseline: {pp / base:.2f}x (target >= 2)")


if __name__ == "__main__":
    main()
