"""Synthetic gait data in OpenGait's layout (``ray-gait synth``).

Walkers with persistent body proportions and walking style, 3D forward kinematics, a perspective
camera, an imperfect pose estimator and rendered silhouettes; see :mod:`ray_gait.synth.dataset`.
"""
from __future__ import annotations

from ray_gait.synth.baseline import baseline_rank1, pose_features
from ray_gait.synth.dataset import (
    SequenceSpec,
    SynthConfig,
    generate_dataset,
    generate_sequence,
    plan_sequences,
    read_config,
    write_metadata,
    write_sequence,
)
from ray_gait.synth.preview import write_preview

__all__ = [
    "SequenceSpec",
    "SynthConfig",
    "baseline_rank1",
    "generate_dataset",
    "generate_sequence",
    "plan_sequences",
    "pose_features",
    "read_config",
    "write_metadata",
    "write_preview",
    "write_sequence",
]
