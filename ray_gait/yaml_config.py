"""YAML plumbing shared by every config: `${a.b}` references, `key.path=value` overrides, typed sections.

Config files come from other people (OpenGait's configs, sweep files, `--set` values), so the loader
holds against files made to exhaust memory: YAML anchors and aliases (`&a` / `*a`) are refused (a few
hundred bytes of nested aliases expand to billions of values; no config of this project or of
OpenGait uses them), and `${...}` references may produce at most `MAX_RESOLVED_NODES` values in all.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import re
import types
import typing
from typing import Any, Mapping, TypeVar

import yaml

from ray_gait.io import fs

T = TypeVar("T")
_REFERENCE = re.compile(r"^\$\{([A-Za-z0-9_.]+)\}$")
# How many values (mappings, lists and scalars) `${...}` references may expand a config to: real
# configs hold a few hundred; a chain of references to big lists would otherwise multiply.
MAX_RESOLVED_NODES = 100_000


class ConfigError(ValueError):
    """A config key is unknown, missing, or has a value of the wrong type."""


class _NoAliasLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing anchors and aliases before they are composed."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        """Compose one node; an alias or an anchored node raises ConfigError with its line."""
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            sign = "*" if isinstance(event, yaml.AliasEvent) else "&"
            raise ConfigError(f"line {event.start_mark.line + 1}: YAML anchors and aliases "
                              f"({sign}{event.anchor}) are not allowed in configs; write the values out")
        return super().compose_node(parent, index)


def load_yaml_text(text: str, where: str = "") -> Any:
    """Parse YAML text without anchors or aliases; every failure is a ConfigError naming `where`."""
    label = f"{where}: " if where else ""
    try:
        return yaml.load(text, Loader=_NoAliasLoader)
    except ConfigError as exc:
        raise ConfigError(f"{label}{exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{label}not valid YAML ({exc})") from None
    except RecursionError:
        raise ConfigError(f"{label}YAML nested too deeply") from None


MAX_YAML_BYTES = 16 * 2**20


def read_yaml(path: str) -> dict:
    """Load a YAML mapping from a file, a local path or a URI (safe loader, no anchors or aliases)."""
    loc = fs.resolve(path)
    if not fs.exists(loc):
        raise FileNotFoundError(f"YAML file not found: {path}")
    try:
        if fs.is_dir(loc):
            raise IsADirectoryError(f"{path} is a folder")
        text = fs.read_bytes(loc, limit=MAX_YAML_BYTES).decode("utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not a readable YAML file ({err})") from err
    data = load_yaml_text(text, path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, found {type(data).__name__}")
    return data


def _lookup(tree: Mapping, dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise ConfigError(f"reference ${{{dotted}}} points at nothing")
        node = node[part]
    return node


def resolve_references(tree: dict, max_nodes: int = MAX_RESOLVED_NODES) -> dict:
    """Replace every string value `${section.key}` by the value it names (references may chain).

    Raises ConfigError once the result would hold more than `max_nodes` values.
    """
    produced = 0

    def resolve(value: Any, seen: tuple[str, ...]) -> Any:
        nonlocal produced
        produced += 1
        if produced > max_nodes:
            raise ConfigError(f"${{...}} references expand the config to more than {max_nodes} values")
        if isinstance(value, dict):
            return {k: resolve(v, seen) for k, v in value.items()}
        if isinstance(value, list):
            return [resolve(v, seen) for v in value]
        if isinstance(value, str):
            match = _REFERENCE.match(value)
            if match:
                target = match.group(1)
                if target in seen:
                    raise ConfigError(f"circular reference: {' -> '.join(seen + (target,))}")
                return resolve(_lookup(tree, target), seen + (target,))
        return value
    return resolve(tree, ())


def parse_override(text: str) -> tuple[str, Any]:
    """Split `section.key=value` into the dotted key and the YAML-parsed value."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has an empty key")
    return key, load_yaml_text(raw, f"override {key}") if raw.strip() else None


def apply_overrides(tree: dict, overrides: Mapping[str, Any] | None) -> dict:
    """Return a copy of `tree` with each dotted key set to its value (intermediate mappings created)."""
    out = copy.deepcopy(tree)
    for dotted, value in (overrides or {}).items():
        node = out
        parts = dotted.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {dotted}: {part} is not a section")
            node = child
        node[parts[-1]] = value
    return out


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{where}: {value!r} is none of {', '.join(_type_name(o) for o in options)}")
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, allowed))}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, found {type(value).__name__} {value!r}")
        args = typing.get_args(tp)
        item_type = args[0] if args else Any
        items = [_coerce(v, item_type, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, found {type(value).__name__}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return build_dataclass(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, found {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, found {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, found {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, found {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported field type {tp}")


def _refuse_unknown(data: Mapping, valid: list[str], label: str) -> None:
    unknown = sorted({str(key) for key in data} - set(valid))
    if unknown:
        raise ConfigError(f"{label}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(valid)}")


def _nested_dataclass(tp: Any) -> Any:
    """The dataclass a field holds (directly or as `X | None`), else None."""
    if dataclasses.is_dataclass(tp):
        return tp
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        found = [option for option in typing.get_args(tp) if dataclasses.is_dataclass(option)]
        return found[0] if len(found) == 1 else None
    return None


def check_keys(cls: type, data: Any, where: str = "") -> None:
    """Reject unknown keys of a (nested) dataclass's mapping, looking at no value (run before `${...}` expansion)."""
    if not isinstance(data, Mapping):
        return
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    _refuse_unknown(data, names, where or cls.__name__)
    for name in names:
        nested = _nested_dataclass(hints[name])
        if nested is not None and name in data:
            check_keys(nested, data[name], f"{where}.{name}" if where else name)


def build_dataclass(cls: type[T], data: Any, where: str = "") -> T:
    """Build a (nested) dataclass from a mapping, rejecting unknown keys and wrong types by key path."""
    label = where or cls.__name__
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{label}: expected a mapping, found {type(data).__name__} {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    _refuse_unknown(data, list(fields), label)
    kwargs = {}
    for name, field in fields.items():
        key_path = f"{where}.{name}" if where else name
        if name in data:
            kwargs[name] = _coerce(data[name], hints[name], key_path)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{key_path}: required key is missing")
    return cls(**kwargs)


def config_hash(tree: Any) -> str:
    """A short stable hash of a config (canonical JSON, sorted keys)."""
    text = json.dumps(tree, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
