"""The on-demand reader against a real S3-protocol server (moto's, on 127.0.0.1, started by the test)."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "skeletongait"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3_bucket():
    """A moto S3 server on 127.0.0.1 and a bucket; the AWS variables point pyarrow at it."""
    server = shutil.which("moto_server")
    if server is None:
        pytest.skip("moto[server] is not installed (pip install -e '.[test]')")
    port = _free_port()
    process = subprocess.Popen([server, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                            "AWS_DEFAULT_REGION", "AWS_EC2_METADATA_DISABLED")}
    os.environ.update(AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", AWS_ACCESS_KEY_ID="test",
                      AWS_SECRET_ACCESS_KEY="test", AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "moto_server did not start"
                time.sleep(0.2)
        import pyarrow.fs as pafs
        s3 = pafs.S3FileSystem(endpoint_override=f"http://127.0.0.1:{port}", access_key="test", secret_key="test",
                               region="us-east-1", allow_bucket_creation=True)
        s3.create_dir("gait")
        yield s3
    finally:
        process.terminate()
        process.wait(10)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _upload(s3, local: Path, prefix: str) -> str:
    import pyarrow.fs as pafs
    pafs.copy_files(str(local), f"gait/{prefix}", source_filesystem=pafs.LocalFileSystem(), destination_filesystem=s3)
    return f"s3://gait/{prefix}"


def test_training_batches_read_from_a_bucket_equal_the_local_ones(synth_maps, s3_bucket):
    from ray_gait.data.index import build_index
    from ray_gait.data.reader import SequenceReader
    from ray_gait.training.config import load_train_config
    from ray_gait.training.data import BatchMaker
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
        assert remote_index.refs[0].file.startswith("s3://gait/") and local_index.keys == remote_index.keys, name
        for (xa, ya, _), (xb, yb, _) in zip(here, there):
            assert torch.equal(xa, xb) and torch.equal(ya, yb), name
