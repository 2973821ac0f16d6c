"""`ray-gait test` for real: Ray Data embedding actors, the synthetic protocol, files and plots."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ray_gait.cli import main
from ray_gait.evaluation.protocols import evaluate_protocol
from ray_gait.models import build_model, export_opengait_checkpoint
from ray_gait.training.config import load_train_config

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "skeletongait" / "skeletongait_synth.yaml"


def test_test_phase_writes_metrics_embeddings_and_plots(synth_maps, tmp_path, capsys):
    data, paired = synth_maps
    overrides = {"data_cfg.dataset_root": str(paired), "data_cfg.dataset_partition": str(data / "partition.json"),
                 "data_cfg.dataset_protocol": str(data / "protocol.json"),
                 "model_cfg.SeparateBNNecks.class_num": 4, "ray_cfg.num_workers": 1}
    cfg = load_train_config(str(CONFIG), overrides)
    torch.manual_seed(0)
    weights = tmp_path / "random.pt"
    export_opengait_checkpoint(build_model(cfg.model_cfg).state_dict(), str(weights))
    args = ["test", "--cfgs", str(CONFIG), "--checkpoint", str(weights), "--out", str(tmp_path / "test")]
    for key, value in overrides.items():
        args += ["--set", f"{key}={value}"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "NM: rank1" in printed and "per probe view" in printed
    out = tmp_path / "test"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["protocol"] == "evaluate_protocol" and metrics["metric"] == "euc"
    assert set(metrics["results"]) == {"NM", "BG", "CL"} and "rank1" in metrics["overall"]
    saved = np.load(out / "embeddings.npz")
    assert saved["embeddings"].shape == (64, 64, 16)      # 4 test ids x 8 types x 2 views
    again = evaluate_protocol(saved["embeddings"], saved["id"], saved["type"], saved["view"],
                              protocol=str(data / "protocol.json"))
    for cond, values in again["results"].items():
        assert abs(values["rank1"] - metrics["results"][cond]["rank1"]) < 1e-9
    assert len(metrics["cmc"]["NM"]) == 20 and metrics["cmc"]["NM"][-1] >= metrics["cmc"]["NM"][0]
    for plot in metrics["plots"]:
        assert Path(plot).stat().st_size > 2000
