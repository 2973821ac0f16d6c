"""Optimizer and learning-rate schedule from `optimizer_cfg` / `scheduler_cfg` (OpenGait's keys)."""
from __future__ import annotations

import inspect
import logging
from typing import Any, Mapping

import torch
from torch import nn

from ray_gait.yaml_config import ConfigError, read_yaml
from ray_gait.config import DEFAULT_PATH

log = logging.getLogger(__name__)

SOLVERS = {"SGD": torch.optim.SGD, "Adam": torch.optim.Adam, "AdamW": torch.optim.AdamW}
SCHEDULERS = {"MultiStepLR": torch.optim.lr_scheduler.MultiStepLR,
              "CosineAnnealingLR": torch.optim.lr_scheduler.CosineAnnealingLR}


def _defaults(section: str) -> dict[str, Any]:
    return read_yaml(DEFAULT_PATH).get(section, {})


def _checked_args(cls: type, cfg: Mapping[str, Any], name_key: str, section: str) -> dict[str, Any]:
    """Constructor arguments for cls; keys it does not take are errors unless inherited from the defaults."""
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "params", "optimizer"}
    inherited = _defaults(section)
    args = {}
    for key, value in cfg.items():
        if key in (name_key, "warmup_iter"):
            continue
        if key in accepted:
            args[key] = value
        elif inherited.get(key) == value:
            log.debug("%s.%s=%r (a default) does not apply to %s", section, key, value, cls.__name__)
        else:
            raise ConfigError(f"{section}.{key}: {cls.__name__} takes no such argument "
                              f"(it takes {', '.join(sorted(accepted))})")
    return args


def build_optimizer(model: nn.Module, cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    """SGD, Adam or AdamW over the trainable parameters."""
    solver = cfg.get("solver", "SGD")
    if solver not in SOLVERS:
        raise ConfigError(f"optimizer_cfg.solver: {solver!r} is not one of {', '.join(SOLVERS)}")
    args = _checked_args(SOLVERS[solver], cfg, "solver", "optimizer_cfg")
    return SOLVERS[solver]([p for p in model.parameters() if p.requires_grad], **args)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: Mapping[str, Any],
                    total_iter: int) -> torch.optim.lr_scheduler.LRScheduler:
    """MultiStepLR or CosineAnnealingLR, stepped once per iteration, after `warmup_iter` linear warm-up."""
    name = cfg.get("scheduler", "MultiStepLR")
    if name not in SCHEDULERS:
        raise ConfigError(f"scheduler_cfg.scheduler: {name!r} is not one of {', '.join(SCHEDULERS)}")
    args = _checked_args(SCHEDULERS[name], cfg, "scheduler", "scheduler_cfg")
    warmup = int(cfg.get("warmup_iter", 0))
    if name == "CosineAnnealingLR":
        args.setdefault("T_max", max(1, total_iter - warmup))
    main = SCHEDULERS[name](optimizer, **args)
    if warmup <= 0:
        return main
    ramp = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0 / warmup, total_iters=warmup)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [ramp, main], milestones=[warmup])
