"""The sweep file of `ray-gait tune --search SPACE.yaml`, typed; plain Python, no Ray.

    name: lr_sigma                      # the sweep's folder under ray_cfg.storage_path; a rerun resumes it
    metric: val/rank1                   # reported at every save_iter on the validation split
    mode: max
    num_samples: 1                      # samples per grid point
    max_concurrent_trials: 0            # 0: as many as the cluster holds at once (all, under an autoscaler)
    scheduler: {type: asha, grace_period: 20, reduction_factor: 2}
    space:
      optimizer_cfg.lr: {loguniform: [1.0e-4, 1.0e-2]}
      heatmap_generator_args.sigma: {grid_search: [4.0, 8.0]}
    data:                               # where trials' maps come from when heatmap keys are searched
      pose_data_path: demo/data/pose
      silhouette_data_path: demo/data/sil   # SkeletonGait++ only
      dataset_name: synth

A key of `space` whose first part is a section of the heatmap config (configs/heatmap.yaml) sets the
maps a trial trains on; any other key is a training-config key.  Heatmap keys take finite values
(`grid_search` or `choice`): every distinct heatmap config is rendered once, before the trials start.
"""
from __future__ import annotations

import dataclasses
import itertools
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from ray_gait.heatmap.config import HeatmapConfig, load_heatmap_config
from ray_gait.io import fs
from ray_gait.yaml_config import ConfigError, build_dataclass, read_yaml

DEFAULT_SEARCH = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "tune", "lr_sigma.yaml")
HEATMAP_SECTIONS = ("coco18tococo17_args", "padkeypoints_args", "norm_args", "heatmap_generator_args", "align_args")
DISTRIBUTIONS = {"grid_search": None, "choice": None, "uniform": 2, "loguniform": 2, "quniform": 3,
                 "qloguniform": 3, "randint": 2, "lograndint": 2, "randn": 2}
FINITE = ("grid_search", "choice")


@dataclass(frozen=True)
class SchedulerSpec:
    """`scheduler`: ASHA early stopping (`asha`) or none (`fifo`); times are training iterations."""

    type: str = "asha"
    grace_period: int = 0
    reduction_factor: float = 2.0


@dataclass(frozen=True)
class DataSpec:
    """`data`: the pose (and silhouette) source that searched heatmap configs are rendered from."""

    pose_data_path: str = ""
    silhouette_data_path: str = ""
    dataset_name: str = "dataset"
    heatmap_cfg_path: str | None = None
    cache_root: str = ""


@dataclass(frozen=True)
class SearchSpec:
    """A whole sweep file."""

    space: dict
    name: str = "sweep"
    metric: str = "val/rank1"
    mode: str = "max"
    num_samples: int = 1
    max_concurrent_trials: int = 0
    scheduler: SchedulerSpec = field(default_factory=SchedulerSpec)
    data: DataSpec | None = None
    source: str = ""

    @property
    def heatmap_keys(self) -> list[str]:
        """Searched keys that belong to the heatmap config."""
        return [key for key in self.space if is_heatmap_key(key)]

    @property
    def train_keys(self) -> list[str]:
        """Searched keys that belong to the training config."""
        return [key for key in self.space if not is_heatmap_key(key)]


def is_heatmap_key(key: str) -> bool:
    """Whether a dotted key names a heatmap-config option."""
    return key.split(".", 1)[0] in HEATMAP_SECTIONS


def _check_distribution(key: str, value: Any) -> tuple[str, Any]:
    if not isinstance(value, Mapping) or len(value) != 1:
        raise ConfigError(f"space.{key}: expected one distribution, e.g. {{grid_search: [...]}} or "
                          f"{{loguniform: [low, high]}}; found {value!r}")
    kind, args = next(iter(value.items()))
    if kind not in DISTRIBUTIONS:
        raise ConfigError(f"space.{key}: unknown distribution {kind!r}; use one of {', '.join(DISTRIBUTIONS)}")
    if not isinstance(args, list) or not args:
        raise ConfigError(f"space.{key}.{kind}: expected a non-empty list, found {args!r}")
    arity = DISTRIBUTIONS[kind]
    if arity is not None and len(args) != arity:
        raise ConfigError(f"space.{key}.{kind}: expected {arity} numbers, found {args!r}")
    if arity is not None and not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
        raise ConfigError(f"space.{key}.{kind}: expected numbers, found {args!r}")
    if kind in ("loguniform", "qloguniform", "lograndint") and min(args[:2]) <= 0:
        raise ConfigError(f"space.{key}.{kind}: bounds must be > 0, found {args!r}")
    if is_heatmap_key(key) and kind not in FINITE:
        raise ConfigError(f"space.{key}: heatmap keys need grid_search or choice (each value is rendered once "
                          f"before the trials start), found {kind}")
    return kind, args


def _check_names(spec: SearchSpec, source: str) -> None:
    """ConfigError unless the sweep's name (its folder, and `<name>_best`) and data set name are single file names."""
    try:
        fs.safe_component(spec.name, "name (the sweep's folder)")
        fs.safe_component(f"{spec.name}_best", "name + '_best' (the best trial's run)")
        if spec.data is not None:
            fs.safe_component(spec.data.dataset_name, "data.dataset_name (part of the heatmap folder's name)")
    except ValueError as exc:
        raise ConfigError(f"{source or 'search space'}: {exc}") from None


def search_spec_from_dict(tree: Mapping[str, Any], source: str = "") -> SearchSpec:
    """Type and check a sweep tree: unknown keys, distributions, heatmap keys and their data source."""
    if "space" not in tree or not isinstance(tree["space"], Mapping) or not tree["space"]:
        raise ConfigError(f"{source or 'search space'}: `space` must map config keys to distributions")
    try:
        spec = build_dataclass(SearchSpec, dict(tree, source=source))
        for key, value in spec.space.items():
            _check_distribution(key, value)
    except ConfigError as exc:
        raise ConfigError(f"{source or 'search space'}: {exc}") from None
    if spec.mode not in ("max", "min"):
        raise ConfigError(f"{source}: mode must be max or min, found {spec.mode!r}")
    if spec.scheduler.type not in ("asha", "fifo"):
        raise ConfigError(f"{source}: scheduler.type must be asha or fifo, found {spec.scheduler.type!r}")
    if spec.num_samples < 1:
        raise ConfigError(f"{source}: num_samples must be >= 1")
    _check_names(spec, source)
    if spec.heatmap_keys and (spec.data is None or not spec.data.pose_data_path):
        raise ConfigError(f"{source}: searching {', '.join(spec.heatmap_keys)} needs data.pose_data_path "
                          "(the poses each heatmap config is rendered from)")
    heatmap_configs(spec)
    return spec


def load_search_spec(path: str) -> SearchSpec:
    """Read and check a sweep file."""
    spec = search_spec_from_dict(read_yaml(path), source=path)
    if spec.data is None:
        return spec
    base = os.path.dirname(fs.absolute(path))

    def local(value: str) -> str:
        return fs.absolute(value, base)

    data = spec.data
    fixed = dataclasses.replace(data, pose_data_path=local(data.pose_data_path),
                                silhouette_data_path=local(data.silhouette_data_path),
                                heatmap_cfg_path=local(data.heatmap_cfg_path) if data.heatmap_cfg_path else None,
                                cache_root=local(data.cache_root))
    return dataclasses.replace(spec, data=fixed)


def trial_heatmap_config(spec: SearchSpec, params: Mapping[str, Any]) -> HeatmapConfig:
    """The heatmap config a trial with these parameter values trains on."""
    path = spec.data.heatmap_cfg_path if spec.data else None
    return load_heatmap_config(path, {key: params[key] for key in spec.heatmap_keys})


def heatmap_configs(spec: SearchSpec) -> list[tuple[dict[str, Any], HeatmapConfig]]:
    """Every distinct heatmap config the sweep can ask for (overrides, config), each once."""
    keys = spec.heatmap_keys
    choices = [next(iter(spec.space[key].values())) for key in keys]
    seen: dict[str, tuple[dict[str, Any], HeatmapConfig]] = {}
    for values in itertools.product(*choices):
        overrides = dict(zip(keys, values))
        config = trial_heatmap_config(spec, overrides)
        seen.setdefault(config.hash(), (overrides, config))
    return list(seen.values())


def trials_that_fit(resources: Mapping[str, float], bundle: Mapping[str, float], workers: int) -> int:
    """How many trainings of `workers` workers, each reserving `bundle`, the `resources` hold at once (>= 1)."""
    fits = [int(resources.get(name, 0.0) // (amount * workers)) for name, amount in bundle.items() if amount > 0]
    return max(1, min(fits)) if fits else 1


def trial_count(spec: SearchSpec) -> int:
    """How many trials a new sweep runs: num_samples times each grid's size."""
    count = spec.num_samples
    for value in spec.space.values():
        kind, args = next(iter(value.items()))
        if kind == "grid_search":
            count *= len(args)
    return count
