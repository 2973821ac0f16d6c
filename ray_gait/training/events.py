"""TensorBoard event files (TFRecord framing, protobuf Event): scalars written synchronously, and read back."""
from __future__ import annotations

import os
import struct
import time
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Iterator, Mapping

from ray_gait.io import fs

EVENTS_PATTERN = "events.out.tfevents.*"


class ScalarEvents:
    """One event file in a local folder; every `add` is in the file when it returns (tensorboardX's SummaryWriter
    writes from a background thread, so a copy taken after its flush can miss the last scalars, and a killed process
    loses them). Steps from `purge_step` on in earlier files of the folder are hidden by TensorBoard."""

    def __init__(self, folder: str, purge_step: int) -> None:
        from tensorboardX.event_file_writer import EventsWriter
        from tensorboardX.proto import event_pb2
        self._pb = event_pb2
        self._file = EventsWriter(os.path.join(folder, "events"), f".{os.getpid()}")
        self._file.write_event(event_pb2.Event(wall_time=time.time(), step=purge_step,
                                               session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START)))
        self._file.flush()

    def add(self, scalars: Mapping[str, float], step: int) -> None:
        """Append one step's scalars and flush them to the file."""
        from tensorboardX.proto import summary_pb2
        values = [summary_pb2.Summary.Value(tag=tag, simple_value=float(value)) for tag, value in scalars.items()]
        self._file.write_event(self._pb.Event(wall_time=time.time(), step=step,
                                              summary=summary_pb2.Summary(value=values)))
        self._file.flush()

    def close(self) -> None:
        """Close the file."""
        self._file.close()


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
