"""Sequences/s of `ray-gait link`, Parquet and symlink output, on a synthetic data set.

    python benchmarks/link_throughput.py [--ids 20]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

from ray_gait.heatmap.config import load_heatmap_config  # noqa: E402
from ray_gait.ray_layer.heatmap_job import run_heatmap_job  # noqa: E402
from ray_gait.ray_layer.link_job import run_link_job  # noqa: E402
from ray_gait.ray_layer.session import ensure_ray  # noqa: E402
from ray_gait.ray_layer.synth_job import run_synth_job  # noqa: E402
from ray_gait.synth import SynthConfig  # noqa: E402


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", type=int, default=20)
    args = parser.parse_args()
    ensure_ray(num_cpus=2)
    with tempfile.TemporaryDirectory() as tmp:
        run_synth_job(tmp, SynthConfig(ids=args.ids, train_ids=args.ids // 2), preview=False)
        maps = run_heatmap_job(os.path.join(tmp, "pose"), os.path.join(tmp, "maps"), "synth",
                               load_heatmap_config(), fmt="both").output
        for fmt in ("parquet", "symlink"):
            result = run_link_job(maps, os.path.join(tmp, "sil"), os.path.join(tmp, f"paired-{fmt}"), fmt=fmt)
            print(f"link --format {fmt}: {result.paired} pairs in {result.seconds:.1f} s = "
                  f"{result.paired / result.seconds:.1f} sequences/s")


if __name__ == "__main__":
    main()
