"""Read and write OpenGait checkpoints: ``{'model': state_dict, 'optimizer', 'scheduler', 'iteration'}``.

Loading never executes code: files go through ``torch.load(weights_only=True)``, which accepts
tensors and plain containers and refuses any other pickled object.
"""
from __future__ import annotations

import io
import os
import pickle
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from ray_gait.io import fs

# A checkpoint read from object storage is read into memory first: the largest accepted.
MAX_CHECKPOINT_BYTES = 64 * 2**30

__all__ = [
    "CheckpointError",
    "IncompatibleKeys",
    "check_weights",
    "export_opengait_checkpoint",
    "load_opengait_checkpoint",
    "load_weights",
    "read_weights_file",
]

_DDP_PREFIX = "module."
_MAX_LISTED = 20


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or whose weights do not fit the model."""


class IncompatibleKeys(NamedTuple):
    """Keys that did not match in a non-strict load."""

    missing_keys: list[str]
    unexpected_keys: list[str]


def read_weights_file(path: str) -> Any:
    """``torch.load(weights_only=True)`` of a file (a path or URI) on the CPU: tensors and plain containers only.

    Raises ``FileNotFoundError``, or ``CheckpointError`` naming the file for anything else that is not a
    readable weights file (torch's loader raises KeyError, EOFError, RuntimeError... on arbitrary bytes).
    """
    loc = fs.resolve(path)
    if not fs.exists(loc) or fs.is_dir(loc):
        raise FileNotFoundError(f"checkpoint not found: {loc.uri}")
    source = loc.path if loc.is_local else io.BytesIO(fs.read_bytes(loc, limit=MAX_CHECKPOINT_BYTES))
    try:
        return torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{loc.uri}: refused, not a plain weights file (it would need to run code to "
                              f"load): {first_line}") from err
    except Exception as err:
        raise CheckpointError(f"{loc.uri}: not a readable torch checkpoint ({type(err).__name__}: {err})") from err


def load_opengait_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load an OpenGait checkpoint on the CPU with ``weights_only=True``.

    Returns ``{'model': state_dict, 'optimizer': dict, 'scheduler': dict, 'iteration': int}``; a file
    holding a bare state_dict is returned in that form (empty optimizer/scheduler, iteration 0).
    Raises ``FileNotFoundError`` or ``CheckpointError``, naming the file.
    """
    path = fs.resolve(os.fspath(path)).uri
    obj = read_weights_file(path)
    if isinstance(obj, Mapping) and "model" in obj:
        if not isinstance(obj["model"], Mapping):
            raise CheckpointError(f"{path}: 'model' is a {type(obj['model']).__name__}, not a state_dict")
        return {
            "model": obj["model"],
            "optimizer": obj.get("optimizer", {}),
            "scheduler": obj.get("scheduler", {}),
            "iteration": int(obj.get("iteration", 0)),
        }
    if isinstance(obj, Mapping) and obj and all(isinstance(v, Tensor) for v in obj.values()):
        return {"model": obj, "optimizer": {}, "scheduler": {}, "iteration": 0}
    raise CheckpointError(f"{path}: not an OpenGait checkpoint (expected a dict with a 'model' state_dict)")


def _strip_ddp_prefix(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Drop a leading ``module.`` (DistributedDataParallel) when every key has it."""
    if state and all(k.startswith(_DDP_PREFIX) for k in state):
        return OrderedDict((k[len(_DDP_PREFIX):], v) for k, v in state.items())
    return OrderedDict(state)


def _listed(keys: list[str]) -> str:
    """Format a key list for an error message, cut after ``_MAX_LISTED`` entries."""
    shown = ", ".join(keys[:_MAX_LISTED])
    more = len(keys) - _MAX_LISTED
    return shown + (f", ... ({more} more)" if more > 0 else "")


def check_weights(model: nn.Module, state: Mapping[str, Any], strict: bool = True,
                  source: str = "state_dict") -> IncompatibleKeys:
    """Whether a state_dict fits ``model`` (a model on the meta device will do: only shapes are read).

    A ``module.`` prefix (DDP) is stripped. Shape mismatches always raise ``CheckpointError``; with
    ``strict=True`` missing or unexpected keys raise too, with ``strict=False`` they are returned.
    Errors name ``source`` and the keys.
    """
    state = _strip_ddp_prefix(state)
    target = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    own = target.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    bad_shapes = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                  for k, v in state.items()
                  if k in own and isinstance(v, Tensor) and v.shape != own[k].shape]
    problems = []
    if bad_shapes:
        problems.append(f"shape mismatch for {_listed(bad_shapes)}")
    if strict and missing:
        problems.append(f"missing keys: {_listed(missing)}")
    if strict and unexpected:
        problems.append(f"unexpected keys: {_listed(unexpected)}")
    if problems:
        raise CheckpointError(f"{source} does not fit {type(target).__name__}: " + "; ".join(problems))
    return IncompatibleKeys(missing, unexpected)


def load_weights(
    model: nn.Module,
    path_or_state: str | os.PathLike | Mapping[str, Any],
    strict: bool = True,
    source: str | None = None,
) -> IncompatibleKeys:
    """Load weights into ``model`` from a checkpoint path, an OpenGait checkpoint dict or a state_dict.

    Checked first by ``check_weights`` (errors name ``source``, else the path or "state_dict").
    """
    if isinstance(path_or_state, (str, os.PathLike)):
        name = str(path_or_state)
        state = load_opengait_checkpoint(path_or_state)["model"]
    elif isinstance(path_or_state, Mapping):
        name = "state_dict"
        state = path_or_state
        if "model" in state and isinstance(state["model"], Mapping):
            name, state = "checkpoint dict", state["model"]
    else:
        raise TypeError(f"load_weights takes a path or a state_dict, got {type(path_or_state).__name__}")
    keys = check_weights(model, state, strict, source or name)
    state = _strip_ddp_prefix(state)
    target = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    unexpected = set(keys.unexpected_keys)
    target.load_state_dict({k: v for k, v in state.items() if k not in unexpected}, strict=False)
    return keys


def export_opengait_checkpoint(
    model_state: Mapping[str, Tensor] | nn.Module,
    out_path: str | os.PathLike,
    optimizer_state: Mapping[str, Any] | None = None,
    scheduler_state: Mapping[str, Any] | None = None,
    iteration: int = 0,
) -> str:
    """Write ``{'model', 'optimizer', 'scheduler', 'iteration'}`` to ``out_path`` (a path or URI) atomically; return it.

    ``model_state`` may be a module (its ``state_dict()``); a DDP ``module.`` prefix is stripped and
    tensors are moved to the CPU. The file is written under a temporary name, then renamed.
    """
    if isinstance(model_state, nn.Module):
        if isinstance(model_state, nn.parallel.DistributedDataParallel):
            model_state = model_state.module
        model_state = model_state.state_dict()
    state = OrderedDict((k, v.detach().cpu()) for k, v in _strip_ddp_prefix(model_state).items())
    checkpoint = {
        "model": state,
        "optimizer": dict(optimizer_state) if optimizer_state is not None else {},
        "scheduler": dict(scheduler_state) if scheduler_state is not None else {},
        "iteration": int(iteration),
    }
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    loc = fs.resolve(os.fspath(out_path))
    fs.write_bytes_atomic(loc, buffer.getvalue())
    if loc.is_local:
        os.chmod(loc.path, 0o644)
    return loc.uri


STATE_FILE = "state.pt"
"""The file of a ray_gait checkpoint folder that holds its state (model, optimizer, scheduler, iteration, config)."""


def read_state(folder_or_file: str) -> dict[str, Any]:
    """Load a saved state, from a folder or its state.pt, a path or a URI (weights only: tensors and plain data)."""
    loc = fs.resolve(folder_or_file)
    if fs.is_dir(loc):
        loc = loc.join(STATE_FILE)
    if not fs.exists(loc):
        raise FileNotFoundError(f"no checkpoint at {folder_or_file} (expected {STATE_FILE})")
    saved = read_weights_file(loc.uri)
    if not (isinstance(saved, dict) and isinstance(saved.get("model"), dict) and "iteration" in saved):
        raise CheckpointError(f"{loc.uri}: not a ray_gait checkpoint (expected a dict with 'model' and 'iteration')")
    return saved
