"""Training state on disk: model, optimizer, scheduler, scaler, iteration, RNG states, config.

One folder per checkpoint holding `state.pt` (read back with weights_only=True: no code runs) and
`iteration.json` (so that the checkpoints of a run are listed without loading them). Folders may be
local paths or object-store URIs (the one filesystem layer, `ray_gait.io.fs`).
"""
from __future__ import annotations

import json
import os
import posixpath
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ray_gait.io import fs
from ray_gait.models.checkpoint import STATE_FILE, read_state

ITERATION_FILE = "iteration.json"


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
    """Write the state into `folder/state.pt` and its iteration into `folder/iteration.json` (a local folder)."""
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
    fs.write_bytes_atomic(fs.resolve(os.path.join(folder, ITERATION_FILE)),
                          json.dumps({"iteration": int(state.iteration)}).encode())
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


def saved_checkpoints(run_dir: str) -> list[tuple[int, str]]:
    """(iteration, folder) of every checkpoint saved under a run folder (a path or URI), by iteration.

    Iterations come from each checkpoint's iteration.json; only checkpoints older than that file are loaded.
    """
    root = fs.resolve(run_dir)
    if not fs.is_dir(root):
        return []
    files = set(fs.list_files(root))
    found = []
    for rel in sorted(files):
        if posixpath.basename(rel) != STATE_FILE:
            continue
        folder = posixpath.dirname(rel)
        marker = posixpath.join(folder, ITERATION_FILE) if folder else ITERATION_FILE
        location = root.join(folder) if folder else root
        if marker in files:
            iteration = int(json.loads(fs.read_bytes(root.join(marker)))["iteration"])
        else:
            iteration = int(read_state(location.uri)["iteration"])
        found.append((iteration, location.uri))
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
