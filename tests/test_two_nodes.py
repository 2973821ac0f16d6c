"""Nothing assumes one node: step 1 and a 2-worker training on a simulated 2-node cluster, shared storage."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def test_heatmaps_and_training_on_two_nodes(tmp_path):
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_AUTH_MODE="disabled",
               RAY_TMPDIR=tempfile.mkdtemp(prefix="rg2n", dir="/tmp"), RAY_DATA_DISABLE_PROGRESS_BARS="1",
               RAY_TRAIN_HEALTH_CHECK_INTERVAL_S="0.5")
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run([sys.executable, str(HERE / "two_node_run.py"), str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    seen = json.loads((tmp_path / "seen.json").read_text())
    assert seen["nodes"] == 2 and seen["task_nodes"] == 2
    assert seen["sequences"] == 6 * 2 * 8 and seen["errors"] == 0
    assert seen["iteration"] == 2
    checkpoint = Path(seen["checkpoint"])
    assert checkpoint.is_relative_to(tmp_path / "shared_storage") and (checkpoint / "state.pt").exists()
