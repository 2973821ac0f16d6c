"""Ray Train on the on-demand data path: bounded worker memory, training and testing straight from poses."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from ray_gait.io import fs
from ray_gait.io.dataset import HEATMAP_SCHEMA, MANIFEST, heatmap_row, write_json_atomic, write_parquet_atomic
from ray_gait.config import config_from_tree
from ray_gait.yaml_config import apply_overrides, read_yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "skeletongait"


def _big_maps(root: Path, ids: int, per_id: int, frames: int) -> int:
    """A maps data set whose decoded size is large (mostly-zero maps compress to almost nothing on disk)."""
    rng = np.random.default_rng(0)
    decoded = 0
    for i in range(ids):
        rows = []
        for j in range(per_id):
            maps = np.zeros((frames, 2, 64, 64), dtype=np.uint8)
            maps[:, :, 8 + 4 * i % 40:24 + 4 * i % 40, 20:30] = rng.integers(100, 255, dtype=np.uint8)
            key = {"id": f"{i:03d}", "type": "nm", "view": f"{j:03d}", "seq": f"{j:03d}", "source": "synthetic"}
            rows.append(heatmap_row(key, maps))
            decoded += maps.nbytes
        write_parquet_atomic(fs.resolve(str(root / f"part-{i:05d}.parquet")), rows, HEATMAP_SCHEMA)
    write_json_atomic(fs.resolve(str(root / MANIFEST)), {"kind": "heatmap", "rows": ids * per_id})
    return decoded


def test_worker_memory_stays_bounded_on_a_data_set_larger_than_its_cache(ray_session, tmp_path):
    from ray_gait.ray_layer.trainer import run_training
    decoded = _big_maps(tmp_path / "maps", ids=8, per_id=4, frames=8000)        # 8 ids x 4 x 65.5 MB = 2.1 GB
    decoded_mib = decoded / 2**20
    assert decoded_mib >= 2000
    (tmp_path / "partition.json").write_text(json.dumps({"TRAIN_SET": [f"{i:03d}" for i in range(8)],
                                                          "TEST_SET": []}))
    tree = apply_overrides(read_yaml(str(CONFIGS / "skeletongait_synth.yaml")), {
        "data_cfg.dataset_root": str(tmp_path / "maps"), "data_cfg.dataset_partition": str(tmp_path / "partition.json"),
        "data_cfg.cache_mb": 100, "ray_cfg.storage_path": str(tmp_path / "runs"), "trainer_cfg.save_name": "big",
        "model_cfg.SeparateBNNecks.class_num": 8, "trainer_cfg.sampler.batch_size": [4, 2],
        "trainer_cfg.sampler.frames_num_fixed": 8, "trainer_cfg.total_iter": 4, "trainer_cfg.log_iter": 2,
        "trainer_cfg.save_iter": 4, "trainer_cfg.enable_float16": False, "ray_cfg.num_workers": 2})
    result = run_training(config_from_tree(tree, str(CONFIGS / "skeletongait_synth.yaml")), tree)
    metrics = result.metrics
    assert metrics["iteration"] == 4
    # each worker drew 4 steps x 4 sequences; the cache kept at most 100 MiB of them ...
    assert metrics["data/reads"] >= 4 and metrics["data/peak_cached_mib"] <= 100
    # ... and the worker process never held the split: its whole peak resident memory (torch, Ray, model,
    # cache, reads in flight) stays below the split's decoded size, which a worker that loads it exceeds
    assert metrics["worker/peak_rss_mib"] < decoded_mib, (metrics["worker/peak_rss_mib"], decoded_mib)


def test_skeletongait_pp_trains_and_tests_straight_from_poses(synth_maps, tmp_path):
    from ray_gait.ray_layer.evaluate import run_evaluation
    from ray_gait.ray_layer.trainer import run_training
    data, _ = synth_maps
    source = str(CONFIGS / "skeletongait++_synth.yaml")
    tree = apply_overrides(read_yaml(source), {
        "data_cfg.dataset_root": str(data / "pose"), "data_cfg.silhouette_root": str(data / "sil"),
        "data_cfg.dataset_partition": str(data / "partition.json"), "data_cfg.dataset_name": "synth",
        "heatmap_cfg.heatmap_generator_args.sigma": 4.0,
        "ray_cfg.storage_path": str(tmp_path / "runs"), "trainer_cfg.save_name": "poses",
        "model_cfg.SeparateBNNecks.class_num": 4, "trainer_cfg.sampler.batch_size": [4, 2],
        "trainer_cfg.total_iter": 4, "trainer_cfg.log_iter": 2, "trainer_cfg.save_iter": 4,
        "trainer_cfg.with_test": True, "trainer_cfg.enable_float16": False, "ray_cfg.num_workers": 2})
    cfg = config_from_tree(tree, source)
    result = run_training(cfg, tree)
    assert result.metrics["iteration"] == 4 and result.metrics["data/reads"] > 0
    saved = result.checkpoint.path
    # the same weights through the other evaluation path (Ray Data actors) give the same Rank-1
    metrics = run_evaluation(cfg, tree, str(tmp_path / "test"), checkpoint=saved)
    assert metrics["sequences"] == 64
    for cond in ("NM", "BG", "CL"):
        assert abs(metrics["results"][cond]["rank1"] - result.metrics[f"test/{cond}/rank1"]) < 1e-6
    assert abs(metrics["overall"]["rank1"] - result.metrics["test/rank1"]) < 1e-6
    assert not list(tmp_path.glob("**/*sigma_4.0*")), "nothing is rendered to disk"
    # a damaged copy of the pose tree, tested on two of the test ids: one sequence with 0 frames, one truncated;
    # both are left out with their reasons and the other 30 keep the embeddings (and the metrics) of the
    # undamaged run
    import shutil
    from ray_gait.evaluation.config_protocol import evaluate_embeddings
    damaged = tmp_path / "damaged"
    shutil.copytree(data / "pose", damaged)
    partition = json.loads((data / "partition.json").read_text())
    test_ids = sorted(partition["TEST_SET"])[:2]
    (tmp_path / "two_ids.json").write_text(json.dumps(dict(partition, TEST_SET=test_ids)))
    zero, cut = sorted((damaged / test_ids[0]).rglob("*.pkl"))[:2]
    zero.write_bytes(pickle.dumps(np.zeros((0, 17, 3), np.float32)))
    cut.write_bytes(cut.read_bytes()[:100])
    broken_tree = apply_overrides(tree, {"data_cfg.dataset_root": str(damaged),
                                         "data_cfg.dataset_partition": str(tmp_path / "two_ids.json"),
                                         "data_cfg.dataset_protocol": str(data / "protocol.json")})
    left = run_evaluation(config_from_tree(broken_tree, source), broken_tree, str(tmp_path / "test2"), checkpoint=saved)
    assert left["sequences"] == 30 and len(left["unreadable"]) == 2
    reasons = {u["sequence"]: u["reason"] for u in left["unreadable"]}
    key = "/".join(zero.relative_to(damaged).with_suffix("").parts)
    assert "0 frames" in reasons[key] and "truncated" in reasons["/".join(cut.relative_to(damaged).with_suffix("").parts)]
    full, part = (np.load(tmp_path / name / "embeddings.npz") for name in ("test", "test2"))
    names = ["/".join(k) for k in zip(full["id"], full["type"], full["view"], full["seq"])]
    keep = [i for i, n in enumerate(names) if n not in reasons and n.split("/")[0] in test_ids]
    assert np.array_equal(part["embeddings"], full["embeddings"][keep])
    expected = evaluate_embeddings(cfg, full["embeddings"][keep], [tuple(n.split("/")) for n in np.array(names)[keep]])
    assert left["overall"]["rank1"] == pytest.approx(expected["overall"]["rank1"])
