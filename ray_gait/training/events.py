"""Read scalars back from TensorBoard event files (TFRecord framing, protobuf Event)."""
from __future__ import annotations

import struct
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Iterator

from ray_gait.io import fs

EVENTS_PATTERN = "events.out.tfevents.*"


def _records(data: bytes) -> Iterator[bytes]:
    offset = 0
    while offset + 12 <= len(data):
        (length,) = struct.unpack("<Q", data[offset:offset + 8])
        start = offset + 12
        yield data[start:start + length]
        offset = start + length + 4


def series_from_events(blobs: Iterable[bytes]) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag in some event files' bytes: tag -> (step, value) in step order (a step's last write kept)."""
    from tensorboardX.proto import event_pb2
    found: dict[str, dict[int, float]] = defaultdict(dict)
    for data in blobs:
        for record in _records(data):
            event = event_pb2.Event.FromString(record)
            for value in event.summary.value:
                found[value.tag][int(event.step)] = float(value.simple_value)
    return {tag: sorted(steps.items()) for tag, steps in found.items()}


def scalar_series(paths: list[Path], tag: str) -> list[tuple[int, float]]:
    """(step, value) of one scalar tag in step order."""
    return series_from_events(path.read_bytes() for path in sorted(paths)).get(tag, [])


def scalars(paths: list[Path], tag: str) -> list[float]:
    """Values of one scalar tag in step order."""
    return [value for _, value in scalar_series(paths, tag)]


def run_scalars(tensorboard_dir: str) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the event files in a run's TensorBoard folder (a path or URI); {} when it has none."""
    root = fs.resolve(tensorboard_dir)
    if not fs.is_dir(root):
        return {}
    return series_from_events(fs.read_bytes(root.join(rel)) for rel in fs.list_files(root, depth=1,
                                                                                     pattern=EVENTS_PATTERN))
