"""`ray-gait synth` on Ray Data: the sequences of the synthetic data set generated in shards.

Each sequence depends only on (seed, id, type, view), so shards run anywhere in any order; files
are written atomically and a rerun skips sequences whose two files already exist.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

from ray_gait.console import stage
from ray_gait.io import fs
from ray_gait.ray_layer.session import ensure_ray
from ray_gait.ray_layer.shard_map import map_shards
from ray_gait.synth import SequenceSpec, SynthConfig, generate_sequence, plan_sequences, write_metadata, write_sequence
from ray_gait.synth.preview import write_preview

log = logging.getLogger(__name__)

SHARD_SEQUENCES = 40


def generate_shard(shard: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """Generate and write the sequences of one shard (settings: out_root, config); returns counts."""
    out_root = settings["out_root"]
    root = fs.resolve(out_root)
    cfg = SynthConfig.from_dict(settings["config"])
    made = skipped = frames = 0
    for fields in shard["specs"]:
        spec = SequenceSpec(**fields)
        if all(fs.exists(root.join(part, spec.relpath)) for part in ("pose", "sil")):
            skipped += 1
            continue
        pose, sil = generate_sequence(spec, cfg)
        write_sequence(out_root, spec, pose, sil)
        made += 1
        frames += int(pose.shape[0])
    return {"made": made, "skipped": skipped, "frames": frames}


def run_synth_job(out_root: str, cfg: SynthConfig, workers: int | None = None,
                  preview: bool = True) -> dict[str, Any]:
    """Generate the synthetic data set under `out_root` (a folder or URI) with Ray; returns counts and seconds."""
    started = time.perf_counter()
    root = fs.resolve(fs.absolute(out_root))
    out_root = root.uri
    fs.makedirs(root)
    write_metadata(out_root, cfg)
    specs = [dataclasses.asdict(s) for s in plan_sequences(cfg)]
    shards = [{"specs": specs[i:i + SHARD_SEQUENCES]} for i in range(0, len(specs), SHARD_SEQUENCES)]
    ensure_ray(shared={"--out": out_root}, resources={"CPU": 1}, what="ray-gait synth")
    made = skipped = frames = 0
    rows = map_shards(shards, generate_shard, {"out_root": out_root, "config": cfg.to_dict()}, workers)
    with stage("synth", total=len(specs), unit="seq") as progress:
        for row in rows:
            made, skipped, frames = made + row["made"], skipped + row["skipped"], frames + row["frames"]
            progress.update(row["made"] + row["skipped"], written=made, frames=frames)
    if preview:
        write_preview(out_root, root.join("preview.png").uri)
    return {"sequences": len(specs), "made": made, "skipped": skipped, "frames": frames,
            "seconds": time.perf_counter() - started, "output": out_root}
