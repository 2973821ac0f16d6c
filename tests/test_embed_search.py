"""`ray-gait embed` and `ray-gait search`: the embeddings of `ray-gait test`, poses equal to maps, exact chunked
search against the evaluation's full distance matrix, CSV/JSON outputs, and the memory bound."""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs
import pyarrow.parquet as pq
import pytest

from ray_gait.cli import main
from ray_gait.data.split import dataset_index
from ray_gait.evaluation.embed_shards import plan_shards
from ray_gait.evaluation.metrics import distances
from ray_gait.evaluation.search import COLUMNS, array_chunks, search, search_chunks, write_results
from ray_gait.io import fs
from ray_gait.io.embeddings import SCHEMA, iter_chunks, prepare_output, read_embeddings, write_part
from ray_gait.config import load_train_config

from synth_eval import CONFIG, random_weights, set_args, synth_overrides

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- search (plain numpy, no Ray)

def _random_set(n: int, seed: int, shape: tuple[int, int] = (16, 4)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, *shape)).astype(np.float32)
    keys = np.array([[f"{i // 4:03d}", f"t{i % 4}", "090", f"s{i}"] for i in range(n)], dtype=object)
    return emb, keys


def _write_set(root: Path, emb: np.ndarray, keys: np.ndarray, sizes: list[int]) -> str:
    """Write an embeddings data set in parts of the given sizes (the rest in a last part)."""
    loc = fs.resolve(str(root))
    start = 0
    for shard, size in enumerate([*sizes, len(emb) - sum(sizes)]):
        write_part(loc.join(f"part-{shard:06d}.parquet"), [tuple(k) for k in keys[start:start + size]],
                   list(emb[start:start + size]))
        start += size
    return str(root)


def _expected(probe: np.ndarray, gallery: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    full = distances(probe, gallery, metric)
    order = np.argsort(full, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(full, order, axis=1)


@pytest.mark.parametrize("metric", ["euc", "cos"])
def test_search_equals_the_full_distance_matrix(tmp_path, metric):
    gallery, gkeys = _random_set(61, 0)
    probe, pkeys = _random_set(23, 1)
    g = _write_set(tmp_path / "g", gallery, gkeys, [10, 3, 25])     # chunks cross part boundaries
    p = _write_set(tmp_path / "p", probe, pkeys, [9])
    rows = list(search(g, p, top_k=5, metric=metric, probe_rows=5, gallery_rows=7))
    assert len(rows) == 23 * 5
    order, dist = _expected(probe, gallery, 5, metric)
    for i in range(23):
        mine = rows[5 * i:5 * i + 5]
        assert [r["rank"] for r in mine] == [1, 2, 3, 4, 5]
        assert all(tuple(r[f"probe_{n}"] for n in ("id", "type", "view", "seq")) == tuple(pkeys[i]) for r in mine)
        assert [r["gallery_seq"] for r in mine] == [gkeys[j][3] for j in order[i]]
        assert [r["gallery_id"] for r in mine] == [gkeys[j][0] for j in order[i]]
        np.testing.assert_allclose([r["distance"] for r in mine], dist[i], rtol=1e-5, atol=1e-6)


def test_search_orders_ties_by_gallery_row_and_stops_at_the_gallery_size():
    gallery, _ = _random_set(6, 2)
    gallery = np.concatenate([gallery, gallery[::-1]])        # every distance twice: rows j and 11 - j
    probe, _ = _random_set(4, 3)
    for metric in ("euc", "cos"):
        rows = list(search_chunks(array_chunks(probe, rows=3), lambda: array_chunks(gallery, rows=5), 20, metric))
        assert len(rows) == 4 * 12
        order, _ = _expected(probe, gallery, 12, metric)
        got = np.array([int(r["gallery_id"]) for r in rows]).reshape(4, 12)
        assert (got == order).all()


def test_search_refuses_what_it_cannot_compare(tmp_path):
    a, ka = _random_set(5, 0, (16, 4))
    b, kb = _random_set(5, 1, (16, 8))
    with pytest.raises(ValueError, match="differ"):
        list(search(_write_set(tmp_path / "a", a, ka, []), _write_set(tmp_path / "b", b, kb, [])))
    with pytest.raises(ValueError, match="top-k"):
        list(search_chunks(array_chunks(a), lambda: array_chunks(a), 0))
    with pytest.raises(FileNotFoundError):
        list(search(str(tmp_path / "nothing"), str(tmp_path / "a")))
    bad = tmp_path / "bad"
    bad.mkdir()
    table = pa.Table.from_pydict({"id": ["1"], "type": ["t"], "view": ["v"], "seq": ["s"], "embedding": [b"\0" * 12],
                                  "dim": [4], "parts": [1]}, schema=SCHEMA)
    pq.write_table(table, bad / "part-000000.parquet")
    with pytest.raises(ValueError, match="embedding bytes"):
        list(iter_chunks(str(bad), 4))


def test_search_command_writes_csv_and_json_with_the_spec_columns(tmp_path, capsys):
    gallery, gkeys = _random_set(30, 4)
    probe, pkeys = _random_set(7, 5)
    g = _write_set(tmp_path / "g", gallery, gkeys, [11])
    p = _write_set(tmp_path / "p", probe, pkeys, [])
    assert main(["search", "--gallery", g, "--probe", p, "--top-k", "3", "--metric", "cos",
                 "--out", str(tmp_path / "m.csv"), "--show", "4"]) == 0
    printed = capsys.readouterr().out
    assert "probe" in printed.splitlines()[0] and "7 probes x top-3 (cos) = 21 rows (first 4 shown)" in printed
    with open(tmp_path / "m.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert tuple(table[0]) == COLUMNS and len(table) == 21
    assert main(["search", "--gallery", g, "--probe", p, "--top-k", "3", "--metric", "cos",
                 "--out", str(tmp_path / "m.json")]) == 0
    rows = json.loads((tmp_path / "m.json").read_text())
    assert len(rows) == 21 and all(tuple(r) == COLUMNS for r in rows)
    assert [(r["probe_seq"], r["rank"], r["gallery_seq"]) for r in rows] == \
        [(r["probe_seq"], int(r["rank"]), r["gallery_seq"]) for r in table]
    assert [float(r["distance"]) for r in table] == [r["distance"] for r in rows]
    order, _ = _expected(probe, gallery, 3, "cos")
    assert [r["gallery_seq"] for r in rows[:3]] == [gkeys[j][3] for j in order[0]]
    assert main(["search", "--gallery", g, "--probe", p, "--out", str(tmp_path / "m.txt")]) == 1
    assert "must end in .csv or .json" in capsys.readouterr().err
    job = subprocess.run([sys.executable, str(ROOT / "jobs" / "search.py"), "--gallery", g, "--probe", p, "--top-k",
                          "1"], capture_output=True, text=True, check=False)
    assert job.returncode == 0 and "7 probes x top-1 (euc) = 7 rows" in job.stdout, job.stderr
    help_text = subprocess.run([sys.executable, str(ROOT / "jobs" / "embed.py"), "--help"], capture_output=True,
                               text=True, check=False)
    assert help_text.returncode == 0 and "--data" in help_text.stdout


def test_search_reads_from_and_writes_into_a_bucket(s3_bucket, tmp_path, capsys):
    s3, bucket = s3_bucket
    gallery, gkeys = _random_set(20, 6)
    local = _write_set(tmp_path / "g", gallery, gkeys, [8])
    pa.fs.copy_files(local, f"{bucket}/g", source_filesystem=pa.fs.LocalFileSystem(), destination_filesystem=s3)
    assert main(["search", "--gallery", f"s3://{bucket}/g", "--probe", local, "--top-k", "2",
                 "--out", f"s3://{bucket}/out/m.json"]) == 0
    rows = json.loads(s3.open_input_stream(f"{bucket}/out/m.json").read())
    assert len(rows) == 40 and all(r["rank"] == 1 and r["distance"] < 0.05 and r["gallery_seq"] == r["probe_seq"]
                                   for r in rows[::2])
    assert f"-> s3://{bucket}/out/m.json" in capsys.readouterr().out


def test_search_memory_does_not_grow_with_the_gallery(tmp_path):
    """Peak numpy memory of a search over a gallery 4x larger stays the same, far below the gallery's size."""
    probe, pkeys = _random_set(100, 7, (16, 16))
    p = _write_set(tmp_path / "p", probe, pkeys, [])
    peaks = {}
    for n in (3_000, 12_000):
        gallery, gkeys = _random_set(n, 8, (16, 16))
        g = _write_set(tmp_path / f"g{n}", gallery, gkeys, [n // 4, n // 4, n // 4])
        del gallery, gkeys
        tracemalloc.start()
        summary = write_results(search(g, p, top_k=5, probe_rows=128, gallery_rows=128), str(tmp_path / "m.csv"))
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert summary.rows == 100 * 5
    gallery_bytes = 12_000 * 16 * 16 * 4
    assert peaks[12_000] < gallery_bytes / 8, peaks
    assert peaks[12_000] < 1.25 * peaks[3_000] + (256 << 10), peaks


def test_prepare_output_replaces_only_its_own_output(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="Nothing was deleted"):
        prepare_output(fs.resolve(str(foreign)))
    assert (foreign / "notes.txt").exists()
    emb, keys = _random_set(5, 0)
    own = Path(_write_set(tmp_path / "own", emb, keys, [2]))
    (own / "_manifest.json").write_text(json.dumps({"kind": "embeddings"}))
    assert prepare_output(fs.resolve(str(own))) == 3
    assert list(own.iterdir()) == []


def test_shards_cover_every_position_once_and_give_each_worker_work():
    assert [(s["start"], s["stop"]) for s in plan_shards(10, 4, 1)] == [(0, 4), (4, 8), (8, 10)]
    assert [s["stop"] - s["start"] for s in plan_shards(128, 128, 2)] == [32] * 4
    assert [s["shard"] for s in plan_shards(1_000, 128, 1)] == list(range(8))
    assert plan_shards(0, 128, 2) == []


# ---------------------------------------------------------------- embed (Ray Data actors)

@pytest.fixture(scope="module")
def embed_setup(synth_maps, tmp_path_factory):
    """Overrides of the SkeletonGait synth config for the synthetic set, random weights, and those weights' embeddings
    of the whole paired data set by `ray-gait embed`."""
    data, paired = synth_maps
    root = tmp_path_factory.mktemp("embed")
    overrides = synth_overrides(data, paired)
    weights = random_weights(overrides, root / "random.pt")
    args = ["--cfgs", str(CONFIG), "--checkpoint", str(weights), *set_args(overrides)]
    out = root / "maps-emb"
    assert main(["embed", *args, "--data", str(paired), "--out", str(out), "--workers", "2"]) == 0
    return {"data": data, "paired": paired, "args": args, "root": root, "out": out, "weights": weights}


def _by_key(emb: np.ndarray, keys: np.ndarray) -> dict[tuple[str, ...], np.ndarray]:
    return {tuple(str(v) for v in key): e for key, e in zip(keys, emb)}


def test_embed_gives_the_embeddings_of_ray_gait_test(embed_setup, capsys):
    setup = embed_setup
    out = setup["out"]
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["kind"] == "embeddings" and manifest["checkpoint"] == str(setup["weights"])
    assert manifest["config"]["data_cfg"]["dataset_root"] == str(setup["paired"])
    assert manifest["sequences"] == 8 * 8 * 2 and manifest["unreadable"] == [] and manifest["dim"] == 64
    schema = pq.read_schema(out / min(manifest["files"]))
    assert [(f.name, str(f.type)) for f in schema] == [(f.name, str(f.type)) for f in SCHEMA]
    emb, keys = read_embeddings(str(out))
    assert emb.shape == (128, 64, 16) and emb.dtype == np.float32
    assert [tuple(k) for k in keys] == sorted(tuple(k) for k in keys)
    assert main(["test", *setup["args"], "--out", str(setup["root"] / "test")]) == 0
    saved = np.load(setup["root"] / "test" / "embeddings.npz")
    test_keys = np.stack([saved[k] for k in ("id", "type", "view", "seq")], axis=1)
    mine = _by_key(emb, keys)
    for key, expected in _by_key(saved["embeddings"], test_keys).items():
        np.testing.assert_allclose(mine[key], expected, rtol=1e-5, atol=1e-6, err_msg=str(key))
    assert len(saved["embeddings"]) == 64
    capsys.readouterr()


def test_embed_from_poses_equals_embed_from_maps_into_a_bucket(embed_setup, s3_bucket, tmp_path, caplog):
    s3, bucket = s3_bucket
    setup = embed_setup
    pose = tmp_path / "pose"
    ids = sorted(p.name for p in (setup["data"] / "pose").iterdir())[:2]
    for ident in ids:
        shutil.copytree(setup["data"] / "pose" / ident, pose / ident)
    broken = f"{ids[0]}/nm-01/000/broken"
    (pose / f"{broken}.pkl").write_bytes(b"not a pickle")
    out = f"s3://{bucket}/pose-emb"
    assert main(["embed", *setup["args"], "--data", str(pose), "--out", out]) == 0
    emb, keys = read_embeddings(out)
    manifest = json.loads(s3.open_input_stream(f"{bucket}/pose-emb/_manifest.json").read())
    assert [item["sequence"] for item in manifest["unreadable"]] == [broken]
    assert broken in caplog.text
    maps = _by_key(*read_embeddings(str(setup["out"])))
    assert len(emb) == 2 * 8 * 2
    for key, value in _by_key(emb, keys).items():
        np.testing.assert_allclose(value, maps[key], rtol=1e-4, atol=1e-5, err_msg=str(key))
    # SkeletonGait++ from poses: embed indexes them paired with data_cfg.silhouette_root, as training does
    plus = load_train_config(str(CONFIG.parent / "skeletongait++_synth.yaml"),
                             {"data_cfg.silhouette_root": str(setup["data"] / "sil")})
    paired_index = dataset_index(plus, str(pose))
    assert len(paired_index) == 32 and all(ref.sil for ref in paired_index.refs)
    # and a search of those poses in the maps' embeddings finds each sequence itself first
    rows = list(search(str(setup["out"]), out, top_k=1))
    assert all(r["gallery_seq"] == r["probe_seq"] and r["gallery_id"] == r["probe_id"] for r in rows)
