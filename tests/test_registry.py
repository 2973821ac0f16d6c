"""The one builder every registry uses: errors are ConfigErrors that name the key's path."""
from __future__ import annotations

import pytest
import torch

from ray_gait.registry import build, check_keys, checked_arguments, lookup
from ray_gait.yaml_config import ConfigError


class Scale:
    """A registry entry: a factor and an optional offset."""

    def __init__(self, factor: float, offset: float = 0.0) -> None:
        self.factor, self.offset = factor, offset


REGISTRY = {"Scale": Scale}


def test_an_entry_is_built_from_its_section():
    built = build(REGISTRY, {"type": "Scale", "factor": 2.0}, "demo_cfg")
    assert isinstance(built, Scale) and (built.factor, built.offset) == (2.0, 0.0)


@pytest.mark.parametrize("section, message", [
    ({"type": "Shift", "factor": 1}, "demo_cfg.type: 'Shift' is not one of Scale"),
    ({"factor": 1}, "demo_cfg.type: None is not one of Scale"),
    ({"type": "Scale", "factor": 1, "facter": 2}, "demo_cfg.facter: Scale takes no such argument (it takes factor, offset)"),
    ({"type": "Scale"}, "demo_cfg: "),
    ([1, 2], "demo_cfg: expected a mapping, got list"),
])
def test_each_error_names_the_key(section, message):
    with pytest.raises(ConfigError) as caught:
        build(REGISTRY, section, "demo_cfg")
    assert str(caught.value).startswith(message), str(caught.value)


def test_a_default_of_another_entry_passes_only_with_its_default_value():
    section = {"solver": "Adam", "lr": 0.1, "momentum": 0.9}
    args = checked_arguments(torch.optim.Adam, section, "optimizer_cfg", skip=("solver",), bound=("params",),
                             inherited={"momentum": 0.9})
    assert args == {"lr": 0.1}
    with pytest.raises(ConfigError, match=r"optimizer_cfg.momentum: Adam takes no such argument"):
        checked_arguments(torch.optim.Adam, {**section, "momentum": 0.5}, "optimizer_cfg", skip=("solver",),
                          bound=("params",), inherited={"momentum": 0.9})


def test_lookup_and_check_keys():
    assert lookup(REGISTRY, "Scale", "x") is Scale
    with pytest.raises(ConfigError, match=r"^evaluator_cfg.eval_func: 3 is not one of Scale$"):
        lookup(REGISTRY, 3, "evaluator_cfg.eval_func")
    assert check_keys({"a": 1}, "s", {"a"}, {"b"}) == {"a": 1}
    with pytest.raises(ConfigError, match=r"s: unknown key\(s\) \['c'\]; supported: \['a', 'b'\]"):
        check_keys({"a": 1, "c": 2}, "s", {"a"}, {"b"})
    with pytest.raises(ConfigError, match=r"s: missing key\(s\) \['a'\]"):
        check_keys({"b": 1}, "s", {"a"}, {"b"})
