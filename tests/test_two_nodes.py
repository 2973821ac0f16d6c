"""Nothing assumes one node or a shared disk: step 1 and a 2-worker training on a simulated 2-node cluster
whose nodes each run in a folder of their own and share only a bucket (the session's S3 server)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def test_heatmaps_and_training_on_two_nodes_that_share_only_a_bucket(tmp_path, s3_bucket):
    s3, bucket = s3_bucket
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_AUTH_MODE="disabled",
               RAY_TMPDIR=tempfile.mkdtemp(prefix="rg2n", dir="/tmp"), RAY_DATA_DISABLE_PROGRESS_BARS="1",
               RAY_TRAIN_HEALTH_CHECK_INTERVAL_S="0.5")
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run([sys.executable, str(HERE / "two_node_run.py"), str(tmp_path), bucket], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    seen = json.loads((tmp_path / "seen.json").read_text())
    assert seen["nodes"] == 2
    assert seen["shard_nodes"] == 2, seen["task_names"]
    assert seen["train_worker_nodes"] == 2
    assert seen["node_folders"] == [str(tmp_path / "node_head"), str(tmp_path / "node_worker")]
    assert seen["sequences"] == 6 * 2 * 8 and seen["errors"] == 0
    assert seen["iteration"] == 2
    assert f"{bucket}/runs/two_nodes/checkpoint_" in seen["checkpoint"]
    assert s3.get_file_info(seen["checkpoint"].split("://")[-1] + "/state.pt").size > 0
    assert os.listdir(tmp_path / "node_head") == [] and os.listdir(tmp_path / "node_worker") == []
