"""A corpus of pickles made to break a loader, assembled opcode by opcode.

Each entry is (name, bytes, reason): `reason` is a regular expression the loader's error must match.
The attacks are the ones reproduced on the old loader (numpy's own reconstruct and dtype state behind a
restricted `pickle.Unpickler`): a dtype hiding an object pointer (SIGSEGV when the array is freed), an
array with a shape and no data (uninitialised memory), zero strides (4 bytes -> 2,000,000 frames), a
huge memo index (gigabytes for 9 bytes), 100,000 nested lists (RecursionError), and friends.
"""
from __future__ import annotations

import struct

PROTO = b"\x80\x03"
STOP = b"."
MARK = b"("
TUPLE = b"t"
REDUCE = b"R"
BUILD = b"b"
NONE = b"N"
TRUE = b"\x88"
FALSE = b"\x89"


def glob(module: str, name: str) -> bytes:
    """GLOBAL opcode."""
    return b"c" + f"{module}\n{name}\n".encode()


def text(value: str) -> bytes:
    """BINUNICODE opcode."""
    raw = value.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def blob(value: bytes) -> bytes:
    """BINBYTES opcode."""
    return b"B" + struct.pack("<I", len(value)) + value


def integer(value: int) -> bytes:
    """BININT opcode."""
    return b"J" + struct.pack("<i", value)


def tup(*items: bytes) -> bytes:
    """A tuple of the given items (MARK ... TUPLE)."""
    return MARK + b"".join(items) + TUPLE


def dtype(name: str, order: str = "<", names: bytes = NONE, fields: bytes = NONE, elsize: int = -1,
          align: int = -1, flags: int = 0) -> bytes:
    """numpy.dtype(name) with a BUILD of the given state."""
    state = tup(integer(3), text(order), NONE, names, fields, integer(elsize), integer(align), integer(flags))
    return glob("numpy", "dtype") + tup(text(name), FALSE, TRUE) + REDUCE + state + BUILD


def array(shape: tuple[int, ...], dt: bytes, data: bytes, fortran: bool = False) -> bytes:
    """_reconstruct(ndarray, (0,), b'b') with a BUILD of (1, shape, dtype, fortran, data)."""
    head = glob("numpy._core.multiarray", "_reconstruct") + tup(glob("numpy", "ndarray"), tup(integer(0)),
                                                                 blob(b"b")) + REDUCE
    state = tup(integer(1), tup(*(integer(s) for s in shape)), dt, TRUE if fortran else FALSE, data)
    return head + state + BUILD


def pickle_of(body: bytes) -> bytes:
    """A whole protocol-3 pickle of one object."""
    return PROTO + body + STOP


def corpus() -> list[tuple[str, bytes, str]]:
    """Every attack: (name, pickle bytes, reason the loader must give)."""
    f4 = dtype("f4")
    hidden_object = dtype("O8", "|", flags=63)
    void_with_object = dtype("V16", "|", names=tup(text("a")),
                             fields=b"}" + text("a") + tup(hidden_object, integer(8)) + b"s",
                             elsize=16, align=1, flags=1)
    void_flags_cleared = dtype("V16", "|", names=tup(text("a")),
                               fields=b"}" + text("a") + tup(dtype("O8", "|"), integer(8)) + b"s",
                               elsize=16, align=1, flags=0)
    zero_strides = glob("numpy", "ndarray") + tup(tup(integer(2_000_000), integer(17), integer(3)), f4,
                                                  blob(b"\0\0\0\0"), integer(0),
                                                  tup(integer(0), integer(0), integer(0))) + REDUCE
    big = b"\x01" * 1_000_000
    reused = (PROTO + b"]" + blob(big) + b"q\x00" + b"0"   # [], memo 0 = 1 MB of bytes, popped
              + MARK + b"".join(glob("numpy._core.numeric", "_frombuffer")
                                + tup(b"h\x00", dtype("u1"), tup(integer(len(big))), text("C")) + REDUCE
                                for _ in range(40))
              + b"e" + STOP)
    return [
        ("object pointer hidden in a void dtype", pickle_of(array((1,), void_with_object, blob(b"A" * 16))),
         "V16.*not a plain numeric type"),
        ("object field with its flags cleared", pickle_of(array((1,), void_flags_cleared, blob(b"A" * 16))),
         "V16.*not a plain numeric type"),
        ("object dtype", pickle_of(array((1,), dtype("O8", "|", flags=63), blob(b"A" * 8))),
         "O8.*not a plain numeric type"),
        ("shape without data", pickle_of(array((1000, 17, 3), f4, blob(b""))), "needs 204000 data bytes"),
        ("data shorter than the shape", pickle_of(array((10, 17, 3), f4, blob(b"\0" * 100))),
         "needs 2040 data bytes, the file gives 100"),
        ("negative dimension", pickle_of(array((-1, 17, 3), f4, blob(b""))), "negative array dimension"),
        ("zero strides", pickle_of(zero_strides), "ndarray with these arguments is not allowed"),
        ("plain dtype with fields in its state", pickle_of(array((1,), dtype("f4", names=tup(text("x"))),
                                                                  blob(b"\0" * 4))), "carries fields"),
        ("huge memo index", PROTO + NONE + b"r\xff\xff\xff\x7f" + STOP, "found a NoneType"),
        ("memo index never stored", PROTO + b"h\x07" + STOP, "memo entry 7 was never stored"),
        ("100,000 nested lists", PROTO + b"]" * 100_000 + b"a" * 99_999 + STOP, "nested deeper than"),
        ("a list that holds itself", PROTO + b"]q\x00h\x00a" + STOP, "cyclic"),
        ("code execution", pickle_of(glob("os", "system") + tup(text("true")) + REDUCE), "refused to load os.system"),
        ("out-of-band buffer", b"\x80\x05\x97" + STOP, "NEXT_BUFFER"),
        ("object construction", pickle_of(glob("numpy", "ndarray") + tup() + b"\x81"), "NEWOBJ"),
        ("one array's bytes reused 40 times", reused, "more than .* bytes of arrays"),
        ("1.2 million opcodes", PROTO + NONE + b"0N" * 600_000 + STOP, "more than 1000000 opcodes"),
        ("100,000 open MARKs", PROTO + MARK * 100_000 + STOP, "open MARKs"),
        ("integer of 1,000 bits", PROTO + b"\x8a" + bytes([125]) + b"\x01" * 125 + STOP, "wider than 64 bits"),
        ("truncated", pickle_of(array((2, 17, 3), f4, blob(b"\0" * 408)))[:-40], "corrupt or truncated"),
        ("random bytes", bytes(range(256)) * 4, "corrupt or truncated|not allowed"),
        ("empty file", b"", "corrupt or truncated"),
    ]
