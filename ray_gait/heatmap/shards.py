"""Step 1 in shards: plan, render one shard of pose files, write it atomically, describe it.

Plain Python (no Ray): the Ray Data job maps `render_shard` over the planned shards
(`ray_gait.io.shards`: a shard is finished when its record exists, and the record is written last).
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ray_gait.heatmap import fast
from ray_gait.heatmap.config import HeatmapConfig, heatmap_config_from_dict
from ray_gait.heatmap.pipeline import render_heatmaps, render_heatmaps_batch, validate_pose
from ray_gait.io import fs
from ray_gait.io.dataset import HEATMAP_SCHEMA, heatmap_row
from ray_gait.io.safe_pickle import loads_arrays
from ray_gait.io.shards import PKL_DIR, ShardRecord, finish_shard, read_shard_record, write_pickle
from ray_gait.pose.io import decode_pose, pose_from_object, read_pose_rows, sequence_key

log = logging.getLogger(__name__)

FORMATS = ("parquet", "pkl", "both")
KEY_PARTS = ("id", "type", "view", "seq")


@dataclass(frozen=True)
class JobSettings:
    """What every shard needs to know (plain data, so it ships to Ray workers)."""

    pose_root: str
    out_root: str
    dataset_name: str
    config: dict
    write_parquet: bool = True
    write_pkl: bool = False
    backend: str = "auto"
    pose_dataset: bool = False      # pose_root is a Parquet pose data set: shards carry part and row numbers
    device: str = "cpu"             # torch backend: where a shard's frames are drawn, all in one batch


@dataclass
class MapsShardRecord(ShardRecord):
    """What a finished heatmap shard wrote; stored as `_shards/<name>.json`."""

    renderer: str = ""              # the backend that drew the maps: c, numpy or torch
    kernel: str = ""                # where the compiled kernel came from on the worker, or why there was none


def load_shard_record(out_root: str, name: str) -> MapsShardRecord | None:
    """The record of a finished heatmap shard, or None."""
    return read_shard_record(out_root, name, MapsShardRecord)


def _dataset_rows(settings: JobSettings, shard: dict[str, Any]) -> dict[str, Any]:
    """(Parquet part, row) of each source of a shard read from a Parquet pose data set (empty for a pkl tree)."""
    if not settings.pose_dataset:
        return {}
    wanted = [(str(part), int(number)) for part, number in zip(shard["pose_parts"], shard["pose_rows"])]
    rows = read_pose_rows(settings.pose_root, wanted, decode=False)
    return {str(source): (part, row) for source, row, (part, _) in zip(shard["sources"], rows, wanted)}


def checked_key(source: str, row: dict[str, Any] | None = None, origin: str = "") -> dict[str, str]:
    """The key of a source, its id / type / view / seq (and the row's, if given) checked as safe file names."""
    if row is not None:
        for name in KEY_PARTS:
            fs.safe_component(row.get(name), f"{name} from {origin or 'the pose data set'}")
    key = asdict(sequence_key(source))
    for name in KEY_PARTS:
        fs.safe_component(key[name], f"{name} of {source}")
    return key


def _read_one(settings: JobSettings, source: str, dataset_rows: dict[str, Any]) -> tuple[dict, np.ndarray]:
    """The key and the pose of one source (ValueError / OSError say what is wrong)."""
    if settings.pose_dataset:
        part, row = dataset_rows[source]
        key = checked_key(source, row, part)
        pose = pose_from_object(decode_pose(row))
    else:
        key = checked_key(source)
        raw = fs.read_bytes(fs.resolve(settings.pose_root).join(source))
        pose = pose_from_object(loads_arrays(raw), settings.dataset_name)
    return key, pose


def _one_thread() -> None:
    """A shard task holds one CPU: keep OpenCV and Arrow's compression to one thread as well."""
    import cv2
    import pyarrow
    cv2.setNumThreads(1)
    pyarrow.set_cpu_count(1)


def shard_renderer(backend: str) -> str:
    """The backend a shard is drawn with: `auto` is the compiled kernel where it is loaded, else numpy."""
    if backend != "auto":
        return backend
    if fast.available():
        return "c"
    fast.warn_numpy_fallback()
    return "numpy"


def _render_all(settings: JobSettings, config: HeatmapConfig, poses: list[np.ndarray], backend: str) -> list[Any]:
    """Maps of the poses, an exception in place of a rejected one: the torch backend draws the
    shard's valid sequences in one batch on its device, the others one sequence at a time."""
    out: list[Any] = []
    if backend == "torch":
        valid = []
        for pose in poses:
            try:
                validate_pose(pose, config)
                valid.append(pose)
                out.append(None)
            except ValueError as exc:
                out.append(exc)
        drawn = iter(render_heatmaps_batch(valid, config, device=settings.device))
        return [next(drawn) if item is None else item for item in out]
    for pose in poses:
        try:
            out.append(render_heatmaps(pose, config, backend=backend))
        except ValueError as exc:
            out.append(exc)
    return out


def render_shard(shard: dict[str, Any], settings: JobSettings) -> dict[str, Any]:
    """Render every pose file of a shard; write its Parquet part / pkl files and its record."""
    _one_thread()
    started = time.perf_counter()
    config = heatmap_config_from_dict(settings.config)
    out = fs.resolve(settings.out_root)
    record = MapsShardRecord(name=shard["name"], sources=list(shard["sources"]), renderer=shard_renderer(settings.backend),
                         kernel=fast.kernel_origin())
    rows = []
    dataset_rows = _dataset_rows(settings, shard)
    loaded = []
    for source in record.sources:
        try:
            loaded.append((source, *_read_one(settings, source, dataset_rows)))
        except (ValueError, OSError) as exc:
            record.errors.append({"source": source, "reason": str(exc)})
    for (source, key, _), heatmap in zip(loaded, _render_all(settings, config, [pose for _, _, pose in loaded], record.renderer)):
        if isinstance(heatmap, Exception):
            record.errors.append({"source": source, "reason": str(heatmap)})
            continue
        if settings.write_pkl:
            write_pickle(out.join(PKL_DIR, key["id"], key["type"], key["view"], f"{key['seq']}.pkl"), heatmap)
        rows.append(heatmap_row(key, heatmap))
        record.frames += int(heatmap.shape[0])
    position = {source: index for index, source in enumerate(record.sources)}
    record.errors.sort(key=lambda err: position[err["source"]])
    return finish_shard(settings.out_root, record, rows, HEATMAP_SCHEMA, settings.write_parquet, started)


