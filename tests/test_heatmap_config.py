"""configs/heatmap.yaml: typed, OpenGait's YAML loads unchanged, unknown keys rejected."""
from __future__ import annotations

import pytest

from ray_gait import load_heatmap_config
from ray_gait.yaml_config import ConfigError

from conftest import DATA


def test_default_equals_opengait_yaml():
    ours = load_heatmap_config()
    theirs = load_heatmap_config(str(DATA / "opengait_pretreatment_heatmap.yaml"))
    assert ours == theirs
    assert ours.sigma == 8.0 and ours.align_args.heatmap_image_size == 128
    assert ours.hash() == theirs.hash()


def test_references_follow_overrides():
    cfg = load_heatmap_config(overrides={"norm_args.heatmap_image_height": 96, "padkeypoints_args.use_conf": False})
    assert cfg.heatmap_generator_args.img_h == 96 and cfg.align_args.heatmap_image_size == 96
    assert cfg.norm_args.use_conf is False and cfg.use_confidence is False


def test_override_changes_hash():
    assert load_heatmap_config().hash() != load_heatmap_config(overrides={"heatmap_generator_args.sigma": 4.0}).hash()


@pytest.mark.parametrize("overrides, message", [
    ({"norm_args.colour": 1}, "norm_args: unknown key"),
    ({"heatmap_generator_args.sigma": "big"}, "heatmap_generator_args.sigma: expected a number"),
    ({"padkeypoints_args.pad_method": "cubic"}, "padkeypoints_args.pad_method"),
    ({"heatmap_generator_args.sigma": -1.0}, "sigma must be > 0"),
    ({"extra_section.x": 1}, "unknown key"),
    ({"norm_args.pose_format": "openpose-99"}, "pose_format"),
])
def test_bad_values_are_rejected_by_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_heatmap_config(overrides=overrides)
