"""Step 1 throughput: frames/s per core of every renderer, and of the Ray Data job with 1 and 2 workers.

    python benchmarks/heatmap_throughput.py [--sequences 24] [--frames 60] [--opengait DIR] [--skip-ray] [--stages]

`--opengait DIR` names a folder holding an importable `bench_opengait_heatmap.opengait_transform`
(OpenGait's generator run outside this project, see benchmarks/README.md) to time it side by side
on the same input.  Single-threaded: each renderer is timed on one core.
"""
from __future__ import annotations

import argparse
import os
import pickle
import sys
import tempfile
import time
from pathlib import Path

for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ray_gait import load_heatmap_config, render_heatmaps, render_heatmaps_batch  # noqa: E402
from ray_gait.heatmap.reference import reference_render  # noqa: E402

FIXTURE = ROOT / "tests" / "data" / "opengait_heatmap" / "poses.npz"


def make_sequences(count: int, frames: int, seed: int = 0) -> list[np.ndarray]:
    """Walking COCO-17 sequences in 1280x720 pixels: fixture walks tiled, shifted and jittered."""
    rng = np.random.default_rng(seed)
    with np.load(FIXTURE) as data:
        walks = [data[k] for k in ("walk_a", "walk_b", "walk_noisy", "walk_far")]
    out = []
    for i in range(count):
        walk = walks[i % len(walks)]
        seq = np.concatenate([walk] * (frames // len(walk) + 1))[:frames].copy()
        seen = seq[..., :2] != 0
        seq[..., :2] += np.where(seen, rng.normal(0, 1.5, seq[..., :2].shape) + rng.uniform(-50, 50, 2), 0)
        out.append(seq.astype(np.float32))
    return out


def time_renderer(fn, sequences: list[np.ndarray], repeat: int = 1) -> float:
    """Frames per second of fn over the sequences (best of `repeat`)."""
    frames = sum(len(s) for s in sequences)
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for seq in sequences:
            fn(seq)
        best = min(best, time.perf_counter() - start)
    return frames / best


def time_batch(fn, frames: int, repeat: int = 3) -> float:
    """Frames per second of one call of fn that renders `frames` frames (best of `repeat`, after a warm-up)."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return frames / best


def stage_rates(sequences: list[np.ndarray], config, backend: str, device: str | None = None) -> dict[str, float]:
    """Frames/s of each stage with every frame of every sequence in one render call (as a GPU wants)."""
    from ray_gait.heatmap.align import align_maps
    from ray_gait.heatmap.pipeline import _ops, normalize_pose, validate_pose
    from ray_gait.heatmap.render import render_maps
    import torch
    frames = sum(len(s) for s in sequences)
    start = time.perf_counter()
    parts = [normalize_pose(validate_pose(s, config), config) for s in sequences]
    normalize_s = time.perf_counter() - start
    pts = np.concatenate([p for p, _ in parts])
    values = np.concatenate([v for _, v in parts])
    ops = _ops(backend, device, "float32")
    gen, align = config.heatmap_generator_args, config.align_args

    def render():
        maps = render_maps(ops, ops.asarray(pts), ops.asarray(values), gen.sigma, gen.img_h, gen.img_w, gen.eps)
        if ops.is_torch and ops.device.type == "cuda":
            torch.cuda.synchronize()
        return maps
    render()
    start = time.perf_counter()
    maps = render()
    render_s = time.perf_counter() - start
    rates = {"normalize (CPU)": frames / normalize_s, f"render maps ({backend} {device or 'cpu'})": frames / render_s}
    if ops.is_torch:
        from ray_gait.heatmap.align_torch import align_maps_torch

        def align_there():
            aligned = align_maps_torch(maps, align.final_img_size, align.offset, align.heatmap_image_size // 2,
                                       align.align)
            if ops.device.type == "cuda":
                torch.cuda.synchronize()
        align_there()
        start = time.perf_counter()
        align_there()
        rates[f"align + resize (torch {device or 'cpu'})"] = frames / (time.perf_counter() - start)
        maps = maps.cpu().numpy()
    start = time.perf_counter()
    align_maps(maps, align.final_img_size, align.offset, align.heatmap_image_size // 2, align.align)
    rates["align + resize (OpenCV, CPU)"] = frames / (time.perf_counter() - start)
    return rates


def ray_job_fps(sequences: list[np.ndarray], workers: int) -> float:
    """End-to-end frames/s of `ray-gait heatmap` (listing, reading, rendering, Parquet, manifest)."""
    from ray_gait.ray_layer.heatmap_job import run_heatmap_job
    with tempfile.TemporaryDirectory() as tmp:
        for i, seq in enumerate(sequences):
            folder = Path(tmp, "pose", f"{i:04d}", "nm-01", "000")
            folder.mkdir(parents=True)
            (folder / "s.pkl").write_bytes(pickle.dumps(seq))
        start = time.perf_counter()
        summary = run_heatmap_job(str(Path(tmp, "pose")), str(Path(tmp, "out")), "Bench", load_heatmap_config(),
                                  shard_size=max(1, len(sequences) // 16), workers=workers)
        return summary.frames / (time.perf_counter() - start)


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=24)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--opengait", default=None, help="folder with bench_opengait_heatmap.py (oracle)")
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--stages", action="store_true",
                        help="also time normalize / render / align with all frames in one render call")
    parser.add_argument("--job-sequences", type=int, default=480, help="sequences for the Ray job runs")
    args = parser.parse_args()

    import torch
    torch.set_num_threads(1)
    import cv2
    cv2.setNumThreads(1)
    config = load_heatmap_config()
    seqs = make_sequences(args.sequences, args.frames)
    print(f"input: {len(seqs)} sequences x {args.frames} frames, default config (sigma 8), 1 thread")
    results: dict[str, float] = {}
    results["scalar reference"] = time_renderer(lambda s: reference_render(s, config), [s[:2] for s in seqs[:2]])
    from ray_gait.heatmap import fast
    if fast.available():
        results["compiled kernel (c)"] = time_renderer(lambda s: render_heatmaps(s, config, backend="c"), seqs,
                                                       repeat=5)
    results["numpy"] = time_renderer(lambda s: render_heatmaps(s, config, backend="numpy"), seqs, repeat=2)
    results["torch cpu"] = time_renderer(lambda s: render_heatmaps(s, config, backend="torch"), seqs, repeat=2)
    if torch.cuda.is_available():
        render_heatmaps(seqs[0], config, backend="torch", device="cuda")
        results["torch cuda"] = time_renderer(
            lambda s: render_heatmaps(s, config, backend="torch", device="cuda"), seqs, repeat=2)
        results["torch cuda, batched"] = time_batch(lambda: render_heatmaps_batch(seqs, config, device="cuda"),
                                                    sum(len(s) for s in seqs))
    if args.opengait:
        sys.path.insert(0, args.opengait)
        sys.path.insert(0, os.path.join(args.opengait, "shims"))
        from bench_opengait_heatmap import opengait_transform
        transform = opengait_transform({})
        results["OpenGait generator"] = time_renderer(lambda s: transform(s.copy()), seqs[:8], repeat=3)
    for name, fps in results.items():
        print(f"{name:>20}: {fps:9.1f} frames/s per core")
    if args.stages:
        print(f"stages, {sum(len(s) for s in seqs)} frames in one render call:")
        backends = [("torch", "cuda")] if torch.cuda.is_available() else []
        for backend, device in backends + [("torch", None), ("numpy", None)]:
            for name, fps in stage_rates(seqs, config, backend, device).items():
                print(f"{name:>32}: {fps:11.1f} frames/s")
    if "OpenGait generator" in results:
        base = results["OpenGait generator"]
        for name in ("compiled kernel (c)", "numpy", "torch cpu", "torch cuda"):
            if name in results:
                print(f"{name:>20}: {results[name] / base:6.1f}x OpenGait's generator")
    if not args.skip_ray:
        from ray_gait.ray_layer.session import ensure_ray
        ensure_ray(num_cpus=2)
        job_seqs = make_sequences(args.job_sequences, args.frames, seed=1)
        ray_job_fps(job_seqs[:8], workers=2)            # warm-up: worker processes and imports
        one = ray_job_fps(job_seqs, workers=1)
        two = ray_job_fps(job_seqs, workers=2)
        print(f"{'ray job, 1 worker':>20}: {one:9.1f} frames/s")
        print(f"{'ray job, 2 workers':>20}: {two:9.1f} frames/s ({two / one:.2f}x)")


if __name__ == "__main__":
    main()
