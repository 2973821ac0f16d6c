"""Does the training input pipeline keep the model fed?  Sequences/s the CPU side delivers per core
(P x K sampling, frame sampling, transforms of SkeletonGait++) against sequences/s a training step
consumes, and their ratio (target >= 2).

    python benchmarks/train_input.py [--batch 32x4] [--frames 30] [--widths tiny|seed] [--device cpu|cuda] [--amp]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from ray_gait.models import build_model  # noqa: E402
from ray_gait.training.config import CONFIG_DIR, load_train_config  # noqa: E402
from ray_gait.training.data import BatchMaker, SequenceSet  # noqa: E402
from ray_gait.training.loop import autocast_dtype, train_step  # noqa: E402
from ray_gait.training.losses import LossAggregator  # noqa: E402
from ray_gait.training.optim import build_optimizer  # noqa: E402


def fake_sequences(ids: int, per_id: int, rng: np.random.Generator) -> SequenceSet:
    """Random uint8 maps (T, 2, 64, 64) and silhouettes (T, 64, 44) of 40-60 frames."""
    data = SequenceSet(("heatmap", "silhouette"))
    for i in range(ids):
        for j in range(per_id):
            frames = int(rng.integers(40, 61))
            data.add({"id": f"{i:05d}", "type": "nm-01", "view": f"{j:03d}", "seq": "s",
                      "heatmap": rng.integers(0, 255, (frames, 2, 64, 64), dtype=np.uint8),
                      "silhouette": rng.integers(0, 255, (frames, 64, 44), dtype=np.uint8)})
    return data


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", default="32x4")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--widths", default="tiny", choices=["tiny", "seed"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", action="store_true")
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    p, k = (int(v) for v in args.batch.split("x"))
    name = "skeletongait++_synth.yaml" if args.widths == "tiny" else "skeletongait++_Gait3D.yaml"
    cfg = load_train_config(os.path.join(CONFIG_DIR, "skeletongait", name),
                            {"trainer_cfg.sampler.batch_size": [p, k],
                             "trainer_cfg.sampler.frames_num_fixed": args.frames,
                             "model_cfg.SeparateBNNecks.class_num": 64})
    data = fake_sequences(64, 6, np.random.default_rng(0))
    maker = BatchMaker(data, cfg.trainer_cfg.sampler, cfg.trainer_cfg.transform)
    maker.make(0)
    start = time.perf_counter()
    for step in range(1, 1 + args.steps):
        maker.make(step)
    input_rate = args.steps * p * k / (time.perf_counter() - start)
    device = torch.device(args.device)
    torch.set_num_threads(os.cpu_count() or 1)
    model = build_model(cfg.model_cfg).to(device)
    losses = LossAggregator(cfg.loss_cfg).to(device)
    optimizer = build_optimizer(model, cfg.optimizer_cfg)
    amp = autocast_dtype(True, device) if args.amp else None
    batch = maker.make(0)
    train_step(model, losses, optimizer, None, batch, device, amp)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.steps):
        train_step(model, losses, optimizer, None, batch, device, amp)
    if device.type == "cuda":
        torch.cuda.synchronize()
    step_s = (time.perf_counter() - start) / args.steps
    model_rate = p * k / step_s
    print(f"batch {p}x{k} of {args.frames} frames, SkeletonGait++ {args.widths} widths on {device} "
          f"{'(AMP)' if amp else '(fp32)'}")
    print(f"input pipeline: {input_rate:8.1f} sequences/s per CPU core")
    print(f"model step:     {step_s:8.3f} s = {model_rate:.1f} sequences/s")
    cores = os.cpu_count() or 1
    print(f"ratio delivered / consumed: {input_rate / model_rate:.2f} per core, "
          f"{input_rate * cores / model_rate:.2f} with the {cores} cores of this machine")


if __name__ == "__main__":
    main()
