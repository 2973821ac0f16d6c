"""Training state on disk: model, optimizer, scheduler, scaler, iteration, RNG states, config.

One folder per checkpoint holding `state.pt` (read back with weights_only=True: no code runs).
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

STATE_FILE = "state.pt"


@dataclass
class TrainState:
    """Everything a resumed run needs."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Any
    iteration: int = 0


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DDP (or the model itself)."""
    return model.module if hasattr(model, "module") else model


def save_state(folder: str, state: TrainState, config: dict[str, Any]) -> str:
    """Write the state into `folder/state.pt` (atomically); returns the file path."""
    os.makedirs(folder, exist_ok=True)
    payload = {
        "model": unwrap(state.model).state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "scaler": state.scaler.state_dict() if state.scaler is not None else {},
        "iteration": int(state.iteration),
        "rng": rng_states(),
        "config": config,
    }
    path = os.path.join(folder, STATE_FILE)
    tmp = f"{path}.tmp"
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def rng_states() -> dict[str, Any]:
    """torch, numpy and Python global RNG states as plain data (loadable with weights_only=True)."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {"torch": torch.get_rng_state(),
            "numpy": {"keys": [int(k) for k in keys], "pos": int(pos), "has_gauss": int(has_gauss),
                      "cached_gaussian": float(cached)},
            "python": {"version": int(version), "state": list(internal), "gauss_next": gauss_next}}


def set_rng_states(rng: dict[str, Any]) -> None:
    """Restore what `rng_states` saved (older checkpoints saved only the key arrays: those are used as is)."""
    if "torch" in rng:
        torch.set_rng_state(rng["torch"])
    saved = rng.get("numpy")
    if isinstance(saved, dict):
        np.random.set_state(("MT19937", np.asarray(saved["keys"], dtype=np.uint32), saved["pos"],
                             saved["has_gauss"], saved["cached_gaussian"]))
    elif saved:
        np.random.set_state(("MT19937", np.asarray(saved, dtype=np.uint32), 624, 0, 0.0))
    saved = rng.get("python")
    if isinstance(saved, dict):
        random.setstate((saved["version"], tuple(saved["state"]), saved["gauss_next"]))
    elif saved:
        random.setstate((3, tuple(saved), None))


def read_state(folder_or_file: str) -> dict[str, Any]:
    """Load a saved state (weights only: tensors and plain containers)."""
    path = folder_or_file
    if os.path.isdir(path):
        path = os.path.join(path, STATE_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint at {folder_or_file} (expected {STATE_FILE})")
    return torch.load(path, map_location="cpu", weights_only=True)


def saved_checkpoints(run_dir: str) -> list[tuple[int, str]]:
    """(iteration, folder) of every checkpoint saved under a run folder, by iteration."""
    found = []
    for root, _, files in os.walk(run_dir):
        if STATE_FILE in files:
            found.append((int(read_state(root)["iteration"]), root))
    return sorted(found)


def restore_state(state: TrainState, saved: dict[str, Any], strict: bool = True, reset_optimizer: bool = False,
                  reset_scheduler: bool = False) -> None:
    """Load a saved state into the live objects (OpenGait's optimizer_reset / scheduler_reset honoured)."""
    unwrap(state.model).load_state_dict(saved["model"], strict=strict)
    if not reset_optimizer and saved.get("optimizer"):
        state.optimizer.load_state_dict(saved["optimizer"])
    if not reset_scheduler and saved.get("scheduler"):
        state.scheduler.load_state_dict(saved["scheduler"])
    if state.scaler is not None and saved.get("scaler"):
        state.scaler.load_state_dict(saved["scaler"])
    state.iteration = int(saved["iteration"])
    set_rng_states(saved.get("rng") or {})
