"""Cost of rendering skeleton maps on the fly in training: one batch, preparation and drawing apart.

    python benchmarks/render_on_the_fly.py [--device cuda] [--sequence-frames 100] [--repeat 3]
    python benchmarks/render_on_the_fly.py --traffic [--bandwidth-tbs 4.8]

Two batches: the reference one (32 ids x 4 sequences x 30 frames = 3,840 frames) and the CPU
config's (trainer_cfg.sampler.batch_size and frames_num_fixed of --config).  For each,
`prepare_pose` of every whole sequence of the batch (validation, KNN padding, normalization: once
per sequence, so cacheable across epochs) and `render_frames` of the sampled frames in one call,
timed separately: ms per batch and frames/s.  One thread (OpenCV, torch, BLAS): per-core figures
on the CPU.  Walks are the OpenGait fixture poses tiled to --sequence-frames, shifted and jittered.

--traffic: the bytes of tensors the device path (torch: draw, then align) allocates per frame, counted by
the torch profiler on the CPU (the same tensors as on a GPU, in the GPU's block size); every one is
written once and read at least once, so twice that over a memory bandwidth bounds what any device
reaches with these ops, however many cores it has.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Callable

for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ray_gait.heatmap import fast  # noqa: E402
from ray_gait.heatmap.config import load_heatmap_config  # noqa: E402
from ray_gait.heatmap.on_the_fly import prepare_pose, render_frames  # noqa: E402
from ray_gait.config import load_train_config  # noqa: E402
from heatmap_throughput import make_sequences as make_walks, time_batch  # noqa: E402  (benchmarks/ is on sys.path)

CPU_CONFIG = ROOT / "configs" / "skeletongait" / "skeletongait++_synth.yaml"
REFERENCE_BATCH = (32, 4, 30)


def best_seconds(fn: Callable[[], object], repeat: int) -> float:
    """Best wall time of fn over `repeat` calls, after one warm-up call."""
    return 1.0 / time_batch(fn, 1, repeat)


def cpu_batch(path: Path) -> tuple[int, int, int]:
    """(ids, sequences per id, frames per sequence) of a training config's sampler."""
    sampler = load_train_config(str(path)).trainer_cfg.sampler
    ids, per_id = (int(x) for x in sampler["batch_size"])
    return ids, per_id, int(sampler["frames_num_fixed"])


def bench_batch(label: str, shape: tuple[int, int, int], args: argparse.Namespace, config) -> None:
    """Print prepare and render figures of one batch shape."""
    ids, per_id, frames = shape
    n_seq = ids * per_id
    rng = np.random.default_rng(1)
    walks = make_walks(n_seq, args.sequence_frames)
    prepared = [prepare_pose(w, config) for w in walks]
    picks = [np.sort(rng.choice(args.sequence_frames, size=frames, replace=frames > args.sequence_frames))
             for _ in range(n_seq)]
    pts = np.stack([p[idx] for (p, _), idx in zip(prepared, picks)])
    values = np.stack([v[idx] for (_, v), idx in zip(prepared, picks)])
    n_frames = n_seq * frames

    prep_s = best_seconds(lambda: [prepare_pose(w, config) for w in walks], args.repeat)
    render_s = best_seconds(lambda: render_frames(pts, values, config, device=args.device), args.repeat)
    whole_frames = n_seq * args.sequence_frames
    print(f"{label}: {ids} x {per_id} sequences x {frames} frames = {n_frames} frames "
          f"(sequences of {args.sequence_frames} frames)")
    prep_label = f"prepare_pose, {n_seq} whole sequences (cpu)"
    render_label = f"render_frames, {n_frames} frames ({args.device})"
    print(f"  {prep_label:<44} {prep_s * 1e3:9.1f} ms/batch {prep_s / n_seq * 1e3:7.3f} ms/sequence "
          f"{whole_frames / prep_s:9.0f} pose frames/s")
    print(f"  {render_label:<44} {render_s * 1e3:9.1f} ms/batch {render_s / n_frames * 1e3:7.3f} ms/frame    "
          f"{n_frames / render_s:9.0f} frames/s")


def traffic(args: argparse.Namespace, config) -> None:
    """Print the device path's bytes allocated per frame (draw, align) and the frames/s they allow."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from ray_gait.heatmap.pipeline import _align_on_device, _ops
    from ray_gait.heatmap.render import GPU_BLOCK_ELEMENTS, render_maps
    ids, per_id, frames = REFERENCE_BATCH
    n_seq = max(1, 512 // frames)
    prepared = [prepare_pose(w, config) for w in make_walks(n_seq, args.sequence_frames)]
    pts = np.concatenate([p[:frames] for p, _ in prepared])
    values = np.concatenate([v[:frames] for _, v in prepared])
    ops = _ops("torch", "cpu", "float32")
    gen = config.heatmap_generator_args
    tensors = (ops.asarray(pts), ops.asarray(values))

    def allocated(fn: Callable[[], object]) -> float:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
        return sum(max(e.cpu_memory_usage, 0) for e in prof.events()) / len(pts)

    maps = render_maps(ops, *tensors, gen.sigma, gen.img_h, gen.img_w, gen.eps, block_elements=GPU_BLOCK_ELEMENTS)
    draw = allocated(lambda: render_maps(ops, *tensors, gen.sigma, gen.img_h, gen.img_w, gen.eps,
                                         block_elements=GPU_BLOCK_ELEMENTS))
    align = allocated(lambda: _align_on_device(maps, config))
    out = 2 * gen.img_h * gen.img_w
    print(f"device path, {len(pts)} frames, sigma {config.sigma}, {gen.img_h}x{gen.img_w} drawn, torch {torch.__version__}")
    for label, per_frame in (("draw", draw), ("align + resize", align), ("both", draw + align)):
        bound = args.bandwidth_tbs * 1e12 / (2 * per_frame)
        print(f"  {label:<16} {per_frame / 2**20:8.2f} MiB allocated per frame ({per_frame / out:6.0f}x its uint8 "
              f"maps): at most {bound:10.0f} frames/s at {args.bandwidth_tbs} TB/s")


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu (compiled kernel + OpenCV) or cuda[:N] (torch)")
    parser.add_argument("--sequence-frames", type=int, default=100, help="frames of each whole sequence")
    parser.add_argument("--repeat", type=int, default=3, help="timed calls per figure (best is shown)")
    parser.add_argument("--config", type=Path, default=CPU_CONFIG, help="training config whose sampler "
                        "sets the second batch")
    parser.add_argument("--sigma", type=float, default=None, help="heatmap sigma (default: configs/heatmap.yaml)")
    parser.add_argument("--traffic", action="store_true", help="print the device path's memory traffic per frame "
                        "(measured on the CPU) instead of timing")
    parser.add_argument("--bandwidth-tbs", type=float, default=4.8, help="memory bandwidth for --traffic's bound, "
                        "TB/s (an H200: 4.8)")
    args = parser.parse_args()

    import cv2
    cv2.setNumThreads(1)
    import torch
    torch.set_num_threads(1)
    if args.device != "cpu" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: no CUDA device here")
    overrides = {} if args.sigma is None else {"heatmap_generator_args.sigma": args.sigma}
    config = load_heatmap_config(overrides=overrides)
    if args.traffic:
        traffic(args, config)
        return
    where = (f"compiled kernel {'built' if fast.available() else 'NOT built (numpy renderer)'}"
             if args.device == "cpu" else f"torch {torch.__version__} on {torch.cuda.get_device_name(args.device)}")
    print(f"render on the fly, sigma {config.sigma}, {config.align_args.final_img_size}x"
          f"{config.align_args.final_img_size} maps, 1 CPU thread; {where}; {time.strftime('%Y-%m-%d %H:%M')}")
    bench_batch("reference batch", REFERENCE_BATCH, args, config)
    bench_batch(f"CPU config batch ({args.config.name})", cpu_batch(args.config), args, config)


if __name__ == "__main__":
    main()
