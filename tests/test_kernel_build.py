"""The compiled kernel travels with a copy of the project that lacks it (the upload of `ray job submit
--working-dir .`, where `.gitignore` leaves out `*.so`): it is built where the work runs, gives OpenGait's
maps, and where it cannot be had the shards and the manifest say which renderer drew them."""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ray_gait.heatmap import fast, shards
from ray_gait.io.shards import plan_shards
from ray_gait.ray_layer.heatmap_job import _renderers

from conftest import DATA, write_pose_tree

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import json, sys
import numpy as np
from ray_gait import load_heatmap_config, render_heatmaps
from ray_gait.heatmap import fast
data = sys.argv[1]
poses, expected = np.load(data + "/poses.npz"), np.load(data + "/expected_default.npz")
agree = []
if fast.available():
    for key in expected.files[:3]:
        ours = render_heatmaps(poses[key], load_heatmap_config(), backend="c")
        agree.append(float((ours == expected[key]).mean()))
print(json.dumps({"available": fast.available(), "origin": fast.kernel_origin(), "file": fast.__file__,
                  "agree": agree}))
"""


def _uploaded_copy(tmp_path: Path) -> Path:
    """The package as `ray job submit --working-dir .` ships it: sources only, no compiled file."""
    copy = tmp_path / "upload"
    shutil.copytree(ROOT / "ray_gait", copy / "ray_gait",
                    ignore=shutil.ignore_patterns("*.so", "__pycache__", "*.egg-info"))
    assert not list(copy.rglob("*.so"))
    return copy


def _probe(copy: Path, tmp: Path, **env: str) -> dict:
    tmp.mkdir(exist_ok=True)
    done = subprocess.run([sys.executable, "-c", PROBE, str(DATA / "opengait_heatmap")], cwd=copy,
                          env=dict(os.environ, PYTHONPATH=str(copy), TMPDIR=str(tmp), **env),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(shutil.which(os.environ.get("CC", "cc")) is None and shutil.which("gcc") is None,
                    reason="no C compiler")
def test_a_copy_without_the_compiled_kernel_builds_it_where_it_runs(tmp_path):
    copy = _uploaded_copy(tmp_path)
    first = _probe(copy, tmp_path / "tmp")
    assert first["file"].startswith(str(copy)), first        # the copy, not the installed package, was imported
    assert first["available"], first["origin"]
    assert first["origin"].startswith(f"built here ({tmp_path / 'tmp'}/ray_gait-"), first["origin"]
    # the kernel built from the copied source draws OpenGait's maps (the stored outputs of its generator)
    assert len(first["agree"]) == 3 and min(first["agree"]) >= 0.999, first["agree"]
    built = sorted((tmp_path / "tmp").rglob("_kernel*"))
    assert len(built) == 1 and oct(built[0].parent.stat().st_mode & 0o777) == "0o700"
    stamp = built[0].stat().st_mtime_ns
    # a second process on the machine loads the same build instead of compiling again
    second = _probe(copy, tmp_path / "tmp")
    assert second["available"] and second["origin"] == first["origin"]
    assert built[0].stat().st_mtime_ns == stamp


def test_a_copy_that_may_not_build_it_says_why(tmp_path):
    copy = _uploaded_copy(tmp_path)
    seen = _probe(copy, tmp_path / "tmp", RAY_GAIT_BUILD_KERNEL="0")
    assert not seen["available"]
    assert "not installed" in seen["origin"] and "RAY_GAIT_BUILD_KERNEL=0" in seen["origin"]
    assert not list((tmp_path / "tmp").rglob("_kernel*"))


def test_a_folder_of_another_user_or_open_to_others_is_not_loaded_from(tmp_path):
    from ray_gait.heatmap import kernel_build
    shared = tmp_path / f"ray_gait-{os.getuid()}"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    with pytest.raises(kernel_build.KernelBuildError, match="not a private folder"):
        kernel_build.built_kernel_path(str(tmp_path))


def test_shards_drawn_without_the_kernel_are_recorded_and_warned_once(tmp_path, fixture_poses, monkeypatch, caplog):
    from ray_gait.heatmap.config import load_heatmap_config
    key = next(k for k in fixture_poses if fixture_poses[k].shape[1] == 17)
    write_pose_tree(tmp_path / "pose", {"001/nm-01/000/seq": fixture_poses[key]})
    settings = shards.JobSettings(pose_root=str(tmp_path / "pose"), out_root=str(tmp_path / "out"),
                                  dataset_name="synth", config=load_heatmap_config().to_dict())
    plan = plan_shards(["001/nm-01/000/seq.pkl"], 1)[0]
    monkeypatch.setattr(fast, "_kernel", None)
    monkeypatch.setattr(fast, "_warned_fallback", False)
    with caplog.at_level(logging.WARNING):
        record = shards.render_shard(plan, settings)
        shards.render_shard(plan, settings)
    assert record["renderer"] == "numpy" and record["kernel"] == fast.kernel_origin()
    assert sum("compiled heatmap kernel is missing" in r.getMessage() for r in caplog.records) == 1
    stored = shards.load_shard_record(settings.out_root, plan["name"])
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert _renderers([stored, stored], "auto") == {"numpy": 2}
    assert any("2 of 2 shard(s) were rendered with numpy" in r.getMessage() for r in caplog.records)
    monkeypatch.undo()
    if fast.available():
        assert shards.render_shard(plan, settings)["renderer"] == "c"
