"""Seconds of small step-1 jobs run one after another by one driver: on an actor pool (`--workers 2`) and on
Ray Data tasks (no pool size: a small job's default), each mode in a fresh local Ray of 2 CPUs.

    python benchmarks/small_jobs.py [--ids 6] [--repeat 3]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")


def _one_driver(mode: str, ids: int, repeat: int) -> dict[str, list[float]]:
    """In this process: a fresh Ray, one synthetic set, then `repeat` heatmap jobs of it; seconds of each."""
    from ray_gait.cli import main
    from ray_gait.ray_layer.session import ensure_ray
    ensure_ray(num_cpus=2)
    workers = ["--workers", "2"] if mode == "actors" else []
    seconds: dict[str, list[float]] = {"synth": [], "heatmap": []}
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        assert main(["-q", "synth", "--out", f"{tmp}/data", "--ids", str(ids), "--train-ids", str(ids - 2),
                     "--views", "0,90", "--frames", "16:24", "--no-preview", *workers]) == 0
        seconds["synth"].append(time.perf_counter() - started)
        for n in range(repeat):
            started = time.perf_counter()
            assert main(["-q", "heatmap", "--pose_data_path", f"{tmp}/data/pose", "--save_root", f"{tmp}/maps{n}",
                         "--dataset_name", "synth", *workers]) == 0
            seconds["heatmap"].append(time.perf_counter() - started)
    return seconds


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", type=int, default=6, help="identities of the synthetic set (x 2 views x 8)")
    parser.add_argument("--repeat", type=int, default=3, help="heatmap jobs after the synthetic set")
    parser.add_argument("--mode", choices=["actors", "tasks"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(_one_driver(args.mode, args.ids, args.repeat)))
        return
    print(f"{args.ids * 16} sequences; synth, then {args.repeat} heatmap jobs, one driver per mode")
    for mode in ("actors", "tasks"):
        done = subprocess.run([sys.executable, __file__, "--mode", mode, "--ids", str(args.ids),
                               "--repeat", str(args.repeat)], capture_output=True, text=True, check=True)
        seconds = json.loads(done.stdout.strip().splitlines()[-1])
        heatmaps = ", ".join(f"{s:.2f}" for s in seconds["heatmap"])
        print(f"{mode:6s}  synth {seconds['synth'][0]:.2f} s   heatmap jobs {heatmaps} s")


if __name__ == "__main__":
    main()
