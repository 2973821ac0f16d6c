"""A restricted unpickler for pose and silhouette files: numpy arrays in, nothing else executed."""
from __future__ import annotations

import io
import pickle
from typing import Any

import numpy as np

# The only globals a pickled ndarray (protocols 0-5) refers to.  Each builds an array or a dtype;
# none runs arbitrary code.  Everything else (os.system, builtins.eval, any class) is refused
# before it is looked up, so it is never imported or called.
_ALLOWED_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    # protocol 2 spells bytes as _codecs.encode(str, "latin1"): it only turns text into bytes
    ("_codecs", "encode"),
})


class UnsafePickleError(ValueError):
    """A pickle asked for something other than numpy arrays."""


class _ArrayOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise UnsafePickleError(f"refused to load {module}.{name}: only numpy arrays are accepted")

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("refused a persistent id: only numpy arrays are accepted")


def _check_arrays(obj: Any, where: str = "") -> None:
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            place = f" at {where}" if where else ""
            raise UnsafePickleError(f"array{place} has dtype object: only numeric arrays are accepted")
        return
    if isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj):
            _check_arrays(item, f"{where}[{i}]")
        return
    if isinstance(obj, dict):
        for key, item in obj.items():
            _check_arrays(item, f"{where}[{key!r}]")
        return
    place = f" at {where}" if where else ""
    raise UnsafePickleError(f"found a {type(obj).__name__}{place}: only numpy arrays are accepted")


def loads_restricted(data: bytes) -> Any:
    """Unpickle with no global but numpy's array builders: plain containers, numbers, text, arrays."""
    try:
        return _ArrayOnlyUnpickler(io.BytesIO(data)).load()
    except UnsafePickleError:
        raise
    except Exception as exc:  # truncated or corrupt streams raise many kinds of errors
        raise ValueError(f"corrupt or truncated pickle ({type(exc).__name__}: {exc})") from None


def loads_arrays(data: bytes) -> Any:
    """Unpickle bytes that hold a numpy array (or lists/tuples/dicts of arrays), refusing anything else."""
    obj = loads_restricted(data)
    _check_arrays(obj)
    return obj
