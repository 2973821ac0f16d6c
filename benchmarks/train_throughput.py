"""Does the training input pipeline keep the model fed?  For SkeletonGait and SkeletonGait++: the
sequences/s the CPU side delivers (P x K sampling, frame sampling, transforms: what each Ray Train
worker's prefetch threads do, `--input-threads` = data_cfg.num_workers of them), the time of one
training step, and their ratio (target >= 2).

    python benchmarks/train_throughput.py [--models skeletongait,skeletongait++] [--batch 32x4]
        [--frames 30] [--widths tiny|seed] [--device cpu|cuda] [--amp] [--sync-bn] [--steps 3]
        [--input-threads N] [--ranks N]

`--widths seed` uses the reference configs (Gait3D: 32x4 sequences of 30 frames is the reference
batch); `tiny` the synthetic set's CPU configs.  `--amp` is `enable_float16: true` (bf16 where the
device has it, fp16 + GradScaler otherwise); `--sync-bn` converts BatchNorm to SyncBatchNorm in a
one-process NCCL group (CUDA only, as in torch): with one rank there is nothing to synchronise, so it
times the converted model, not the all-gather of several GPUs.  `--ranks N` measures one rank of an
N-rank DDP run: P x K is the global batch (as in OpenGait's configs), each rank builds and steps its
share of it.  A step that runs out of device memory is reported as such and the next model goes on.

`--memory` prints, instead of rates, the peak memory of one rank's step at its share, for fp32 and AMP
(bf16 and fp16): on CUDA `torch.cuda.max_memory_allocated` around a real `train_step` (the CUDA context
and the allocator's cache come on top); on a machine without a GPU, the tensors of the same forward,
backward and optimizer step traced by torch's MemTracker over fake tensors (FakeTensorMode: shapes and
dtypes only, nothing computed or allocated), with the loss replaced by the sum of the outputs (the
triplet and cross-entropy terms pick entries by value, which fake tensors do not have; at a few
kilobytes they do not move the peak).  The traced figure counts what autograd keeps, not convolution
workspaces: benchmarks/README.md compares it with a measured CUDA peak.

    python benchmarks/train_throughput.py --memory --widths seed --models skeletongait++ --ranks 1,4,8
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import contextlib  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from ray_gait.models import build_model  # noqa: E402
from ray_gait.config import CONFIG_DIR, TrainConfig, load_train_config  # noqa: E402
from ray_gait.data.batches import BatchMaker, prefetch  # noqa: E402
from ray_gait.data.sources import SequenceSet  # noqa: E402
from ray_gait.models import input_columns  # noqa: E402
from ray_gait.models.precision import autocast_dtype  # noqa: E402
from ray_gait.training.loop import make_scaler, train_step  # noqa: E402
from ray_gait.training.losses import LossAggregator  # noqa: E402
from ray_gait.training.optim import build_optimizer  # noqa: E402

CONFIGS = {("skeletongait", "tiny"): "skeletongait_synth.yaml",
           ("skeletongait", "seed"): "skeletongait_Gait3D.yaml",
           ("skeletongait++", "tiny"): "skeletongait++_synth.yaml",
           ("skeletongait++", "seed"): "skeletongait++_Gait3D.yaml"}
CLASSES = 64


def fake_sequences(columns: tuple[str, ...], ids: int, per_id: int, rng: np.random.Generator) -> SequenceSet:
    """Random uint8 maps (T, 2, 64, 64) and silhouettes (T, 64, 44) of 40-60 frames, the model's columns."""
    data = SequenceSet(columns)
    for i in range(ids):
        for j in range(per_id):
            frames = int(rng.integers(40, 61))
            data.add({"id": f"{i:05d}", "type": "nm-01", "view": f"{j:03d}", "seq": "s",
                      "heatmap": rng.integers(0, 255, (frames, 2, 64, 64), dtype=np.uint8),
                      "silhouette": rng.integers(0, 255, (frames, 64, 44), dtype=np.uint8)})
    return data


def config_for(model: str, widths: str, batch: tuple[int, int], frames: int) -> TrainConfig:
    """The model's config with the benchmark's batch, clip length and class count."""
    return load_train_config(os.path.join(CONFIG_DIR, "skeletongait", CONFIGS[(model, widths)]),
                             {"trainer_cfg.sampler.batch_size": list(batch),
                              "trainer_cfg.sampler.frames_num_fixed": frames,
                              "model_cfg.SeparateBNNecks.class_num": CLASSES})


def input_rate(cfg: TrainConfig, data: SequenceSet, steps: int, threads: int, ranks: int) -> float:
    """Sequences/s that `threads` prefetch threads (data_cfg.num_workers) turn into one rank's batches."""
    torch.set_num_threads(1)
    maker = BatchMaker(data, cfg.trainer_cfg.sampler, cfg.trainer_cfg.transform, world_size=ranks)
    batch_size = len(maker.make(0)[1])
    start = time.perf_counter()
    for _ in prefetch(maker, 1, 1 + steps, workers=threads):
        pass
    return steps * batch_size / (time.perf_counter() - start)


def step_seconds(cfg: TrainConfig, data: SequenceSet, device: torch.device, amp: bool, sync_bn: bool,
                 steps: int, ranks: int) -> tuple[float, int]:
    """Seconds per training step of one rank's share (forward, losses, backward, optimizer) after one
    warm-up step, and the sequences in that share."""
    torch.set_num_threads(os.cpu_count() or 1)
    maker = BatchMaker(data, cfg.trainer_cfg.sampler, cfg.trainer_cfg.transform, world_size=ranks)
    model = build_model(cfg.model_cfg)
    if sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(device)
    losses = LossAggregator(cfg.loss_cfg).to(device)
    optimizer = build_optimizer(model, cfg.optimizer_cfg)
    dtype = autocast_dtype(True, device) if amp else None
    scaler = make_scaler(dtype, device)
    batch = maker.make(0)
    share = len(batch[1])
    train_step(model, losses, optimizer, scaler, batch, device, dtype)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        train_step(model, losses, optimizer, scaler, batch, device, dtype)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps, share


AMP_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def traced_step_peak(cfg: TrainConfig, batch: tuple, amp_dtype: torch.dtype | None) -> int:
    """Peak bytes of one step's tensors (parameters, gradients, optimizer state, activations) on fake tensors."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.distributed._tools.mem_tracker import MemTracker
    x, labels, lengths = batch
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        model = build_model(cfg.model_cfg)
        optimizer = build_optimizer(model, cfg.optimizer_cfg)
        x = mode.from_tensor(x)
        tracker = MemTracker()
        tracker.track_external(model, optimizer)
        with tracker:
            optimizer.zero_grad(set_to_none=True)
            context = torch.autocast("cpu", dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()
            with context:
                outputs = model(x, lengths)
            sum(t.float().sum() for t in outputs).backward()
            optimizer.step()
        return tracker.get_tracker_snapshot("peak")[torch.device("cpu")]["Total"]


def measured_step_peak(cfg: TrainConfig, batch: tuple, device: torch.device, amp_dtype: torch.dtype | None) -> int:
    """Peak bytes allocated on the GPU by a warm-up and a measured `train_step` at this batch."""
    model = build_model(cfg.model_cfg).to(device)
    losses = LossAggregator(cfg.loss_cfg).to(device)
    optimizer = build_optimizer(model, cfg.optimizer_cfg)
    scaler = make_scaler(amp_dtype, device)
    train_step(model, losses, optimizer, scaler, batch, device, amp_dtype)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats(device)
    train_step(model, losses, optimizer, scaler, batch, device, amp_dtype)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated(device)
    del model, losses, optimizer
    torch.cuda.empty_cache()
    return peak


def print_memory(models: list[str], widths: str, batch: tuple[int, int], frames: int, ranks: list[int],
                 device: torch.device) -> None:
    """One line per model and rank count: the peak GiB of a rank's step in fp32, bf16 and fp16 AMP."""
    how = "CUDA max_memory_allocated" if device.type == "cuda" else "MemTracker over fake tensors"
    print(f"peak memory of one rank's step, global batch {batch[0]}x{batch[1]} of {frames} frames, {widths} "
          f"widths ({how})")
    for model in models:
        cfg = config_for(model, widths, batch, frames)
        columns = input_columns(cfg.model_cfg["model"], cfg.data_cfg.data_in_use)
        data = fake_sequences(columns, CLASSES, 6, np.random.default_rng(0))
        for n in ranks:
            rank_batch = BatchMaker(data, cfg.trainer_cfg.sampler, cfg.trainer_cfg.transform, world_size=n).make(0)
            figures = []
            for name, dtype in AMP_DTYPES.items():
                try:
                    peak = (measured_step_peak(cfg, rank_batch, device, dtype) if device.type == "cuda"
                            else traced_step_peak(cfg, rank_batch, dtype))
                    figures.append(f"{name} {peak / 2**30:6.2f} GiB")
                except torch.OutOfMemoryError:
                    torch.cuda.empty_cache()
                    figures.append(f"{name} out of memory")
            print(f"{model:>15}: {n} rank(s), {len(rank_batch[1])} sequences per rank | {' | '.join(figures)}")


def one_rank_group() -> None:
    """A process group of this process alone, so SyncBatchNorm can run."""
    store = torch.distributed.FileStore(tempfile.mktemp(prefix="ray_gait_bench_"), 1)
    torch.distributed.init_process_group("nccl", store=store, rank=0, world_size=1)


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="skeletongait,skeletongait++")
    parser.add_argument("--batch", default="32x4")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--widths", default="tiny", choices=["tiny", "seed"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", action="store_true")
    parser.add_argument("--sync-bn", action="store_true")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--input-threads", type=int, default=1,
                        help="prefetch threads building batches (data_cfg.num_workers), default 1")
    parser.add_argument("--ranks", default="1",
                        help="measure one rank of an N-rank run (its share of the P x K batch), default 1; "
                             "with --memory a comma-separated list")
    parser.add_argument("--memory", action="store_true",
                        help="print the peak memory of a rank's step in fp32 / bf16 / fp16 instead of rates")
    args = parser.parse_args()
    try:
        ranks = [int(v) for v in args.ranks.split(",")]
    except ValueError:
        parser.error(f"--ranks takes whole numbers, not {args.ranks!r}")
    if min(ranks) < 1 or (len(ranks) > 1 and not args.memory):
        parser.error("--ranks must be >= 1 (a list only with --memory)")
    p, k = (int(v) for v in args.batch.split("x"))
    device = torch.device(args.device)
    if args.memory:
        print_memory(args.models.split(","), args.widths, (p, k), args.frames, ranks, device)
        return
    args.ranks = ranks[0]
    if args.sync_bn and device.type != "cuda":
        parser.error("--sync-bn needs --device cuda (torch's SyncBatchNorm runs on GPUs only)")
    if args.sync_bn:
        one_rank_group()
    cores = os.cpu_count() or 1
    print(f"batch {p}x{k} of {args.frames} frames ({args.ranks} rank(s), one measured), {args.widths} widths, {device}, "
          f"{'AMP' if args.amp else 'fp32'}{', SyncBN (1 rank)' if args.sync_bn else ''}, {cores} cores")
    for model in args.models.split(","):
        cfg = config_for(model, args.widths, (p, k), args.frames)
        columns = input_columns(cfg.model_cfg["model"], cfg.data_cfg.data_in_use)
        data = fake_sequences(columns, CLASSES, 6, np.random.default_rng(0))
        delivered = input_rate(cfg, data, max(args.steps, 2 * args.input_threads), args.input_threads, args.ranks)
        try:
            seconds, share = step_seconds(cfg, data, device, args.amp, args.sync_bn, args.steps, args.ranks)
        except torch.OutOfMemoryError:
            print(f"{model:>15}: input {delivered:8.1f} sequences/s | step: out of {device} memory at "
                  f"{p * k // args.ranks} sequences x {args.frames} frames in {'AMP' if args.amp else 'fp32'} "
                  f"(P x K is the global batch: try --ranks N or --amp)")
            if device.type == "cuda":
                torch.cuda.empty_cache()
            continue
        consumed = share / seconds
        print(f"{model:>15}: input {delivered:8.1f} sequences/s with {args.input_threads} thread(s) | step "
              f"{seconds:7.3f} s = {consumed:8.1f} sequences/s | ratio {delivered / consumed:6.2f}")


if __name__ == "__main__":
    main()
