"""Step 0 on Ray Data: raw per-frame pose files -> OpenGait's pkl tree + a Parquet pose data set.

The driver lists the raw files, detects the format, groups the files into sequences and plans
shards; Ray Data maps `ingest_shard` over the shards still to do (each writes its pkl files, its
Parquet part and then its record); the driver writes errors.jsonl and _manifest.json (kind
"pose").  A rerun skips finished shards, as step 1 does.

    OUT/part-*.parquet       one row per sequence (id, type, view, seq, source, frames, joints, pose)
    OUT/pkl/<id>/<type>/<view>/<seq>.pkl   the same poses, float32 (T, V, 3), for OpenGait
    OUT/_manifest.json, OUT/errors.jsonl, OUT/_shards/, OUT/_settings.json
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any


from ray_gait.ingest.formats import AUTO, FORMATS, OPENPOSE_JSON, detect_format, files_of_format
from ray_gait.ingest.layout import group_sequences
from ray_gait.ingest.shards import (IngestConfig, IngestRecord, IngestSettings, ingest_shard, load_ingest_record,
                                    plan_ingest_shards)
from ray_gait.io import fs
from ray_gait.io.dataset import MANIFEST, read_json, write_json_atomic
from ray_gait.io.shards import PKL_DIR, prepare_output
from ray_gait.pose.io import POSE_KIND
from ray_gait.ray_layer.sharded_job import RayWork, report_errors, run_shards

log = logging.getLogger(__name__)

SETTINGS_FILE = "_settings.json"


@dataclass
class IngestSummary:
    """What an ingest run produced."""

    output: str
    format: str
    detected: bool
    sequences: int
    frames: int
    empty_frames: int
    multi_person_frames: int
    index_frames: int
    errors: int
    rejected: int
    new_sequences: int
    shards: int
    skipped_shards: int
    seconds: float

    @property
    def sequences_per_second(self) -> float:
        """Sequences built per wall-clock second in this run."""
        return self.new_sequences / self.seconds if self.seconds > 0 else 0.0


def _check_same_settings(out: fs.Location, wanted: dict[str, Any]) -> None:
    loc = out.join(SETTINGS_FILE)
    if fs.exists(loc):
        found = read_json(loc)
        if found != wanted:
            changed = sorted(k for k in set(found) | set(wanted) if found.get(k) != wanted.get(k))
            raise ValueError(f"{out.uri} holds an ingest with other settings ({', '.join(changed)}); "
                             "use another --output_path or remove it")
        return
    write_json_atomic(loc, wanted)


def _remove_unlisted_pkl(out: fs.Location, written: set[str]) -> int:
    """Delete pkl files of sequences no finished shard wrote (inputs removed or now rejected)."""
    root = out.join(PKL_DIR)
    if not fs.exists(root):
        return 0
    stale = [rel for rel in fs.list_files(root, depth=4, pattern="*.pkl") if rel not in written]
    for rel in stale:
        out.fs.delete_file(root.join(rel).path)
    return len(stale)


def _list_input(input_path: str, output_path: str) -> tuple[fs.Location, list[str]]:
    """The input folder and its files, leaving out the output folder when it lies inside."""
    root, out = fs.resolve(input_path), fs.resolve(output_path)
    if not fs.is_dir(root):
        raise FileNotFoundError(f"input path {input_path} is not a folder")
    inside = out.path[len(root.path) + 1:] + "/" if out.path.startswith(root.path + "/") else None
    return root, [rel for rel in fs.list_files(root) if inside is None or not rel.startswith(inside)]


def _resolve_format(root: fs.Location, files: list[str], fmt: str) -> str:
    if fmt == AUTO:
        found = detect_format(files, lambda rel: fs.read_bytes(root.join(rel)), where=root.uri)
        log.info("detected input format %s", found)
        return found
    if fmt not in FORMATS:
        raise ValueError(f"unknown --format {fmt!r}: use auto or one of {', '.join(FORMATS)}")
    return fmt


def _record_totals(finished: list[IngestRecord]) -> dict[str, Any]:
    """The manifest's files and counts, summed over the shards' records."""
    joints: dict[str, int] = {}
    for rec in finished:
        for count_key, n in rec.joints.items():
            joints[count_key] = joints.get(count_key, 0) + n
    return {"files": {rec.parquet: rec.rows for rec in finished if rec.parquet}, "pkl_root": PKL_DIR,
            "sequences": sum(rec.rows for rec in finished), "frames": sum(rec.frames for rec in finished),
            "joints": joints, "empty_frames": sum(rec.empty_frames for rec in finished),
            "multi_person_frames": sum(rec.multi_person_frames for rec in finished),
            "index_frames": sum(rec.index_frames for rec in finished),
            "rejected_sequences": sum(rec.rejected for rec in finished)}


def run_ingest_job(input_path: str, output_path: str, fmt: str = AUTO, selection_dir: str | None = None,
                   config: IngestConfig | None = None, shard_size: int = 32,
                   workers: int | None = None) -> IngestSummary:
    """Turn the raw pose files below `input_path` into pose sequences in `output_path`."""
    started = time.perf_counter()
    config = config or IngestConfig()
    root, files = _list_input(input_path, output_path)
    found = _resolve_format(root, files, fmt)
    if selection_dir and found != OPENPOSE_JSON:
        raise ValueError(f"--pose_selection_dir applies to OU-MVLP's {OPENPOSE_JSON} files, not to {found}")
    if selection_dir and not fs.is_dir(fs.resolve(selection_dir)):
        raise FileNotFoundError(f"--pose_selection_dir {selection_dir} is not a folder")
    sequences, layout_errors = group_sequences(files_of_format(files, found), found)
    if not sequences:
        raise ValueError(f"no {found} sequences found below {input_path} (expected <id>/<type>/<view>/ folders; "
                         "see ray-gait ingest --help)")
    out = fs.resolve(output_path)
    selection_root = fs.resolve(selection_dir).uri if selection_dir else None
    wanted = {"format": found, "config": config.to_dict(), "config_hash": config.hash(),
              "pose_selection_dir": selection_root}
    prepare_output(out, lambda folder: _check_same_settings(folder, wanted))
    shards = plan_ingest_shards(sequences, shard_size)
    settings = IngestSettings(input_root=root.uri, out_root=out.uri, fmt=found, config=config.to_dict(),
                              selection_root=selection_root)
    work = RayWork(shared={"--input_path": root.uri, "--output_path": out.uri}, resources={"CPU": 1},
                   what="ray-gait ingest", workers=workers)
    run = run_shards("ingest", out, shards, load_ingest_record, ingest_shard, settings, work, counted="rows",
                     describe=f"{found}: {len(files)} files, {len(sequences)} sequences")
    finished = run.records
    stale = _remove_unlisted_pkl(out, {rel for rec in finished for rel in rec.written})
    if stale:
        log.info("removed %d pkl file(s) of sequences no longer in the input", stale)
    errors = layout_errors + [err for rec in finished for err in rec.errors]
    report_errors(out, errors)
    unindexed = sum(rec.unindexed for rec in finished)
    if unindexed:
        log.warning("%d sequence(s) have no %s below %s: their crowded frames were tracked instead",
                    unindexed, "pose_selection_idx.pkl", selection_dir)
    manifest = {"kind": POSE_KIND, "format": found, "detected": fmt == AUTO, "input_path": root.uri,
                "pose_selection_dir": selection_root, "config": config.to_dict(), "config_hash": config.hash(),
                **_record_totals(finished), "unindexed_sequences": unindexed, "error_count": len(errors)}
    write_json_atomic(out.join(MANIFEST), manifest)
    return IngestSummary(output=out.uri, format=found, detected=fmt == AUTO, sequences=manifest["sequences"],
                         frames=manifest["frames"], empty_frames=manifest["empty_frames"],
                         multi_person_frames=manifest["multi_person_frames"],
                         index_frames=manifest["index_frames"], errors=len(errors),
                         rejected=manifest["rejected_sequences"], new_sequences=run.produced, shards=len(shards),
                         skipped_shards=run.skipped, seconds=time.perf_counter() - started)
