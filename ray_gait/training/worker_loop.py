"""The per-worker training loop as a plain function: batches in, reports and checkpoints out.

Ray Train runs it on every worker (ray_gait/ray_layer/trainer.py supplies `report`, DDP wrapping
and the checkpoint to resume from); a test or a notebook runs it in-process with a callback.
"""
from __future__ import annotations

import logging
import resource
import shutil
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn

from ray_gait.evaluation.config_protocol import evaluate_embeddings, rank1_summary
from ray_gait.evaluation.embed import SequenceEmbedder
from ray_gait.io import fs
from ray_gait.models import build_model
from ray_gait.config import TrainConfig
from ray_gait.data.batches import BatchMaker, input_threads, prefetch
from ray_gait.data.sources import SequenceSource
from ray_gait.training.events import ScalarEvents
from ray_gait.training.losses import LossAggregator
from ray_gait.models.precision import autocast_dtype
from ray_gait.training.loop import make_scaler, set_train_mode, train_step, with_sync_bn
from ray_gait.training.optim import build_optimizer, build_scheduler
from ray_gait.training.state import TrainState, restore_state, save_state
from ray_gait.models.checkpoint import read_state

log = logging.getLogger(__name__)

Report = Callable[[dict[str, float], "str | None"], None]
"""(metrics, checkpoint folder or None): called by every rank at every log_iter and save_iter; the
folder (rank 0, at save_iter) holds `state.pt` and lives only during the call."""


@dataclass
class LoopContext:
    """Where this worker runs and what it starts from."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    wrap_model: Callable[[nn.Module], nn.Module] = lambda model: model
    resume_from: str | None = None
    restore_from: str | None = None
    tensorboard_dir: str | None = None


def _evaluate(model: nn.Module, cfg: TrainConfig, device: torch.device, split: str,
              source: SequenceSource) -> dict[str, float]:
    """`<split>/<condition>/rank1` and `<split>/rank1` of the current weights on a whole split."""
    embedded, unreadable = SequenceEmbedder(model, cfg, device).embed_readable(source)
    for reason in unreadable.values():
        log.warning("%s: left out of the evaluation: %s", split, reason)
    kept = sorted(embedded)
    if not kept:
        raise ValueError(f"{split}: no sequence can be read ({next(iter(unreadable.values()), 'empty split')})")
    result = evaluate_embeddings(cfg, np.stack([embedded[i] for i in kept]), [source.keys[i] for i in kept])
    return {**rank1_summary(result, split), f"{split}/unreadable": float(len(unreadable))}


class _TensorBoard:
    """Rank 0's TensorBoard events: written to a local folder, copied to the run's folder (a path or URI) at each write."""

    def __init__(self, target: str, iteration: int) -> None:
        self.local = tempfile.mkdtemp(prefix="ray_gait_tensorboard_")
        self.target = fs.resolve(target)
        self.writer = ScalarEvents(self.local, purge_step=iteration)

    def write(self, metrics: Mapping[str, float], iteration: int) -> None:
        """Add one report's scalars and publish the event files."""
        self.writer.add({key if "/" in key else f"train/{key}": value for key, value in metrics.items()}, iteration)
        fs.copy_tree(fs.resolve(self.local), self.target)

    def close(self) -> None:
        """Close the file and drop the local folder (every write was published)."""
        self.writer.close()
        shutil.rmtree(self.local, ignore_errors=True)


def _writer(ctx: LoopContext, iteration: int) -> _TensorBoard | None:
    if ctx.rank != 0 or not ctx.tensorboard_dir:
        return None
    return _TensorBoard(ctx.tensorboard_dir, iteration)


def train_loop(cfg: TrainConfig, config_tree: Mapping[str, Any], train: SequenceSource,
               evaluations: Mapping[str, SequenceSource], ctx: LoopContext, report: Report) -> TrainState:
    """Train from `train` (this rank's share of every P x K batch) to `total_iter`; rank 0 evaluates
    `evaluations` ({split name: source}) and writes the checkpoint at every save_iter."""
    trainer_cfg, device = cfg.trainer_cfg, ctx.device
    torch.manual_seed(trainer_cfg.seed)
    maker = BatchMaker(train, trainer_cfg.sampler, trainer_cfg.transform, seed=trainer_cfg.seed, rank=ctx.rank,
                       world_size=ctx.world_size)
    model = ctx.wrap_model(with_sync_bn(build_model(cfg.model_cfg), trainer_cfg.sync_BN, device, ctx.world_size))
    losses = LossAggregator(cfg.loss_cfg).to(device)
    optimizer = build_optimizer(model, cfg.optimizer_cfg)
    scheduler = build_scheduler(optimizer, dict(cfg.scheduler_cfg, warmup_iter=trainer_cfg.warmup_iter),
                                trainer_cfg.total_iter)
    amp_dtype = autocast_dtype(trainer_cfg.enable_float16, device)
    state = TrainState(model, optimizer, scheduler, make_scaler(amp_dtype, device))
    if ctx.resume_from:
        restore_state(state, read_state(ctx.resume_from))
    elif ctx.restore_from:
        restore_state(state, read_state(ctx.restore_from), strict=trainer_cfg.restore_ckpt_strict,
                      reset_optimizer=trainer_cfg.optimizer_reset, reset_scheduler=trainer_cfg.scheduler_reset)
    threads = input_threads(cfg.data_cfg.num_workers, device.type,
                            float(cfg.ray_cfg.worker_resources().get("CPU", 0.0)))
    writer = _writer(ctx, state.iteration)
    if ctx.rank == 0:
        log.info("training %s on %d sequences of %d ids, %d worker(s) on %s (%d input thread(s) each), "
                 "from iteration %d to %d", cfg.model_cfg["model"], len(train.labels), maker.num_classes,
                 ctx.world_size, device.type, threads, state.iteration, trainer_cfg.total_iter)
    started, steps, seqs, wait = time.perf_counter(), 0, 0, 0.0
    sums: dict[str, float] = {}
    try:
        for step, batch, waited in prefetch(maker, state.iteration, trainer_cfg.total_iter,
                                            workers=threads):
            set_train_mode(model, trainer_cfg.fix_BN)
            info = train_step(model, losses, optimizer, state.scaler, batch, device, amp_dtype)
            scheduler.step()
            state.iteration = step + 1
            steps, wait = steps + 1, wait + waited
            seqs += batch[0].shape[0] if batch[2] is None else len(batch[2])
            for key, value in info.items():
                sums[key] = sums.get(key, 0.0) + value
            saving = state.iteration % trainer_cfg.save_iter == 0 or state.iteration == trainer_cfg.total_iter
            if not (state.iteration % trainer_cfg.log_iter == 0 or saving):
                continue
            elapsed = time.perf_counter() - started
            metrics = {k: v / steps for k, v in sums.items()}
            metrics.update(iteration=state.iteration, lr=optimizer.param_groups[0]["lr"],
                           sequences_per_s=seqs * ctx.world_size / max(elapsed, 1e-9), data_wait_s=wait)
            metrics.update(_reader_metrics(train))
            if ctx.rank == 0:
                log.info("iter %d/%d  loss %.4f  acc %.3f  lr %.2e  %.1f seq/s  data wait %.2f s", state.iteration,
                         trainer_cfg.total_iter, metrics.get("loss", float("nan")),
                         metrics.get("softmax/accuracy", float("nan")), metrics["lr"], metrics["sequences_per_s"],
                         wait)
                if saving:
                    for split, source in evaluations.items():
                        found = _evaluate(model, cfg, device, split, source)
                        metrics.update(found)
                        log.info("iter %d %s: %s", state.iteration, split,
                                 "  ".join(f"{k} {v:.2f}" for k, v in found.items()))
            if writer is not None:
                writer.write(metrics, state.iteration)
            if saving and ctx.rank == 0:
                with tempfile.TemporaryDirectory() as folder:
                    save_state(folder, state, dict(config_tree))
                    report(metrics, folder)
            else:
                report(metrics, None)
            started, steps, seqs, wait, sums = time.perf_counter(), 0, 0, 0.0, {}
    finally:
        if writer is not None:
            writer.close()
    return state


def _reader_metrics(source: SequenceSource) -> dict[str, float]:
    """What the worker holds (its peak resident memory; a reader's cache), reported beside the losses."""
    out = {"worker/peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if hasattr(source, "peak_cached_bytes"):
        out.update({"data/cached_mib": source.cached_bytes / 2**20,
                    "data/peak_cached_mib": source.peak_cached_bytes / 2**20,
                    "data/reads": float(source.reads), "data/cache_hits": float(source.hits)})
    return out
