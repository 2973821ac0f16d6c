"""Step 1 on Ray Data: pose files -> skeleton maps -> the Parquet data set (docs/formats.md).

The driver lists the pose files and plans shards; Ray Data maps `render_shard` over the shards
still to do (each writes its own Parquet part atomically and then its record); the driver follows
progress, then writes errors.jsonl, _manifest.json and the preview sheets.  A rerun skips
finished shards, so a killed job resumes where it stopped and never duplicates a row.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from ray_gait.heatmap.config import HeatmapConfig
from ray_gait.heatmap.preview import preview_sheet, write_png
from ray_gait.heatmap.shards import FORMATS, JobSettings, load_shard_record, render_shard
from ray_gait.io import fs
from ray_gait.io.safe_pickle import loads_arrays
from ray_gait.io.dataset import MANIFEST, read_dataset, read_json, write_json_atomic
from ray_gait.io.shards import PKL_DIR, plan_shards, prepare_output
from ray_gait.pose.io import is_pose_dataset, list_pose_files, pose_dataset_index
from ray_gait.ray_layer.sharded_job import RayWork, report_errors, run_shards

log = logging.getLogger(__name__)

CONFIG_FILE = "_config.json"
PREVIEW_DIR = "preview"
PREVIEW_SEQUENCES = 4


@dataclass
class HeatmapSummary:
    """What a heatmap run produced."""

    output: str
    sequences: int
    frames: int
    rendered_frames: int
    errors: int
    shards: int
    skipped_shards: int
    seconds: float

    @property
    def frames_per_second(self) -> float:
        """Frames rendered per wall-clock second in this run."""
        return self.rendered_frames / self.seconds if self.seconds > 0 else 0.0


def output_name(dataset_name: str, config: HeatmapConfig, ext_name: str = "") -> str:
    """`<NAME>_sigma_<sigma>_<E>`, the sigma printed as Python prints a float (OpenGait's naming)."""
    return f"{dataset_name}_sigma_{config.sigma}_{ext_name}"


def _check_same_config(out: fs.Location, config: HeatmapConfig, fmt: str) -> None:
    loc = out.join(CONFIG_FILE)
    wanted = {"config_hash": config.hash(), "config": config.to_dict(), "format": fmt}
    if fs.exists(loc):
        found = read_json(loc)
        if found.get("config_hash") != wanted["config_hash"] or found.get("format") != fmt:
            raise ValueError(f"{out.uri} holds output of another config or format "
                             f"(hash {found.get('config_hash')}, format {found.get('format')}); "
                             "use another --ext_name or remove it")
        return
    write_json_atomic(loc, wanted)


def _first_sequences(out: fs.Location, from_parquet: bool) -> Iterator[tuple[str, np.ndarray]]:
    if from_parquet:
        for row in read_dataset(out.uri):
            yield f"{row['id']}_{row['type']}_{row['view']}_{row['seq']}", row["heatmap"]
        return
    pkl_root = out.join(PKL_DIR)
    for rel in fs.list_files(pkl_root, depth=4, pattern="*.pkl"):
        yield rel[:-len(".pkl")].replace("/", "_"), loads_arrays(fs.read_bytes(pkl_root.join(rel)))


def _write_previews(out: fs.Location, from_parquet: bool) -> list[str]:
    """PNG sheets (limbs over joints) of the first sequences, in `preview/`."""
    written = []
    for name, heatmap in _first_sequences(out, from_parquet):
        write_png(out.join(PREVIEW_DIR, f"{name}.png"), preview_sheet(heatmap))
        written.append(name)
        if len(written) >= PREVIEW_SEQUENCES:
            break
    return written


def _renderers(finished: list[Any], backend: str) -> dict[str, int]:
    """Shards drawn per backend (c, numpy, torch); one warning when `auto` fell back to numpy somewhere."""
    counts: dict[str, int] = {}
    for rec in finished:
        counts[rec.renderer or "unknown"] = counts.get(rec.renderer or "unknown", 0) + 1
    slow = [rec for rec in finished if rec.renderer == "numpy"]
    if backend == "auto" and slow:
        log.warning("%d of %d shard(s) were rendered with numpy, about 10x slower than the compiled kernel, which "
                    "was missing where they ran: %s", len(slow), len(finished), slow[0].kernel)
    return counts


def _checked_backend(fmt: str, device: str, backend: str) -> str:
    """The renderer backend of the flags (torch on CUDA); ValueError naming a bad flag."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown --format {fmt!r}: use one of {', '.join(FORMATS)}")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"unknown --device {device!r}: use cpu or cuda")
    if device == "cuda":
        if backend not in ("auto", "torch"):
            raise ValueError(f"--device cuda renders with the torch backend, not --backend {backend}")
        return "torch"
    return backend


def _sources(pose_data_path: str, dataset_name: str, index: dict[str, Any] | None,
             refused: list[dict[str, str]]) -> list[str]:
    """The sequences to render: a pose data set's (`index`) or the pose files below the path; ValueError if none."""
    sources = sorted(index) if index is not None else list_pose_files(pose_data_path, dataset_name)
    if not sources and refused:
        raise ValueError(f"every sequence of {pose_data_path} was refused, e.g. {refused[0]['source']}: "
                         f"{refused[0]['reason']}")
    if not sources:
        raise ValueError(f"no pose files found below {pose_data_path} (expected <id>/<type>/<view>/<seq>.pkl "
                         "or a pose data set written by `ray-gait ingest`)")
    return sources


def run_heatmap_job(pose_data_path: str, save_root: str, dataset_name: str, config: HeatmapConfig,
                    ext_name: str = "", fmt: str = "parquet", shard_size: int = 16, workers: int | None = None,
                    backend: str = "auto", device: str = "cpu") -> HeatmapSummary:
    """Render every pose file below `pose_data_path` into `save_root/<NAME>_sigma_<s>_<E>/`.

    `device="cuda"` renders each shard in one batch with the torch backend on a GPU per worker.
    """
    backend = _checked_backend(fmt, device, backend)
    started = time.perf_counter()
    name = fs.safe_component(output_name(dataset_name, config, ext_name), "output folder (--dataset_name, --ext_name)")
    out = fs.resolve(save_root).join(name)
    from_dataset = is_pose_dataset(pose_data_path)
    refused: list[dict[str, str]] = []
    index = pose_dataset_index(pose_data_path, dataset_name, refused) if from_dataset else {}
    sources = _sources(pose_data_path, dataset_name, index if from_dataset else None, refused)
    prepare_output(out, lambda folder: _check_same_config(folder, config, fmt))
    shards = plan_shards(sources, shard_size)
    if from_dataset:
        for shard in shards:
            shard["pose_parts"] = [index[source][0] for source in shard["sources"]]
            shard["pose_rows"] = [index[source][1] for source in shard["sources"]]
    settings = JobSettings(pose_root=fs.resolve(pose_data_path).uri, out_root=out.uri, dataset_name=dataset_name,
                           config=config.to_dict(), write_parquet=fmt in ("parquet", "both"),
                           write_pkl=fmt in ("pkl", "both"), backend=backend, pose_dataset=from_dataset,
                           device=device)
    gpus = 1.0 if device == "cuda" else 0.0
    work = RayWork(shared={"--pose_data_path": pose_data_path, "--save_root": out.uri},
                   resources={"CPU": 1, "GPU": gpus}, what=f"ray-gait heatmap --device {device}", workers=workers,
                   gpus=gpus)
    run = run_shards("heatmap", out, shards, load_shard_record, render_shard, settings, work, counted="frames",
                     shown="frames", describe=f"{len(sources)} pose files")
    finished = run.records
    errors = refused + [err for rec in finished for err in rec.errors]
    report_errors(out, errors)
    renderers = _renderers(finished, backend)
    manifest: dict[str, Any] = {
        "config": config.to_dict(), "config_hash": config.hash(), "dataset_name": dataset_name,
        "pose_data_path": settings.pose_root, "format": fmt,
        "files": {rec.parquet: rec.rows for rec in finished if rec.parquet},
        "pkl_root": PKL_DIR if settings.write_pkl else None,
        "sequences": sum(rec.rows for rec in finished), "frames": sum(rec.frames for rec in finished),
        "error_count": len(errors), "renderers": renderers,
    }
    write_json_atomic(out.join(MANIFEST), manifest)
    if manifest["sequences"]:
        _write_previews(out, settings.write_parquet)
    return HeatmapSummary(output=out.uri, sequences=manifest["sequences"], frames=manifest["frames"],
                          rendered_frames=run.produced, errors=len(errors), shards=len(shards),
                          skipped_shards=run.skipped, seconds=time.perf_counter() - started)
