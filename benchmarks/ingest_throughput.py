"""Step 0 throughput: sequences/s of `ray-gait ingest` on generated OU-MVLP-like OpenPose JSON.

    python benchmarks/ingest_throughput.py [--sequences 400] [--frames 30] [--crowded 0.3] [--skip-ray]

Writes `--sequences` raw sequences in OU-MVLP's layout (`<id>/<view>_<seq>/<NNNN>_keypoints.json`,
COCO-18, a distractor listed first in a `--crowded` share of the frames, a few empty frames), then
times building them in one process (parse + track + stack, no writing: the per-core cost) and the
Ray Data job end to end with 1 and 2 workers (listing, grouping, parsing, tracking, pkl tree,
Parquet, manifest; Ray already started).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ray_gait.ingest.formats import OPENPOSE_JSON, files_of_format  # noqa: E402
from ray_gait.ingest.layout import group_sequences  # noqa: E402
from ray_gait.ingest.shards import IngestConfig, build_sequence  # noqa: E402

FIXTURE = ROOT / "tests" / "data" / "opengait_heatmap" / "poses.npz"
VIEWS = ("000", "015", "030", "045", "060", "075", "090", "180", "195", "210", "225", "240", "255", "270")


def _person(joints: np.ndarray) -> dict:
    return {"person_id": [-1], "pose_keypoints_2d": [round(float(v), 3) for v in joints.reshape(-1)]}


def write_raw(root: Path, sequences: int, frames: int, crowded: float, seed: int = 0) -> int:
    """Write the raw tree; returns the number of frame files."""
    rng = np.random.default_rng(seed)
    with np.load(FIXTURE) as data:
        walks = [data["coco18_a"], data["coco18_b"]]
    written = 0
    for i in range(sequences):
        walk = walks[i % len(walks)]
        seq = np.concatenate([walk] * (frames // len(walk) + 1))[:frames].copy()
        seen = seq[..., :2] != 0
        seq[..., :2] += np.where(seen, rng.uniform(-80, 80, 2), 0)
        folder = root / f"{i // 28:05d}" / f"{VIEWS[i % 14]}_{(i // 14) % 2:02d}"
        folder.mkdir(parents=True)
        for t in range(frames):
            people = [] if rng.random() < 0.03 else [seq[t]]
            if people and rng.random() < crowded:
                other = seq[t].copy()
                other[..., :2] += np.where(seen[t], rng.uniform(150, 400, 2), 0)
                people.insert(0, other)
            doc = {"version": 1.3, "people": [_person(p) for p in people]}
            (folder / f"{t + 1:04d}_keypoints.json").write_text(json.dumps(doc))
            written += 1
    return written


def in_process(root: Path) -> tuple[int, int, float]:
    """(sequences, frames, seconds) of building every sequence in this process, one core."""
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*.json"))
    sequences, _ = group_sequences(files_of_format(files, OPENPOSE_JSON), OPENPOSE_JSON)
    config = IngestConfig()
    start = time.perf_counter()
    frames = 0
    for seq in sequences:
        built = build_sequence(seq, OPENPOSE_JSON, lambda rel: (root / rel).read_bytes(), config)
        frames += len(built.pose)
    return len(sequences), frames, time.perf_counter() - start


def ray_job(root: Path, workers: int, shard_size: int) -> tuple[int, float]:
    """(sequences, seconds) of `ray-gait ingest` end to end into a fresh output folder."""
    from ray_gait.ray_layer.ingest_job import run_ingest_job
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        summary = run_ingest_job(str(root), out, shard_size=shard_size, workers=workers)
        return summary.sequences, time.perf_counter() - start


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=400)
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--crowded", type=float, default=0.3, help="share of frames with a distractor")
    parser.add_argument("--shard-size", type=int, default=32)
    parser.add_argument("--skip-ray", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp, "raw")
        files = write_raw(root, args.sequences, args.frames, args.crowded)
        print(f"input: {args.sequences} sequences x {args.frames} frames = {files} OpenPose JSON files "
              f"(COCO-18, {args.crowded:.0%} of frames with a distractor listed first)")
        n, frames, seconds = in_process(root)
        print(f"{'in process, 1 core':>20}: {n / seconds:8.1f} sequences/s, {frames / seconds:8.0f} frames/s "
              "(parse + track, no writing)")
        if args.skip_ray:
            return
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        from ray_gait.ray_layer.session import ensure_ray
        ensure_ray(num_cpus=2)
        warm = Path(tmp, "warm")
        write_raw(warm, 4, 5, args.crowded, seed=1)
        ray_job(warm, workers=2, shard_size=2)             # warm-up: worker processes and imports
        for workers in (1, 2):
            n, seconds = ray_job(root, workers, args.shard_size)
            print(f"{f'ray job, {workers} worker(s)':>20}: {n / seconds:8.1f} sequences/s "
                  f"({n} sequences in {seconds:.1f} s)")


if __name__ == "__main__":
    main()
