"""Step 2 on Ray Data: heatmaps joined with silhouettes per (id, type, view).

`parquet`: a new data set with both columns (docs/formats.md, "Paired"), written to a staging folder and renamed into
place when complete.  `symlink`: OpenGait's tree `<id>/<type>/<view>/0_heatmap.pkl, 1_sil.pkl`,
made with os.symlink.  Both check every pair on Ray workers (restricted loader, frame counts) and
write `link_report.jsonl` with what could not be paired.  Reruns are idempotent.
"""
from __future__ import annotations

import json
import logging
import os
import posixpath
import shutil
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import pyarrow.fs as pafs
import ray
import ray.data
from ray.actor import ActorHandle
from ray.data.expressions import col

from ray_gait.console import stage
from ray_gait.io import fs
from ray_gait.io.dataset import MANIFEST, PAIRED_SCHEMA, write_json_atomic
from ray_gait.pairing.load import pair_group
from ray_gait.pairing.plan import PairPlan, index_heatmaps, index_silhouettes, plan_pairs
from ray_gait.ray_layer.progress import remote_counter
from ray_gait.ray_layer.session import ensure_ray
from ray_gait.yaml_config import config_hash

log = logging.getLogger(__name__)

REPORT = "link_report.jsonl"
LINK_FORMATS = ("parquet", "symlink")
LINK_KIND = "paired"                       # `kind` in the manifest of what link writes
LEGACY_LINK_KEYS = ("heatmap_data_path", "silhouette_data_path", "inputs_hash")   # link manifests before `kind`


@dataclass
class LinkSummary:
    """What a link run produced."""

    output: str
    paired: int
    unmatched: int
    seconds: float
    up_to_date: bool = False


def _groups(kind: str, heatmap_root: str, plan: PairPlan) -> list[dict[str, Any]]:
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for entry, sil in plan.pairs:
        pair = {"id": entry.key[0], "type": entry.key[1], "view": entry.key[2], "seq": entry.seq, "sil": sil,
                "row": entry.row, "pkl": entry.pkl,
                "source": f"{'/'.join(entry.key)}/{entry.seq}.pkl"}
        grouped[entry.parquet if kind == "parquet" else entry.pkl].append(pair)
    return [{"heatmap_root": heatmap_root, "parquet": name if kind == "parquet" else None, "pairs": pairs}
            for name, pairs in sorted(grouped.items())]


def _pair_and_count(group: dict[str, Any], with_arrays: bool, counter: ActorHandle) -> list[dict[str, Any]]:
    """`pair_group`, its pairs then counted in the driver's progress stage."""
    rows = pair_group(group, with_arrays=with_arrays)
    counter.add.remote(len(group["pairs"]))
    return rows


def _check_pairs(groups: list[dict[str, Any]], with_arrays: bool) -> ray.data.Dataset:
    ensure_ray()
    total = sum(len(group["pairs"]) for group in groups)
    ds = ray.data.from_items(groups, override_num_blocks=max(1, min(len(groups), 200)))
    with stage("link", total=total, unit="pair") as progress, remote_counter(progress) as counter:
        checked = ds.flat_map(_pair_and_count, fn_kwargs={"with_arrays": with_arrays, "counter": counter},
                              num_cpus=1).materialize()
        progress.advance_to(total)
    return checked


def _report(out_dir: str, unmatched: list[dict[str, str]]) -> None:
    text = "".join(json.dumps(item, sort_keys=True) + "\n" for item in unmatched)
    fs.write_bytes_atomic(fs.resolve(out_dir).join(REPORT), text.encode("utf-8"))


def _link(target: str, link: str, relative: bool) -> None:
    """Create or repoint a symlink atomically."""
    pointing = os.path.relpath(target, os.path.dirname(link)) if relative else os.path.abspath(target)
    if os.path.islink(link) and os.readlink(link) == pointing:
        return
    tmp = f"{link}.tmp-{uuid.uuid4().hex[:8]}"
    os.symlink(pointing, tmp)
    os.replace(tmp, link)


def link_manifest(out: fs.Location) -> dict[str, Any] | None:
    """The manifest of a previous link output in `out`, or None when `out` holds no such manifest."""
    loc = out.join(MANIFEST)
    if not fs.exists(loc):
        return None
    try:
        found = json.loads(fs.read_bytes(loc))
    except (ValueError, OSError):
        return None
    if not isinstance(found, dict):
        return None
    if found.get("kind") == LINK_KIND or (found.get("kind") is None and all(k in found for k in LEGACY_LINK_KEYS)):
        return found
    return None


def _entries(out: fs.Location) -> list[str]:
    """Names of what a folder holds (first level only)."""
    if out.is_local:
        return sorted(os.listdir(out.path))
    infos = out.fs.get_file_info(pafs.FileSelector(out.path, recursive=False))
    return sorted(posixpath.basename(info.path) for info in infos)


def check_output_folder(out: fs.Location) -> None:
    """Refuse an --output_path that link must not replace: anything but nothing, an empty folder or its own output."""
    if out.is_local and os.path.islink(out.path):
        raise ValueError(f"--output_path {out.uri} is a symbolic link; give the folder itself (link replaces "
                         "only a folder that holds its own previous output)")
    if not fs.exists(out):
        return
    if not fs.is_dir(out):
        raise ValueError(f"--output_path {out.uri} is a file, not a folder; nothing was changed")
    entries = _entries(out)
    if not entries or link_manifest(out) is not None:
        return
    raise ValueError(f"--output_path {out.uri} is not empty and holds no output of `ray-gait link` (no {MANIFEST} "
                     f"with \"kind\": \"{LINK_KIND}\"; it holds e.g. {entries[0]!r}); link replaces only its own "
                     "previous output: choose a new or empty folder. Nothing was deleted")


def _replace_local(staging: str, out: str) -> None:
    """Put a finished staging folder in the place of `out` (a previous link output, or nothing)."""
    if os.path.lexists(out):
        check_output_folder(fs.resolve(out))
        trash = f"{out}.old-{uuid.uuid4().hex[:8]}"
        os.replace(out, trash)
        os.replace(staging, out)
        shutil.rmtree(trash)
        return
    os.replace(staging, out)


def run_link_job(heatmap_data_path: str, silhouette_data_path: str, output_path: str, sil_ext: str = ".pkl",
                 fmt: str = "parquet", relative: bool = False) -> LinkSummary:
    """Pair heatmaps and silhouettes into `output_path` (Parquet data set or symlink tree)."""
    if fmt not in LINK_FORMATS:
        raise ValueError(f"unknown --format {fmt!r}: use one of {', '.join(LINK_FORMATS)}")
    started = time.perf_counter()
    out = fs.resolve(output_path)
    check_output_folder(out)
    kind, heatmaps = index_heatmaps(heatmap_data_path, prefer_pkl=fmt == "symlink")
    silhouettes = index_silhouettes(silhouette_data_path, sil_ext)
    if not heatmaps:
        raise ValueError(f"no heatmaps found in {heatmap_data_path}")
    if not silhouettes:
        raise ValueError(f"no silhouette files (*{sil_ext}) found below {silhouette_data_path}")
    plan = plan_pairs(heatmaps, silhouettes)
    if fmt == "symlink" and kind != "pkl":
        raise ValueError("--format symlink needs OpenGait's pkl tree of heatmaps "
                         "(run `ray-gait heatmap --format pkl` or `both`)")
    signature = config_hash({"heatmaps": [(e.key, e.seq, e.frames) for e in heatmaps],
                             "silhouettes": sorted((k, v) for k, v in silhouettes.items()), "format": fmt,
                             "relative": relative})
    manifest_loc = out.join(MANIFEST)
    found = link_manifest(out)
    if found is not None and found.get("inputs_hash") == signature:
        log.info("%s is up to date with its inputs; nothing to do", out.uri)
        return LinkSummary(out.uri, found["paired"], found["unmatched"], time.perf_counter() - started, True)
    log.info("%d heatmaps (%s), %d silhouette folders: %d pairs to check, %d unmatched so far",
             len(heatmaps), kind, len(silhouettes), len(plan.pairs), len(plan.unmatched))
    ensure_ray(shared={"--heatmap_data_path": heatmap_data_path, "--silhouette_data_path": silhouette_data_path,
                       "--output_path": out.uri}, resources={"CPU": 1}, what="ray-gait link")
    checked = _check_pairs(_groups(kind, fs.resolve(heatmap_data_path).uri, plan), with_arrays=fmt == "parquet")
    failed = checked.filter(expr=col("error") != "").select_columns(["id", "type", "view", "error"]).take_all()
    unmatched = plan.unmatched + [{"key": f"{r['id']}/{r['type']}/{r['view']}", "reason": r["error"]} for r in failed]
    paired = checked.count() - len(failed)
    manifest = {"kind": LINK_KIND, "heatmap_data_path": heatmap_data_path,
                "silhouette_data_path": silhouette_data_path, "format": fmt, "paired": paired,
                "unmatched": len(unmatched), "inputs_hash": signature}
    if fmt == "parquet":
        if not out.is_local:
            target = out
        else:
            target = fs.resolve(f"{out.path}.staging-{uuid.uuid4().hex[:8]}")
        good = checked.filter(expr=col("error") == "").drop_columns(["error"])
        good.write_parquet(target.uri, schema=PAIRED_SCHEMA, mode="overwrite", row_group_size=1)
        _report(target.uri, unmatched)
        write_json_atomic(target.join(MANIFEST), manifest)
        if target is not out:
            _replace_local(target.path, out.path)
    else:
        if not out.is_local:
            raise ValueError("--format symlink needs a local --output_path")
        pairs = {entry.key: (entry, sil) for entry, sil in plan.pairs}
        for row in checked.filter(expr=col("error") == "").iter_rows():
            key = (row["id"], row["type"], row["view"])
            folder = os.path.join(out.path, *key)
            os.makedirs(folder, exist_ok=True)
            entry, sil = pairs[key]
            _link(fs.resolve(entry.pkl).path, os.path.join(folder, "0_heatmap.pkl"), relative)
            _link(fs.resolve(sil).path, os.path.join(folder, "1_sil.pkl"), relative)
        _report(out.uri, unmatched)
        write_json_atomic(manifest_loc, manifest)
    for item in unmatched[:5]:
        log.warning("unmatched %s: %s", item["key"], item["reason"])
    return LinkSummary(out.uri, paired, len(unmatched), time.perf_counter() - started)
