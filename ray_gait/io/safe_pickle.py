"""Pose and silhouette pickles read without unpickling.

A pickle is a program for a stack machine; `pickle.Unpickler` runs it, calling whatever globals it
names with whatever state it carries (numpy's `_reconstruct` and `dtype.__setstate__` included, which
trust their arguments).  This module runs the program itself instead: it knows the opcodes that
plain containers, numbers and text need, and numpy's recipes for an array (`_reconstruct` + state,
or `_frombuffer`), a dtype and a scalar, as symbols.  Nothing named in the file is imported or
called.  An array is built by `np.frombuffer` from its exact data bytes, of an allowlisted plain
numeric dtype, with shape x itemsize equal to the bytes given; the input's size, the number of
opcodes, the memo, the nesting depth and the bytes derived from the input are bounded.
"""
from __future__ import annotations

import io
import math
import pickletools
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ray_gait.io.fs import MAX_READ_BYTES

# Plain numeric dtypes, as numpy names them in a pickle (`dtype("f4", False, True)`).
ALLOWED_DTYPES = frozenset({"b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8"})
_BYTE_ORDERS = frozenset({"<", ">", "=", "|"})


@dataclass(frozen=True)
class Limits:
    """What one pickle may cost: input bytes, opcodes run, memo entries, container nesting, derived bytes."""

    max_bytes: int = MAX_READ_BYTES
    max_ops: int = 1_000_000
    max_memo: int = 1_000_000
    max_depth: int = 32
    derived_bytes_per_input_byte: int = 4


DEFAULT_LIMITS = Limits()


class UnsafePickleError(ValueError):
    """A pickle asked for something other than numpy arrays, or for more than the limits allow."""


@dataclass(frozen=True)
class _Global:
    """An allowlisted global, by its role: reconstruct, frombuffer, scalar, ndarray, dtype, encode, bytes."""

    role: str


_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): "reconstruct",
    ("numpy._core.multiarray", "_reconstruct"): "reconstruct",
    ("numpy.core.multiarray", "scalar"): "scalar",
    ("numpy._core.multiarray", "scalar"): "scalar",
    ("numpy.core.numeric", "_frombuffer"): "frombuffer",
    ("numpy._core.numeric", "_frombuffer"): "frombuffer",
    ("numpy", "ndarray"): "ndarray",
    ("numpy", "dtype"): "dtype",
    # protocols 0-2 spell bytes as _codecs.encode(text, "latin1"), and empty bytes as bytes()
    ("_codecs", "encode"): "encode",
    ("__builtin__", "bytes"): "bytes",
    ("builtins", "bytes"): "bytes",
}


class _DtypeRecipe:
    """`numpy.dtype(name)` whose byte order a later BUILD may set."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.order = "="

    def dtype(self) -> np.dtype:
        """The numpy dtype this recipe stands for."""
        return np.dtype(self.name).newbyteorder(self.order) if self.order in "<>" else np.dtype(self.name)


class _PendingArray:
    """`_reconstruct(ndarray, ...)`: an array whose shape, dtype and data a later BUILD gives."""

    def __init__(self) -> None:
        self.array: np.ndarray | None = None


class _Machine:
    """The stack machine for one pickle; `run` returns the object STOP leaves."""

    def __init__(self, data: bytes, limits: Limits) -> None:
        self.data = data
        self.limits = limits
        self.stack: list[Any] = []
        self.marks: list[int] = []
        self.memo: dict[int, Any] = {}
        self.derived = 0
        self.derived_limit = limits.derived_bytes_per_input_byte * len(data) + 2**20

    def run(self) -> Any:
        ops = 0
        for opcode, arg, pos in pickletools.genops(io.BytesIO(self.data)):
            ops += 1
            if ops > self.limits.max_ops:
                raise UnsafePickleError(f"more than {self.limits.max_ops} opcodes")
            handler = _HANDLERS.get(opcode.name)
            if handler is None:
                raise UnsafePickleError(f"opcode {opcode.name} at byte {pos} is not allowed: "
                                        "only numpy arrays and plain containers are accepted")
            if opcode.name == "STOP":
                if len(self.stack) != 1 or self.marks:
                    raise ValueError("STOP with an unbalanced stack")
                return self.stack[0]
            handler(self, arg)
        raise ValueError("no STOP opcode")

    def pop(self) -> Any:
        if not self.stack or (self.marks and self.marks[-1] == len(self.stack)):
            raise ValueError("stack underflow")
        return self.stack.pop()

    def pop_mark(self) -> list[Any]:
        if not self.marks:
            raise ValueError("no MARK to pop to")
        start = self.marks.pop()
        items = self.stack[start:]
        del self.stack[start:]
        return items

    def push(self, value: Any) -> None:
        self.stack.append(value)

    def charge(self, nbytes: int) -> None:
        self.derived += nbytes
        if self.derived > self.derived_limit:
            raise UnsafePickleError(f"the file asks for more than {self.derived_limit} bytes of arrays and "
                                    f"byte strings from {len(self.data)} bytes of input")

    def memo_put(self, index: int) -> None:
        if not self.stack:
            raise ValueError("memoizing an empty stack")
        if index not in self.memo and len(self.memo) >= self.limits.max_memo:
            raise UnsafePickleError(f"more than {self.limits.max_memo} memo entries")
        self.memo[index] = self.stack[-1]

    def memo_get(self, index: int) -> None:
        if index not in self.memo:
            raise ValueError(f"memo entry {index} was never stored")
        self.push(self.memo[index])


def _text(value: Any, what: str) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode("ascii")
        except UnicodeDecodeError:
            raise UnsafePickleError(f"{what} is not ASCII text") from None
    if not isinstance(value, str):
        raise UnsafePickleError(f"{what} must be text, found {type(value).__name__}")
    return value


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UnsafePickleError(f"{what} must be an integer, found {type(value).__name__}")
    return value


def _dtype_of(value: Any, what: str) -> np.dtype:
    if not isinstance(value, _DtypeRecipe):
        raise UnsafePickleError(f"{what} must be a numpy dtype, found {type(value).__name__}")
    return value.dtype()


def _shape_of(value: Any) -> tuple[int, ...]:
    if not isinstance(value, tuple):
        raise UnsafePickleError(f"an array's shape must be a tuple, found {type(value).__name__}")
    shape = tuple(_int(v, "a shape entry") for v in value)
    if any(v < 0 for v in shape):
        raise UnsafePickleError(f"negative array dimension in shape {shape}")
    return shape


def _array_from_bytes(machine: _Machine, data: Any, dtype: np.dtype, shape: tuple[int, ...],
                      fortran: bool) -> np.ndarray:
    if not isinstance(data, (bytes, bytearray)):
        raise UnsafePickleError(f"array data must be bytes, found {type(data).__name__}")
    expected = math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        raise UnsafePickleError(f"array of shape {shape} and dtype {dtype} needs {expected} data bytes, "
                                f"the file gives {len(data)}")
    machine.charge(expected)
    flat = np.frombuffer(bytes(data), dtype=dtype)
    return flat.reshape(shape, order="F" if fortran else "C").copy(order="F" if fortran else "C")


def _reduce(machine: _Machine, _arg: Any) -> None:
    args = machine.pop()
    func = machine.pop()
    if not isinstance(func, _Global) or not isinstance(args, tuple):
        raise UnsafePickleError("REDUCE of something other than an allowed numpy builder")
    if func.role == "reconstruct":
        if len(args) != 3 or not (isinstance(args[0], _Global) and args[0].role == "ndarray"):
            raise UnsafePickleError("_reconstruct of something other than numpy.ndarray")
        machine.push(_PendingArray())
    elif func.role == "dtype":
        if not 1 <= len(args) <= 3:
            raise UnsafePickleError("numpy.dtype with unexpected arguments")
        name = _text(args[0], "a dtype name")
        if name not in ALLOWED_DTYPES:
            raise UnsafePickleError(f"dtype {name!r} is not a plain numeric type "
                                    f"(allowed: {', '.join(sorted(ALLOWED_DTYPES))})")
        machine.push(_DtypeRecipe(name))
    elif func.role == "scalar":
        if len(args) != 2:
            raise UnsafePickleError("numpy scalar with unexpected arguments")
        dtype = _dtype_of(args[0], "a scalar's dtype")
        machine.push(_array_from_bytes(machine, args[1], dtype, (), False)[()])
    elif func.role == "frombuffer":
        if len(args) != 4:
            raise UnsafePickleError("_frombuffer with unexpected arguments")
        order = _text(args[3], "an array's order")
        if order not in ("C", "F"):
            raise UnsafePickleError(f"array order {order!r} is neither C nor F")
        dtype = _dtype_of(args[1], "an array's dtype")
        machine.push(_array_from_bytes(machine, args[0], dtype, _shape_of(args[2]), order == "F"))
    elif func.role == "encode":
        if len(args) != 2 or _text(args[1], "an encoding") != "latin1" or not isinstance(args[0], str):
            raise UnsafePickleError("_codecs.encode other than (text, 'latin1')")
        machine.charge(len(args[0]))
        try:
            machine.push(args[0].encode("latin1"))
        except UnicodeEncodeError:
            raise UnsafePickleError("latin1 bytes hold a character beyond 255") from None
    elif func.role == "bytes" and not args:
        machine.push(b"")
    else:
        raise UnsafePickleError(f"{func.role} with these arguments is not allowed here")


def _build_dtype(recipe: _DtypeRecipe, state: Any) -> None:
    # numpy's dtype state: (version, byte order, subarray, names, fields, elsize, alignment, flags[, metadata])
    if not isinstance(state, tuple) or len(state) not in (8, 9) or state[0] not in (3, 4):
        raise UnsafePickleError("dtype state of an unknown form")
    order = _text(state[1], "a dtype's byte order")
    if order not in _BYTE_ORDERS:
        raise UnsafePickleError(f"byte order {order!r} is not one of < > = |")
    plain = state[2] is None and state[3] is None and state[4] is None and state[5:8] == (-1, -1, 0)
    if not plain or (len(state) == 9 and state[8] not in (None, {})):
        raise UnsafePickleError(f"dtype {recipe.name!r} carries fields, a subarray, a size or flags: "
                                "only plain numeric dtypes are accepted")
    recipe.order = order


def _build_array(machine: _Machine, pending: _PendingArray, state: Any) -> None:
    # ndarray state: (version, shape, dtype, is_fortran, data)
    if pending.array is not None:
        raise UnsafePickleError("an array is built twice")
    if not isinstance(state, tuple) or len(state) != 5 or state[0] != 1:
        raise UnsafePickleError("ndarray state of an unknown form")
    _, shape, dtype, fortran, data = state
    if not isinstance(fortran, bool):
        raise UnsafePickleError("an array's order flag must be a bool")
    pending.array = _array_from_bytes(machine, data, _dtype_of(dtype, "an array's dtype"), _shape_of(shape),
                                      fortran)


def _build(machine: _Machine, _arg: Any) -> None:
    state = machine.pop()
    target = machine.stack[-1] if machine.stack else None
    if isinstance(target, _DtypeRecipe):
        _build_dtype(target, state)
    elif isinstance(target, _PendingArray):
        _build_array(machine, target, state)
    else:
        raise UnsafePickleError(f"BUILD of a {type(target).__name__}: only numpy arrays and dtypes are built")


def _global(machine: _Machine, module: str, name: str) -> None:
    role = _GLOBALS.get((module, name))
    if role is None:
        raise UnsafePickleError(f"refused to load {module}.{name}: only numpy arrays are accepted")
    machine.push(_Global(role))


def _stack_global(machine: _Machine, _arg: Any) -> None:
    name = machine.pop()
    module = machine.pop()
    _global(machine, _text(module, "a module name"), _text(name, "a global's name"))


def _text_global(machine: _Machine, arg: str) -> None:
    module, _, name = arg.partition(" ")
    _global(machine, module, name)


def _hashable_key(key: Any) -> Any:
    if isinstance(key, (str, bytes, int, float)) or key is None:
        return key
    raise UnsafePickleError(f"dict key of type {type(key).__name__}: only text and numbers are accepted")


def _set_items(machine: _Machine, items: list[Any]) -> None:
    if len(items) % 2:
        raise ValueError("odd number of items for a dict")
    target = machine.stack[-1] if machine.stack else None
    if not isinstance(target, dict):
        raise ValueError("SETITEMS on something other than a dict")
    for key, value in zip(items[::2], items[1::2]):
        target[_hashable_key(key)] = value


def _append_items(machine: _Machine, items: list[Any]) -> None:
    target = machine.stack[-1] if machine.stack else None
    if not isinstance(target, list):
        raise ValueError("APPEND on something other than a list")
    target.extend(items)


def _checked_int(value: int) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        raise UnsafePickleError("an integer wider than 64 bits")
    return value


def _charged_bytes(machine: _Machine, value: Any) -> Any:
    machine.charge(len(value))
    return value


def _constant(machine: _Machine, arg: Any) -> None:
    machine.push(_checked_int(arg) if isinstance(arg, int) else arg)


def _pop_mark_then(build: Callable[[list[Any]], Any]) -> Callable[[_Machine, Any], None]:
    def handler(machine: _Machine, _arg: Any) -> None:
        machine.push(build(machine.pop_mark()))
    return handler


def _tuple_of(n: int) -> Callable[[_Machine, Any], None]:
    def handler(machine: _Machine, _arg: Any) -> None:
        items = [machine.pop() for _ in range(n)][::-1]
        machine.push(tuple(items))
    return handler


def _dict_from(items: list[Any]) -> dict:
    if len(items) % 2:
        raise ValueError("odd number of items for a dict")
    return {_hashable_key(k): v for k, v in zip(items[::2], items[1::2])}


def _setitems(machine: _Machine, _arg: Any) -> None:
    _set_items(machine, machine.pop_mark())


def _setitem(machine: _Machine, _arg: Any) -> None:
    value = machine.pop()
    key = machine.pop()
    _set_items(machine, [key, value])


def _appends(machine: _Machine, _arg: Any) -> None:
    _append_items(machine, machine.pop_mark())


def _append(machine: _Machine, _arg: Any) -> None:
    _append_items(machine, [machine.pop()])


def _mark(machine: _Machine, _arg: Any) -> None:
    if len(machine.marks) >= machine.limits.max_depth * 4:
        raise UnsafePickleError(f"more than {machine.limits.max_depth * 4} open MARKs")
    machine.marks.append(len(machine.stack))


def _memoize(machine: _Machine, _arg: Any) -> None:
    machine.memo_put(len(machine.memo))


_HANDLERS: dict[str, Callable[[_Machine, Any], None]] = {
    "PROTO": lambda m, a: None,
    "FRAME": lambda m, a: None,
    "STOP": lambda m, a: None,
    "MARK": _mark,
    "POP": lambda m, a: m.pop(),
    "POP_MARK": lambda m, a: m.pop_mark(),
    "DUP": lambda m, a: m.push(m.stack[-1]) if m.stack else m.pop(),
    "NONE": lambda m, a: m.push(None),
    "NEWTRUE": lambda m, a: m.push(True),
    "NEWFALSE": lambda m, a: m.push(False),
    **{name: _constant for name in ("INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4",
                                    "FLOAT", "BINFLOAT", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE",
                                    "BINUNICODE8")},
    **{name: (lambda m, a: m.push(_charged_bytes(m, bytes(a.encode("latin1") if isinstance(a, str) else a))))
       for name in ("STRING", "BINSTRING", "SHORT_BINSTRING")},
    **{name: (lambda m, a: m.push(a)) for name in ("BINBYTES", "SHORT_BINBYTES", "BINBYTES8")},
    "BYTEARRAY8": lambda m, a: m.push(bytes(a)),
    "EMPTY_LIST": lambda m, a: m.push([]),
    "EMPTY_TUPLE": lambda m, a: m.push(()),
    "EMPTY_DICT": lambda m, a: m.push({}),
    "LIST": _pop_mark_then(list),
    "TUPLE": _pop_mark_then(tuple),
    "DICT": _pop_mark_then(_dict_from),
    "TUPLE1": _tuple_of(1),
    "TUPLE2": _tuple_of(2),
    "TUPLE3": _tuple_of(3),
    "APPEND": _append,
    "APPENDS": _appends,
    "SETITEM": _setitem,
    "SETITEMS": _setitems,
    "PUT": lambda m, a: m.memo_put(_int(a, "a memo index")),
    "BINPUT": lambda m, a: m.memo_put(a),
    "LONG_BINPUT": lambda m, a: m.memo_put(a),
    "MEMOIZE": _memoize,
    "GET": lambda m, a: m.memo_get(_int(a, "a memo index")),
    "BINGET": lambda m, a: m.memo_get(a),
    "LONG_BINGET": lambda m, a: m.memo_get(a),
    "GLOBAL": _text_global,
    "STACK_GLOBAL": _stack_global,
    "REDUCE": _reduce,
    "BUILD": _build,
}


def _resolve(obj: Any, limits: Limits) -> Any:
    """Replace built arrays for their recipes, check nesting depth and refuse cycles and leftovers."""
    done: dict[int, tuple[Any, int]] = {}
    active: set[int] = set()

    def visit(node: Any, depth: int) -> tuple[Any, int]:
        if isinstance(node, _PendingArray):
            if node.array is None:
                raise UnsafePickleError("an array was declared and never given its data")
            return node.array, 0
        if isinstance(node, (_DtypeRecipe, _Global)):
            raise UnsafePickleError(f"a bare {type(node).__name__.strip('_')} in the result: only arrays are accepted")
        if not isinstance(node, (list, tuple, dict)):
            return node, 0
        key = id(node)
        if key in active:
            raise UnsafePickleError("a container holds itself (cyclic reference)")
        if key in done:
            value, height = done[key]
            if depth + height > limits.max_depth:
                raise UnsafePickleError(f"containers nested deeper than {limits.max_depth}")
            return value, height
        if depth >= limits.max_depth:
            raise UnsafePickleError(f"containers nested deeper than {limits.max_depth}")
        active.add(key)
        height = 0
        if isinstance(node, dict):
            out: Any = {}
            for k, v in node.items():
                out[k], h = visit(v, depth + 1)
                height = max(height, h)
        else:
            items = []
            for v in node:
                item, h = visit(v, depth + 1)
                items.append(item)
                height = max(height, h)
            out = items if isinstance(node, list) else tuple(items)
        active.discard(key)
        done[key] = (out, height + 1)
        return out, height + 1

    return visit(obj, 0)[0]


def loads_restricted(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Any:
    """Read a pickle of plain containers, numbers, text and numpy arrays without unpickling it."""
    if len(data) > limits.max_bytes:
        raise UnsafePickleError(f"the file has {len(data)} bytes, more than the limit of {limits.max_bytes}")
    try:
        return _resolve(_Machine(bytes(data), limits).run(), limits)
    except UnsafePickleError:
        raise
    except (ValueError, TypeError, IndexError, KeyError, OverflowError, EOFError, UnicodeDecodeError) as exc:
        raise ValueError(f"corrupt or truncated pickle ({type(exc).__name__}: {exc})") from None


def _check_arrays(obj: Any) -> None:
    todo: list[tuple[Any, str]] = [(obj, "")]
    while todo:
        node, where = todo.pop()
        if isinstance(node, np.ndarray):
            continue
        if isinstance(node, (list, tuple)):
            todo.extend((item, f"{where}[{i}]") for i, item in enumerate(node))
        elif isinstance(node, dict):
            todo.extend((item, f"{where}[{key!r}]") for key, item in node.items())
        else:
            place = f" at {where}" if where else ""
            raise UnsafePickleError(f"found a {type(node).__name__}{place}: only numpy arrays are accepted")


def loads_arrays(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Any:
    """Read a pickle that holds a numpy array (or lists/tuples/dicts of arrays), refusing anything else."""
    obj = loads_restricted(data, limits)
    _check_arrays(obj)
    return obj
