"""Read scalars back from TensorBoard event files (TFRecord framing, protobuf Event)."""
from __future__ import annotations

import struct
from pathlib import Path


def _records(path: Path):
    data = path.read_bytes()
    offset = 0
    while offset + 12 <= len(data):
        (length,) = struct.unpack("<Q", data[offset:offset + 8])
        start = offset + 12
        yield data[start:start + length]
        offset = start + length + 4


def scalar_series(paths: list[Path], tag: str) -> list[tuple[int, float]]:
    """(step, value) of one scalar tag in step order."""
    from tensorboardX.proto import event_pb2
    found = []
    for path in paths:
        for record in _records(path):
            event = event_pb2.Event.FromString(record)
            for value in event.summary.value:
                if value.tag == tag:
                    found.append((event.step, value.simple_value))
    return sorted(found)


def scalars(paths: list[Path], tag: str) -> list[float]:
    """Values of one scalar tag in step order."""
    return [value for _, value in scalar_series(paths, tag)]
