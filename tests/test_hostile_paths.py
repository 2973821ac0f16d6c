"""Hostile path components and folders: nothing is written outside the output root, listing survives
symlink loops, and `link` replaces only its own previous output.

No Ray: each test calls the plain function the Ray job maps or runs before any Ray work.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ray_gait.heatmap.config import load_heatmap_config
from ray_gait.heatmap.shards import JobSettings, render_shard
from ray_gait.io.shards import plan_shards
from ray_gait.ingest.formats import GREW, OPENPOSE_JSON
from ray_gait.ingest.layout import group_sequences
from ray_gait.io import fs
from ray_gait.io.dataset import MANIFEST
from ray_gait.pose.io import POSE_SCHEMA, pose_row, pose_source
from ray_gait.ray_layer.evaluate import condition_plot_name, run_evaluation
from ray_gait.ray_layer.heatmap_job import run_heatmap_job
from ray_gait.ray_layer.link_job import LINK_KIND, _replace_local, check_output_folder, run_link_job
from ray_gait.config import config_from_tree
from ray_gait.tuning.space import search_spec_from_dict
from ray_gait.yaml_config import ConfigError

UNSAFE = "not a safe path component"


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "../x", "a\\b", "a\x00b", "a\nb", "a\x1bb", "\x7f",
                                  "x" * 256, "é" * 128, "\udcff"])
def test_unsafe_components_are_refused_with_the_reason(name):
    with pytest.raises(ValueError, match=f"^id from f.parquet: .* is {UNSAFE}: "):
        fs.safe_component(name, "id from f.parquet")


@pytest.mark.parametrize("name", ["001", "nm-01", "000_00", "..a", "a..", "~x", "é" * 127, "x" * 255, "a b"])
def test_plain_components_are_kept(name):
    assert fs.safe_component(name, "id") == name


def _files_below(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def _pose_dataset(root: Path, keys: list[tuple[str, str, str, str]], pose: np.ndarray) -> Path:
    """A Parquet pose data set (as `ray-gait ingest` writes it) with one row per key, all with the same pose."""
    root.mkdir(parents=True)
    rows = [pose_row({"id": i, "type": t, "view": v, "seq": s, "source": f"{i}/{t}/{v}/{s}.pkl"}, pose)
            for i, t, v, s in keys]
    pq.write_table(pa.Table.from_pylist(rows, schema=POSE_SCHEMA), root / "part-00000.parquet")
    (root / MANIFEST).write_text(json.dumps({"kind": "pose"}))
    return root


def test_pose_rows_with_dotdot_or_slash_keys_write_nothing_outside_the_save_root(tmp_path, fixture_poses):
    keys = [("001", "nm", "000", "s"),                 # fine
            ("..", "..", "..", "escaped"),             # the pkl would land beside --save_root
            ("..", "nm", "000", "s"),                  # ... inside the output folder, beside pkl/
            ("a/b", "nm", "000", "s"),                 # a separator inside a component
            ("002", "nm", "..\x00", "s")]              # NUL
    poses = _pose_dataset(tmp_path / "poses", keys, fixture_poses["walk_a"][:6])
    save_root = tmp_path / "save"
    out = save_root / "T_sigma_8.0_"
    sources = sorted(pose_source(dict(zip(("id", "type", "view", "seq"), key))) for key in keys)
    shard = plan_shards(sources, len(sources))[0]
    order = {pose_source(dict(zip(("id", "type", "view", "seq"), key))): n for n, key in enumerate(keys)}
    shard["pose_parts"] = ["part-00000.parquet"] * len(sources)
    shard["pose_rows"] = [order[source] for source in sources]
    settings = JobSettings(pose_root=str(poses), out_root=str(out), dataset_name="T",
                           config=load_heatmap_config().to_dict(), write_pkl=True, pose_dataset=True)
    before = _files_below(tmp_path)
    record = render_shard(shard, settings)
    written = _files_below(tmp_path) - before
    assert not (tmp_path / "escaped.pkl").exists() and not (out / "nm").exists()
    assert written == {"save/T_sigma_8.0_/pkl/001/nm/000/s.pkl", f"save/T_sigma_8.0_/{shard['name']}.parquet",
                       f"save/T_sigma_8.0_/_shards/{shard['name']}.json"}
    assert record["rows"] == 1
    reasons = {err["source"]: err["reason"] for err in record["errors"]}
    assert set(reasons) == set(sources) - {"001/nm/000/s.pkl"}
    assert all(UNSAFE in reason and "part-00000.parquet" in reason for reason in reasons.values())
    assert "'a/b'" in reasons["a/b/nm/000/s.pkl"] and "path separator" in reasons["a/b/nm/000/s.pkl"]


def test_heatmap_output_name_from_the_command_line_is_checked_first(tmp_path):
    with pytest.raises(ValueError, match=UNSAFE):
        run_heatmap_job(str(tmp_path / "none"), str(tmp_path / "save"), "../../x", load_heatmap_config())
    assert not (tmp_path / "save").exists()


def test_ingest_keys_from_object_store_names_are_refused_per_folder():
    files = ["root/../nm/000/f0.json", "root/001/nm/000/f0.json", "root/001/n\x1bm/000/f0.json"]
    sequences, errors = group_sequences(files, OPENPOSE_JSON)
    assert [s.key for s in sequences] == ["001/nm/000/000"]
    reasons = {err["source"]: err["reason"] for err in errors}
    assert set(reasons) == {"root/../nm/000", "root/001/n\x1bm/000"}
    assert all(UNSAFE in reason for reason in reasons.values())
    grew, grew_errors = group_sequences(["test/probe/../f_2d_pose.txt", "test/probe/s1/f_2d_pose.txt"], GREW)
    assert [s.key for s in grew] == ["probe/03/s1/s1"] and UNSAFE in grew_errors[0]["reason"]


LISTING = textwrap.dedent("""
    import sys, time
    from ray_gait.io import fs
    root = fs.resolve(sys.argv[1])
    started = time.perf_counter()
    everything = fs.list_files(root)
    found = fs.list_files(root, depth=4, pattern="*.pkl")
    removed = fs.remove_temporaries(root)
    print(time.perf_counter() - started, len(everything), ",".join(found), removed)
""")


def test_listing_survives_links_to_dotdot_and_follows_linked_folders(tmp_path):
    root = tmp_path / "data" / "root"
    (root / "002" / "nm" / "000").mkdir(parents=True)
    (root / "002" / "nm" / "000" / "s.pkl").write_bytes(b"x")
    (root / "002" / "nm" / "000" / ".s.pkl.tmp-0000abcd").write_bytes(b"x")
    for name in ("up1", "up2", "up3"):
        (root / name).symlink_to("..")
    elsewhere = tmp_path / "elsewhere" / "001" / "nm" / "000"
    elsewhere.mkdir(parents=True)
    (elsewhere / "s.pkl").write_bytes(b"x")
    (elsewhere.parent / "090").symlink_to(os.path.relpath(elsewhere, elsewhere.parent))   # a second way in
    (root / "001").symlink_to(tmp_path / "elsewhere" / "001")                             # OpenGait's link trees
    done = subprocess.run([sys.executable, "-c", LISTING, str(root)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    seconds, count, found, removed = done.stdout.split()
    assert float(seconds) < 0.5
    assert found.split(",") == ["001/nm/000/s.pkl", "002/nm/000/s.pkl"]
    assert int(removed) == 1 and not (root / "002" / "nm" / "000" / ".s.pkl.tmp-0000abcd").exists()
    assert int(count) == 3          # the two pkl files and the temporary, each once


def _link_output(folder: Path, extra: str = "part-0.parquet", kind: str | None = LINK_KIND) -> Path:
    folder.mkdir(parents=True)
    manifest = {"heatmap_data_path": "h", "silhouette_data_path": "s", "inputs_hash": "x", "paired": 1}
    if kind is not None:
        manifest["kind"] = kind
    (folder / MANIFEST).write_text(json.dumps(manifest))
    (folder / extra).write_bytes(b"old")
    return folder


@pytest.mark.parametrize("fmt", ["parquet", "symlink"])
def test_link_refuses_a_folder_it_did_not_write_and_deletes_nothing(tmp_path, fmt):
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "chapter1.tex").write_text("precious")
    with pytest.raises(ValueError, match=r"holds no output of `ray-gait link`.*'chapter1.tex'.*Nothing was deleted"):
        run_link_job(str(tmp_path / "maps"), str(tmp_path / "sils"), str(out), fmt=fmt)
    assert (out / "chapter1.tex").read_text() == "precious" and os.listdir(out) == ["chapter1.tex"]
    assert sorted(os.listdir(tmp_path)) == ["thesis"]


def test_link_output_check_tells_its_own_output_from_other_folders(tmp_path):
    check_output_folder(fs.resolve(str(tmp_path / "new")))
    (tmp_path / "empty").mkdir()
    check_output_folder(fs.resolve(str(tmp_path / "empty")))
    check_output_folder(fs.resolve(str(_link_output(tmp_path / "mine"))))
    check_output_folder(fs.resolve(str(_link_output(tmp_path / "older", kind=None))))   # before `kind` was written
    (tmp_path / "file").write_text("x")
    (tmp_path / "linked").symlink_to(tmp_path / "mine")
    heatmaps = tmp_path / "heatmaps"
    heatmaps.mkdir()
    (heatmaps / MANIFEST).write_text(json.dumps({"config_hash": "c", "files": {}}))
    bad_json = tmp_path / "bad_json"
    bad_json.mkdir()
    (bad_json / MANIFEST).write_text("{")
    for name, reason in [("file", "is a file"), ("linked", "symbolic link"), ("heatmaps", "holds no output"),
                         ("bad_json", "holds no output"), ("pose", "holds no output")]:
        if name == "pose":
            _link_output(tmp_path / "pose", kind="pose")
        with pytest.raises(ValueError, match=reason):
            check_output_folder(fs.resolve(str(tmp_path / name)))
    assert (heatmaps / MANIFEST).exists() and (tmp_path / "file").exists()


def test_link_replaces_its_own_previous_output_and_nothing_else(tmp_path):
    out = _link_output(tmp_path / "paired", extra="stale.parquet")
    staging = _link_output(tmp_path / "paired.staging-1", extra="fresh.parquet")
    _replace_local(str(staging), str(out))
    assert sorted(os.listdir(out)) == [MANIFEST, "fresh.parquet"]
    assert sorted(os.listdir(tmp_path)) == ["paired"]
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("keep")
    staging = _link_output(tmp_path / "other.staging-2", extra="fresh.parquet")
    with pytest.raises(ValueError, match="holds no output"):
        _replace_local(str(staging), str(other))
    assert os.listdir(other) == ["keep.txt"] and staging.exists()


def _protocol_cfg(tmp_path: Path, condition: str):
    protocol = tmp_path / "protocol.json"
    protocol.write_text(json.dumps({"gallery": ["nm-01"], "probes": {"NM": ["nm-02"], condition: ["bg-01"]}}))
    return config_from_tree({"evaluator_cfg": {"eval_func": "evaluate_protocol"},
                             "data_cfg": {"dataset_protocol": str(protocol)},
                             "ray_cfg": {"storage_path": str(tmp_path / "runs")}})


@pytest.mark.parametrize("condition", ["../x", "a/b", "..", "x\x00"])
def test_protocol_condition_names_that_are_not_file_names_are_refused_first(tmp_path, condition):
    cfg = _protocol_cfg(tmp_path, condition)
    with pytest.raises(ValueError, match=f"condition name from .*protocol.json: .* is {UNSAFE}"):
        run_evaluation(cfg, {}, str(tmp_path / "test"))
    assert not (tmp_path / "test").exists() and not (tmp_path / "x").exists()


def test_condition_plot_names():
    assert condition_plot_name("CL-UP", "p.json") == "rank1_views_CL-UP.png"
    with pytest.raises(ValueError, match="plot file name"):
        condition_plot_name("c" * 250, "p.json")


@pytest.mark.parametrize("section", ["trainer_cfg", "evaluator_cfg"])
@pytest.mark.parametrize("name", ["../elsewhere", "a/b", "..", "", "/abs"])
def test_save_names_that_are_not_folder_names_are_refused(section, name):
    with pytest.raises(ConfigError, match=f"{section}.save_name: .* is {UNSAFE}"):
        config_from_tree({section: {"save_name": name}})


@pytest.mark.parametrize("tree", [{"name": "../sweep"}, {"name": "a/b"}, {"name": "x" * 251},
                                  {"data": {"pose_data_path": "p", "dataset_name": "../d"}}])
def test_sweep_names_that_are_not_folder_names_are_refused(tree):
    with pytest.raises(ConfigError, match=UNSAFE):
        search_spec_from_dict({"space": {"optimizer_cfg.lr": {"choice": [0.1]}}, **tree}, source="space.yaml")


def test_partition_ids_that_are_not_folder_names_are_refused(tmp_path):
    from ray_gait.data.partition import read_partition
    path = tmp_path / "partition.json"
    path.write_text(json.dumps({"TRAIN_SET": ["001", "002"], "TEST_SET": ["003"]}))
    assert read_partition(str(path))["TEST_SET"] == ["003"]
    for bad in ("..", "a/b", "x\x00"):
        path.write_text(json.dumps({"TRAIN_SET": ["001"], "TEST_SET": [bad]}))
        with pytest.raises(ValueError, match="TEST_SET id in .*not a safe path component"):
            read_partition(str(path))


def test_a_missing_or_broken_partition_file_is_named(tmp_path):
    """`ray-gait train` printed `[Errno 2] No such file or directory` (no config key) for a missing partition, and
    json's `Expecting value: line 1 column 1` (no file) for a broken one."""
    from ray_gait.data.split import partition_splits
    from ray_gait.config import load_train_config
    from ray_gait.data.partition import read_partition
    path = tmp_path / "partition.json"
    cfg = load_train_config(str(Path(__file__).resolve().parents[1] / "configs" / "skeletongait" /
                                "skeletongait_synth.yaml"), {"data_cfg.dataset_partition": str(path)})
    with pytest.raises(FileNotFoundError, match=f"data_cfg.dataset_partition: partition file not found: {path}"):
        partition_splits(cfg)
    for data in (b"", b"{not json", b"\xff\xfe\x00"):
        path.write_bytes(data)
        with pytest.raises(ValueError, match=f"{path}: not a partition JSON"):
            read_partition(str(path))
