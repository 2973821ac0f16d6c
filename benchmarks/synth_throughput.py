"""Sequences/s of `ray-gait synth` with 1 and 2 workers, and the time of the default set.

    python benchmarks/synth_throughput.py [--ids 60] [--skip-default]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

from ray_gait.ray_layer.session import ensure_ray  # noqa: E402
from ray_gait.ray_layer.synth_job import run_synth_job  # noqa: E402
from ray_gait.synth import SynthConfig  # noqa: E402


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", type=int, default=20, help="identities for the 1 vs 2 worker runs")
    parser.add_argument("--skip-default", action="store_true", help="skip the default 60-id set")
    args = parser.parse_args()
    ensure_ray(num_cpus=2)
    rates = {}
    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as tmp:
            result = run_synth_job(tmp, SynthConfig(ids=args.ids, train_ids=args.ids // 2), workers=workers,
                                   preview=False)
            rates[workers] = result["sequences"] / result["seconds"]
            print(f"synth, {workers} worker(s): {result['sequences']} sequences in {result['seconds']:.1f} s = "
                  f"{rates[workers]:.1f} sequences/s")
    print(f"2 workers / 1 worker: {rates[2] / rates[1]:.2f}x")
    if not args.skip_default:
        with tempfile.TemporaryDirectory() as tmp:
            result = run_synth_job(tmp, SynthConfig(), workers=2, preview=True)
            print(f"default set (60 ids x 5 views x 8 sequences): {result['sequences']} sequences, "
                  f"{result['frames']} frames in {result['seconds']:.1f} s (2 workers, preview included)")


if __name__ == "__main__":
    main()
