"""The on-demand reader against a real S3-protocol server (moto's, on 127.0.0.1, started by the test)."""
from __future__ import annotations

import json
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "skeletongait"


def _upload(bucket, local: Path, prefix: str) -> str:
    import pyarrow.fs as pafs
    s3, name = bucket
    pafs.copy_files(str(local), f"{name}/{prefix}", source_filesystem=pafs.LocalFileSystem(), destination_filesystem=s3)
    return f"s3://{name}/{prefix}"


def test_training_batches_read_from_a_bucket_equal_the_local_ones(synth_maps, s3_bucket):
    from ray_gait.data.index import build_index
    from ray_gait.data.reader import SequenceReader
    from ray_gait.config import load_train_config
    from ray_gait.data.batches import BatchMaker
    data, paired = synth_maps
    ids = json.loads((data / "partition.json").read_text())["TRAIN_SET"]
    cfg = load_train_config(str(CONFIGS / "skeletongait++_synth.yaml"), {"trainer_cfg.sampler.batch_size": [4, 2]})
    sources = {
        "paired": (str(paired), "", _upload(s3_bucket, paired, "paired"), ""),
        "poses": (str(data / "pose"), str(data / "sil"), _upload(s3_bucket, data / "pose", "pose"),
                  _upload(s3_bucket, data / "sil", "sil")),
    }
    for name, (local, local_sil, remote, remote_sil) in sources.items():
        batches = []
        for root, sil in ((local, local_sil), (remote, remote_sil)):
            index = build_index(root, ids, silhouette_root=sil, needs_silhouettes=True)
            maker = BatchMaker(SequenceReader(index, ("heatmap", "silhouette"), cache_bytes=1 << 20),
                               cfg.trainer_cfg.sampler, cfg.trainer_cfg.transform, seed=1)
            batches.append((index, [maker.make(step) for step in range(2)]))
        (local_index, here), (remote_index, there) = batches
        assert remote_index.refs[0].file.startswith(f"s3://{s3_bucket[1]}/") and local_index.keys == remote_index.keys, name
        for (xa, ya, _), (xb, yb, _) in zip(here, there):
            assert torch.equal(xa, xb) and torch.equal(ya, yb), name
