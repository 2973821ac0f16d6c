"""Optimizer and learning-rate schedule from `optimizer_cfg` / `scheduler_cfg` (OpenGait's keys)."""
from __future__ import annotations

import logging
from typing import Any, Mapping

import torch
from torch import nn

from ray_gait.registry import checked_arguments, lookup
from ray_gait.yaml_config import read_yaml
from ray_gait.config import DEFAULT_PATH

log = logging.getLogger(__name__)

SOLVERS = {"SGD": torch.optim.SGD, "Adam": torch.optim.Adam, "AdamW": torch.optim.AdamW}
SCHEDULERS = {"MultiStepLR": torch.optim.lr_scheduler.MultiStepLR,
              "CosineAnnealingLR": torch.optim.lr_scheduler.CosineAnnealingLR}


def _defaults(section: str) -> dict[str, Any]:
    return read_yaml(DEFAULT_PATH).get(section, {})


def build_optimizer(model: nn.Module, cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    """SGD, Adam or AdamW over the trainable parameters."""
    solver = lookup(SOLVERS, cfg.get("solver", "SGD"), "optimizer_cfg.solver")
    args = checked_arguments(solver, cfg, "optimizer_cfg", skip=("solver", "warmup_iter"), bound=("params",),
                             inherited=_defaults("optimizer_cfg"))
    return solver([p for p in model.parameters() if p.requires_grad], **args)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: Mapping[str, Any],
                    total_iter: int) -> torch.optim.lr_scheduler.LRScheduler:
    """MultiStepLR or CosineAnnealingLR, stepped once per iteration, after `warmup_iter` linear warm-up."""
    name = cfg.get("scheduler", "MultiStepLR")
    args = checked_arguments(lookup(SCHEDULERS, name, "scheduler_cfg.scheduler"), cfg, "scheduler_cfg",
                             skip=("scheduler", "warmup_iter"), bound=("optimizer",),
                             inherited=_defaults("scheduler_cfg"))
    warmup = int(cfg.get("warmup_iter", 0))
    if name == "CosineAnnealingLR":
        args.setdefault("T_max", max(1, total_iter - warmup))
    main = SCHEDULERS[name](optimizer, **args)
    if warmup <= 0:
        return main
    ramp = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0 / warmup, total_iters=warmup)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [ramp, main], milestones=[warmup])
