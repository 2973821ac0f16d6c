"""cluster.yaml is a valid Ray autoscaler configuration (offline: no cloud credentials needed)."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _validate(cfg: dict) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config
    prepared = prepare_config(copy.deepcopy(cfg))
    validate_config(prepared)
    return prepared


@pytest.fixture
def cluster() -> dict:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def test_cluster_yaml_validates_against_rays_schema(cluster):
    prepared = _validate(cluster)
    types = prepared["available_node_types"]
    assert prepared["head_node_type"] == "head"
    assert types["gpu_worker"]["resources"]["GPU"] >= 1 and types["cpu_worker"]["resources"]["CPU"] >= 8
    assert types["cpu_worker"]["min_workers"] <= types["cpu_worker"]["max_workers"]
    assert prepared["idle_timeout_minutes"] > 0
    assert any("pip install" in c and "ray_gait" in c for c in prepared["setup_commands"])


@pytest.mark.parametrize("mutate", [
    lambda c: c.update(head_node_typo="head"),
    lambda c: c.update(head_node_type="nonexistent"),
    lambda c: c["available_node_types"]["cpu_worker"].pop("resources") and None,
])
def test_validation_catches_broken_configs(cluster, mutate):
    mutate(cluster)
    with pytest.raises(Exception):
        _validate(cluster)
