"""One way to build a component from its config section: a registry (name -> class or function), the key of the
section that names the entry, and the arguments the chosen entry takes.

Models, transforms, losses, optimizers, schedulers and evaluation protocols are all chosen and checked here, so
every such error is a `ConfigError` (a ValueError) that names the key's path, e.g. `optimizer_cfg.solver: 'Lion'
is not one of Adam, AdamW, SGD` or `loss_cfg[0].margn: TripletLoss takes no such argument (it takes margin)`.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Collection, Mapping
from typing import Any, TypeVar

from ray_gait.yaml_config import ConfigError

T = TypeVar("T")


def lookup(registry: Mapping[str, T], name: Any, where: str) -> T:
    """`registry[name]`; ConfigError `<where>: <name> is not one of <the names>` otherwise."""
    if not isinstance(name, str) or name not in registry:
        raise ConfigError(f"{where}: {name!r} is not one of {', '.join(sorted(registry))}")
    return registry[name]


def accepted_arguments(factory: Callable[..., Any], bound: Collection[str] = ()) -> list[str]:
    """The keyword arguments `factory` takes (a class: its constructor's), less those the caller `bound`."""
    return [name for name, param in inspect.signature(factory).parameters.items()
            if name not in bound and param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY)]


def checked_arguments(factory: Callable[..., Any], section: Mapping[str, Any], where: str,
                      skip: Collection[str] = (), bound: Collection[str] = (),
                      inherited: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The entries of `section` that `factory` takes, `skip`ped keys aside; another key is a ConfigError naming
    `<where>.<key>`, unless it holds the value `inherited` gives it (a default of another entry, e.g. an SGD
    option under OpenGait's defaults when the solver is Adam)."""
    accepted = accepted_arguments(factory, bound)
    args = {}
    for key, value in section.items():
        if key in skip:
            continue
        if key in accepted:
            args[key] = value
        elif inherited is None or inherited.get(key) != value:
            name = getattr(factory, "__name__", str(factory))
            raise ConfigError(f"{where}.{key}: {name} takes no such argument (it takes {', '.join(sorted(accepted))})")
    return args


def check_keys(section: Any, where: str, required: Collection[str], optional: Collection[str] = ()) -> Mapping:
    """A section with every `required` key and none outside `required` and `optional`; ConfigError otherwise."""
    if not isinstance(section, Mapping):
        raise ConfigError(f"{where} must be a mapping, got {type(section).__name__}")
    allowed = set(required) | set(optional)
    unknown = sorted(str(k) for k in section if k not in allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; supported: {sorted(allowed)}")
    missing = sorted(set(required) - set(section))
    if missing:
        raise ConfigError(f"{where}: missing key(s) {missing}")
    return section


def build(registry: Mapping[str, Callable[..., T]], section: Any, where: str, name_key: str = "type",
          skip: Collection[str] = (), **fixed: Any) -> T:
    """The entry of `registry` that `section[name_key]` names, called with the section's other keys (less `skip`)
    and `fixed`; ConfigError naming the key for an unknown name, an argument it does not take, or a bad value."""
    if not isinstance(section, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(section).__name__}")
    factory = lookup(registry, section.get(name_key), f"{where}.{name_key}")
    args = checked_arguments(factory, section, where, skip=(name_key, *skip), bound=fixed)
    try:
        return factory(**fixed, **args)
    except TypeError as err:
        raise ConfigError(f"{where}: {err}") from err
