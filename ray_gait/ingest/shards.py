"""Step 0 in shards: build the pose sequences of a shard, write their pkl files, Parquet part and record.

Plain Python (no Ray): the Ray Data job maps `ingest_shard` over the planned shards (`ray_gait.io.shards`:
a shard is finished when its record `_shards/<name>.json` exists, and the record is written last).

A bad frame file (unparsable, wrong joint count, NaN) is reported in errors.jsonl and kept as a
frame with nobody, so that frame counts still match the silhouettes; a sequence with nobody in any
frame (or fewer than `min_frames`) is reported and left out.
"""
from __future__ import annotations

import json
import posixpath
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

from ray_gait.ingest.formats import (PKL, SELECTION_INDEX, FrameError, frame_key, load_selection_index,
                                     load_sequence_pkl, parse_frame)
from ray_gait.ingest.layout import RawSequence, check_key
from ray_gait.ingest.tracking import TrackingConfig, select_track
from ray_gait.io import fs
from ray_gait.io.shards import PKL_DIR, ShardRecord, finish_shard, plan_shards, read_shard_record, write_pickle
from ray_gait.pose.io import POSE_SCHEMA, pose_row
from ray_gait.yaml_config import apply_overrides, build_dataclass, config_hash


@dataclass(frozen=True)
class IngestConfig:
    """Options of `ray-gait ingest --set key=value`."""

    min_frames: int = 1                 # fewer frames with a person: the sequence is rejected
    drop_empty_frames: bool = False     # true: drop frames with nobody, as OpenGait's pretreatment does
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def to_dict(self) -> dict[str, Any]:
        """The config as plain data."""
        return asdict(self)

    def hash(self) -> str:
        """A short stable hash of the config."""
        return config_hash(self.to_dict())


def ingest_config(overrides: dict[str, Any] | None = None) -> IngestConfig:
    """The default config with dotted overrides applied (unknown keys raise ConfigError)."""
    return build_dataclass(IngestConfig, apply_overrides({}, overrides))


@dataclass(frozen=True)
class IngestSettings:
    """What every shard needs to know (plain data, so it ships to Ray workers)."""

    input_root: str
    out_root: str
    fmt: str
    config: dict
    selection_root: str | None = None
    write_parquet: bool = True
    write_pkl: bool = True


@dataclass
class IngestRecord(ShardRecord):
    """What a finished ingest shard wrote (`_shards/<name>.json`); `written` lists its pkl files."""

    empty_frames: int = 0
    multi_person_frames: int = 0
    index_frames: int = 0
    unindexed: int = 0
    rejected: int = 0
    joints: dict[str, int] = field(default_factory=dict)
    written: list[str] = field(default_factory=list)


@dataclass
class BuiltSequence:
    """A sequence assembled from its files (pose None when rejected), its errors and counts."""

    pose: np.ndarray | None
    errors: list[dict[str, str]] = field(default_factory=list)
    empty_frames: int = 0
    multi_person_frames: int = 0
    index_frames: int = 0


def plan_ingest_shards(sequences: list[RawSequence], shard_size: int) -> list[dict[str, Any]]:
    """Shards of sequences, named by index and by the sequences' keys and file names."""
    prints = [f"{s.key}|{s.source}|{','.join(posixpath.basename(f) for f in s.files)}" for s in sequences]
    shards = plan_shards(prints, shard_size)
    first = 0
    for shard in shards:
        chunk = sequences[first:first + len(shard["sources"])]
        first += len(chunk)
        shard["sources"] = [s.source for s in chunk]
        shard["sequences"] = json.dumps([asdict(s) for s in chunk])
    return shards


def load_ingest_record(out_root: str, name: str) -> IngestRecord | None:
    """The record of a finished ingest shard, or None."""
    return read_shard_record(out_root, name, IngestRecord)


def _error(source: str, seq: RawSequence, reason: Any) -> dict[str, str]:
    return {"source": source, "reason": str(reason), "sequence": f"{seq.id}/{seq.type}/{seq.view}"}


def _forced_choices(seq: RawSequence, frames: list[list], selection: dict[str, int],
                    errors: list[dict[str, str]]) -> dict[int, int]:
    forced = {}
    for t, name in enumerate(seq.files):
        person = selection.get(frame_key(name) or "")
        if person is None or not frames[t]:
            continue
        if person >= len(frames[t]):
            errors.append(_error(name, seq, f"{SELECTION_INDEX} names person {person}, the frame lists "
                                            f"{len(frames[t])}; tracking instead"))
            continue
        forced[t] = person
    return forced


def build_sequence(seq: RawSequence, fmt: str, read: Callable[[str], bytes], config: IngestConfig,
                   selection: dict[str, int] | None = None) -> BuiltSequence:
    """Parse a sequence's files, pick the subject per frame, and stack a float32 (T, V, 3) pose."""
    if not seq.files:
        return BuiltSequence(None, [_error(seq.source, seq, "empty sequence: no frame files (0 frames)")])
    if fmt == PKL:
        try:
            return BuiltSequence(load_sequence_pkl(read(seq.files[0])))
        except (FrameError, OSError) as exc:
            return BuiltSequence(None, [_error(seq.source, seq, exc)])
    errors: list[dict[str, str]] = []
    frames: list[list] = []
    for name in seq.files:
        try:
            frames.append(parse_frame(fmt, read(name)))
        except (FrameError, OSError) as exc:
            errors.append(_error(name, seq, exc))
            frames.append([])
    counts = Counter(p.shape[0] for people in frames for p in people if p is not None)
    if not counts:
        errors.append(_error(seq.source, seq, f"empty sequence: nobody in any of its {len(frames)} frame(s)"))
        return BuiltSequence(None, errors)
    joints = counts.most_common(1)[0][0]
    for t, people in enumerate(frames):
        other = [p.shape[0] for p in people if p is not None and p.shape[0] != joints]
        if other:
            errors.append(_error(seq.files[t], seq, f"wrong joint count {other[0]}: the sequence has {joints}"))
            frames[t] = []
    forced = _forced_choices(seq, frames, selection, errors) if selection else {}
    chosen = select_track(frames, forced, config.tracking)
    pose = np.zeros((len(frames), joints, 3), dtype=np.float32)
    for t, person in enumerate(chosen):
        if person is not None:
            pose[t] = frames[t][person]
    present = np.array([c is not None for c in chosen])
    if int(present.sum()) < max(config.min_frames, 1):
        errors.append(_error(seq.source, seq, f"empty sequence: a person in {int(present.sum())} of "
                                              f"{len(frames)} frame(s) (min_frames {config.min_frames})"))
        return BuiltSequence(None, errors)
    return BuiltSequence(pose[present] if config.drop_empty_frames else pose, errors,
                         empty_frames=int((~present).sum()), index_frames=len(forced),
                         multi_person_frames=sum(1 for people in frames if sum(p is not None for p in people) > 1))


def _selection_for(settings: IngestSettings, seq: RawSequence,
                   record: IngestRecord) -> dict[str, int] | None:
    if not settings.selection_root:
        return None
    loc = fs.resolve(settings.selection_root).join(seq.id, seq.type, seq.view, SELECTION_INDEX)
    if not fs.exists(loc):
        record.unindexed += 1
        return None
    try:
        return load_selection_index(fs.read_bytes(loc))
    except (ValueError, OSError) as exc:
        record.errors.append(_error(loc.uri, seq, f"{exc}; tracking instead"))
        return None


def ingest_shard(shard: dict[str, Any], settings: IngestSettings) -> dict[str, Any]:
    """Build every sequence of a shard; write its pkl files, Parquet part and record."""
    import pyarrow
    pyarrow.set_cpu_count(1)
    started = time.perf_counter()
    config = build_dataclass(IngestConfig, settings.config)
    sequences = [RawSequence(**{**s, "files": tuple(s["files"])}) for s in json.loads(shard["sequences"])]
    root, out = fs.resolve(settings.input_root), fs.resolve(settings.out_root)
    record = IngestRecord(name=shard["name"], sources=[s.source for s in sequences])
    joints: Counter = Counter()
    rows = []
    for seq in sequences:
        try:
            check_key(seq)
        except ValueError as exc:
            record.errors.append(_error(seq.source, seq, exc))
            record.rejected += 1
            continue
        selection = _selection_for(settings, seq, record)
        built = build_sequence(seq, settings.fmt, lambda rel: fs.read_bytes(root.join(rel)), config, selection)
        record.errors.extend(built.errors)
        if built.pose is None:
            record.rejected += 1
            continue
        key = {"id": seq.id, "type": seq.type, "view": seq.view, "seq": seq.seq, "source": seq.source}
        if settings.write_pkl:
            rel = f"{seq.key}.pkl"
            write_pickle(out.join(PKL_DIR, rel), built.pose)
            record.written.append(rel)
        rows.append(pose_row(key, built.pose))
        record.frames += int(built.pose.shape[0])
        record.empty_frames += built.empty_frames
        record.multi_person_frames += built.multi_person_frames
        record.index_frames += built.index_frames
        joints[str(built.pose.shape[1])] += 1
    record.joints = dict(joints)
    finish_shard(settings.out_root, record, rows, POSE_SCHEMA, settings.write_parquet, started)
    return {"name": record.name, "rows": record.rows, "frames": record.frames, "errors": len(record.errors)}

