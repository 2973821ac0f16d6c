"""`ray-gait embed` on Ray Data: every sequence of a data set -> an embeddings data set (docs/formats.md), streaming.

The driver indexes the data set (keys and file positions only) and plans shards of consecutive
sequences; Ray Data actors (CPU, or one GPU each with `ray_cfg.use_gpu`) load the model once, embed
their shards through the evaluation's `Embedder` and each writes its shard's Parquet part itself.
Only small records (rows, shape, unreadable sequences) come back to the driver, which writes
`_manifest.json` last: memory stays that of one shard per actor whatever the size of the data set.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
import ray.data

from ray_gait.console import stage, warn_rejected
from ray_gait.data.index import SplitIndex
from ray_gait.data.split import dataset_index
from ray_gait.evaluation.embed_shards import DEFAULT_SHARD_SIZE, embed_shard, plan_shards
from ray_gait.io import fs
from ray_gait.io.dataset import MANIFEST, write_json_atomic
from ray_gait.io.embeddings import KIND, prepare_output
from ray_gait.ray_layer.evaluate import Embedder, find_checkpoint
from ray_gait.ray_layer.session import ensure_ray
from ray_gait.config import TrainConfig

log = logging.getLogger(__name__)


@dataclass
class EmbedSummary:
    """What an embed run wrote."""

    output: str
    sequences: int
    unreadable: int
    left_out: int
    dim: int
    parts: int
    files: int
    checkpoint: str
    seconds: float


class ShardEmbedder:
    """A Ray Data actor: the evaluation's Embedder (model loaded once), writing one Parquet part per shard."""

    def __init__(self, cfg: TrainConfig, index: SplitIndex, weights: str, use_gpu: bool, out: str) -> None:
        self.embedder = Embedder(cfg, index, weights, use_gpu)
        self.keys = index.keys
        self.out = out

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Shards {shard, start, stop} -> their records (part, rows, dim, parts, unreadable as a JSON list)."""
        records = [embed_shard(self.embedder.embedder, self.embedder.reader, self.keys,
                               {"shard": int(s), "start": int(a), "stop": int(b)}, self.out)
                   for s, a, b in zip(batch["shard"], batch["start"], batch["stop"])]
        out = {name: np.array([r[name] for r in records], dtype=np.int64) for name in ("shard", "rows", "dim", "parts")}
        out["part"] = np.array([r["part"] for r in records], dtype=object)
        out["unreadable"] = np.array([json.dumps(r["unreadable"]) for r in records], dtype=object)
        return out


def _check_shapes(records: list[dict[str, Any]]) -> tuple[int, int]:
    """The (dim, parts) every written part shares; RuntimeError when parts disagree."""
    shapes = {(int(r["dim"]), int(r["parts"])) for r in records if r["part"]}
    if len(shapes) > 1:
        raise RuntimeError(f"the parts hold embeddings of different shapes {sorted(shapes)}")
    return next(iter(shapes), (0, 0))


def run_embed_job(cfg: TrainConfig, config_tree: dict[str, Any], data: str, out: str, checkpoint: str | None = None,
                  workers: int | None = None, shard_size: int = DEFAULT_SHARD_SIZE) -> EmbedSummary:
    """Embed every sequence of `data` with the config's model and weights into the embeddings data set `out`."""
    started = time.perf_counter()
    weights = find_checkpoint(cfg, checkpoint)
    index = dataset_index(cfg, data)
    target = fs.resolve(out)
    removed = prepare_output(target)
    if removed:
        log.info("replacing the earlier embeddings in %s (%d files removed)", target.uri, removed)
    fs.makedirs(target)
    use_gpu = cfg.ray_cfg.use_gpu
    size = workers or max(1, min(cfg.ray_cfg.num_workers, len(index)))
    shards = plan_shards(len(index), shard_size, size)
    size = min(size, len(shards))
    log.info("embedding %d sequences of %s (%s) in %d shard(s) with %d actor(s) on %s, weights %s -> %s",
             len(index), data, index.kind, len(shards), size, "GPU" if use_gpu else "CPU", weights, target.uri)
    ensure_ray(shared={"--data": data, "--out": target.uri}, resources={"GPU": 1} if use_gpu else {"CPU": 1},
               what="ray-gait embed" + (" with ray_cfg.use_gpu" if use_gpu else ""))
    ds = ray.data.from_items(shards, override_num_blocks=len(shards))
    ds = ds.map_batches(ShardEmbedder, fn_constructor_kwargs={"cfg": cfg, "index": index, "weights": weights,
                                                              "use_gpu": use_gpu, "out": target.uri},
                        batch_size=1, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=size),
                        num_gpus=1 if use_gpu else 0, num_cpus=0 if use_gpu else 1)
    records: list[dict[str, Any]] = []
    with stage("embed", total=len(index), unit="seq") as progress:
        for row in ds.iter_rows():
            record = {key: row[key] for key in ("shard", "part", "rows", "dim", "parts")}
            record["unreadable"] = json.loads(row["unreadable"])
            records.append(record)
            progress.update(int(record["rows"]) + len(record["unreadable"]))
    if len(records) != len(shards):
        raise RuntimeError(f"the embedding actors returned {len(records)} of {len(shards)} shards")
    records.sort(key=lambda r: int(r["shard"]))
    dim, parts = _check_shapes(records)
    unreadable = [item for r in records for item in r["unreadable"]]
    warn_rejected([{"source": item["sequence"], "reason": item["reason"]} for item in unreadable],
                  f"{target.join(MANIFEST).uri} (unreadable)")
    files = {r["part"]: int(r["rows"]) for r in records if r["part"]}
    rows = sum(files.values())
    if not rows:
        raise ValueError(f"no sequence of {data} can be read ({unreadable[0]['reason'] if unreadable else 'empty'})")
    left_out = list(index.refused) + list(index.unpaired)
    manifest = {"kind": KIND, "config": config_tree, "checkpoint": weights, "data": fs.resolve(data).uri,
                "model": cfg.model_cfg.get("model"), "dim": dim, "parts": parts, "sequences": rows, "files": files,
                "unreadable": unreadable, "left_out": left_out, "seconds": time.perf_counter() - started}
    write_json_atomic(target.join(MANIFEST), manifest)
    return EmbedSummary(output=target.uri, sequences=rows, unreadable=len(unreadable), left_out=len(left_out),
                        dim=dim, parts=parts, files=len(files), checkpoint=weights,
                        seconds=time.perf_counter() - started)
