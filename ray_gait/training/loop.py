"""One training step and the precision policy (plain torch; Ray-free)."""
from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from ray_gait.training.losses import LossAggregator


def make_scaler(dtype: torch.dtype | None, device: torch.device) -> Any:
    """A gradient scaler for fp16 on CUDA (bf16 and fp32 need none)."""
    if dtype == torch.float16 and device.type == "cuda":
        return torch.amp.GradScaler("cuda")
    return None


def with_sync_bn(model: nn.Module, sync_bn: bool, device: torch.device, world_size: int) -> nn.Module:
    """SyncBatchNorm in place of BatchNorm when `sync_BN` is set, on CUDA, with more than one rank."""
    if sync_bn and device.type == "cuda" and world_size > 1:
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def set_train_mode(model: nn.Module, fix_bn: bool) -> None:
    """Training mode; with `fix_BN` the BatchNorm layers keep their running statistics (eval mode)."""
    model.train()
    if fix_bn:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def train_step(model: nn.Module, losses: LossAggregator, optimizer: torch.optim.Optimizer, scaler: Any,
               batch: tuple[torch.Tensor, torch.Tensor, list[int] | None], device: torch.device,
               amp_dtype: torch.dtype | None) -> dict[str, float]:
    """Forward, loss, backward and optimizer step on one batch; returns the logged loss terms."""
    x, labels, lengths = batch
    x, labels = x.to(device, non_blocking=True), labels.to(device, non_blocking=True)
    optimizer.zero_grad(set_to_none=True)
    context = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()
    with context:
        outputs = model(x, lengths)
    outputs = type(outputs)(*(t.float() for t in outputs))
    total, info = losses(outputs, labels)
    if scaler is not None:
        scaler.scale(total).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        total.backward()
        optimizer.step()
    info["loss"] = float(total.detach())
    return info
