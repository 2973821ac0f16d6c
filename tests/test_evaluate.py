"""`ray-gait test` for real: Ray Data embedding actors, the synthetic protocol, files and plots."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

import ray_gait
from ray_gait.cli import main
from ray_gait.io.dataset import read_dataset
from ray_gait.models import build_model, export_opengait_checkpoint
from ray_gait.config import load_train_config
from ray_gait.training.optim import build_optimizer, build_scheduler
from ray_gait.training.state import TrainState, save_state

from synth_eval import CONFIG, random_weights, set_args, synth_overrides

ROOT = Path(__file__).resolve().parents[1]


def test_test_phase_writes_metrics_embeddings_and_plots(synth_maps, tmp_path, capsys):
    data, paired = synth_maps
    overrides = synth_overrides(data, paired)
    weights = random_weights(overrides, tmp_path / "random.pt")
    args = ["test", "--cfgs", str(CONFIG), "--checkpoint", str(weights), "--out", str(tmp_path / "test"),
            *set_args(overrides)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "NM: rank1" in printed and "per probe view" in printed
    out = tmp_path / "test"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["protocol"] == "evaluate_protocol" and metrics["metric"] == "euc"
    assert set(metrics["results"]) == {"NM", "BG", "CL"} and "rank1" in metrics["overall"]
    saved = np.load(out / "embeddings.npz")
    assert saved["embeddings"].shape == (64, 64, 16)      # 4 test ids x 8 types x 2 views
    # the Ray Data actors' embeddings against ray_gait.embed run here on the stored maps (cut to 44 columns
    # and scaled to [0, 1] by hand, as BaseSilCuttingTransform does), sequence by sequence
    model = build_model(load_train_config(str(CONFIG), overrides).model_cfg, weights=str(weights), strict=True)
    position = {tuple(str(saved[k][i]) for k in ("id", "type", "view", "seq")): i for i in range(len(saved["id"]))}
    checked = 0
    for row in read_dataset(str(paired), columns=["id", "type", "view", "seq", "frames", "height", "width",
                                                   "heatmap"]):
        key = (row["id"], row["type"], row["view"], row["seq"])
        if key not in position or checked >= 6:
            continue
        x = torch.from_numpy(row["heatmap"][:, :, :, 10:-10].astype(np.float32) / 255.0)[None]
        local = ray_gait.embed(model, x)[0].numpy()
        assert np.allclose(saved["embeddings"][position[key]], local, rtol=1e-4, atol=1e-5), key
        checked += 1
    assert checked == 6
    # and the metrics of those embeddings, recomputed from their distance matrix by the scalar definition
    emb, ids, types, views = saved["embeddings"], saved["id"], saved["type"], saved["view"]
    protocol = json.loads((data / "protocol.json").read_text())
    dist = np.sqrt(((emb[:, None] - emb[None]) ** 2).sum(axis=2)).mean(axis=2)
    gallery = [j for j in range(len(ids)) if types[j] in protocol["gallery"]]
    for cond, probe_types in protocol["probes"].items():
        per_view = []
        for pv in protocol["views"]:
            accs = []
            for gv in protocol["views"]:
                if gv == pv:
                    continue
                probes = [i for i in range(len(ids)) if types[i] in probe_types and views[i] == pv]
                gal = [j for j in gallery if views[j] == gv]
                if probes and gal:
                    hits = [ids[gal[int(np.argmin(dist[i, gal]))]] == ids[i] for i in probes]
                    accs.append(100.0 * np.mean(hits))
            per_view.append(np.mean(accs))
        assert abs(np.mean(per_view) - metrics["results"][cond]["rank1"]) < 1e-6, cond
    assert len(metrics["cmc"]["NM"]) == 20 and metrics["cmc"]["NM"][-1] >= metrics["cmc"]["NM"][0]
    for plot in metrics["plots"]:
        assert Path(plot).stat().st_size > 2000


def test_weights_that_do_not_fit_the_model_are_refused_before_ray_starts(synth_maps, tmp_path):
    """Weights of a model with 5 classes against a config of 4 (a ray_gait checkpoint folder, an OpenGait file):
    `ray-gait test` and `ray-gait embed` refuse them in one line naming the file and the key, before starting Ray
    (a fresh process with no cluster to join: starting one would print it); the actors used to die on them and
    leave a Ray Data stack trace."""
    data, paired = synth_maps
    overrides = {"data_cfg.dataset_root": str(paired), "data_cfg.dataset_partition": str(data / "partition.json"),
                 "model_cfg.SeparateBNNecks.class_num": 5}
    cfg = load_train_config(str(CONFIG), overrides)
    model = build_model(cfg.model_cfg)
    folder = tmp_path / "checkpoint_five"
    optimizer = build_optimizer(model, cfg.optimizer_cfg)
    save_state(str(folder), TrainState(model, optimizer, build_scheduler(optimizer, dict(cfg.scheduler_cfg), 10), None),
               {})
    opengait = tmp_path / "five.pt"
    export_opengait_checkpoint(model.state_dict(), str(opengait))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    settings = [a for key, value in dict(overrides, **{"model_cfg.SeparateBNNecks.class_num": 4}).items()
                for a in ("--set", f"{key}={value}")]
    for command, weights in (("test", folder), ("embed", opengait)):
        extra = ["--data", str(paired)] if command == "embed" else []
        done = subprocess.run([sys.executable, "-m", "ray_gait.cli", command, "--cfgs", str(CONFIG), "--checkpoint",
                               str(weights), "--out", str(tmp_path / command), *extra, *settings],
                              env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 1, done.stderr
        lines = done.stderr.strip().splitlines()
        assert lines == [lines[-1]] and lines[-1].startswith(f"ray-gait {command}: error: {weights} does not fit "
                                                             "DeepGaitV2: shape mismatch for BNNecks.fc_bin"), lines
        assert "Ray" not in done.stdout + done.stderr and not (tmp_path / command).exists()

