"""The evaluation set-up several tests share: the SkeletonGait synth config pointed at the session's synthetic
maps, and random weights (seed 0) for it in OpenGait's checkpoint format."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ray_gait.config import load_train_config
from ray_gait.models import build_model, export_opengait_checkpoint

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "skeletongait" / "skeletongait_synth.yaml"


def synth_overrides(data: Path, paired: Path) -> dict[str, Any]:
    """The config keys that point CONFIG at the synthetic set (`data`: partition and protocol; `paired`: maps)."""
    return {"data_cfg.dataset_root": str(paired), "data_cfg.dataset_partition": str(data / "partition.json"),
            "data_cfg.dataset_protocol": str(data / "protocol.json"),
            "model_cfg.SeparateBNNecks.class_num": 4, "ray_cfg.num_workers": 1}


def random_weights(overrides: dict[str, Any], path: Path) -> Path:
    """The configured model with torch's seed 0, saved at `path` as an OpenGait checkpoint."""
    cfg = load_train_config(str(CONFIG), overrides)
    torch.manual_seed(0)
    export_opengait_checkpoint(build_model(cfg.model_cfg).state_dict(), str(path))
    return path


def set_args(overrides: dict[str, Any]) -> list[str]:
    """`--set KEY=VALUE` for each override."""
    return [arg for key, value in overrides.items() for arg in ("--set", f"{key}={value}")]
