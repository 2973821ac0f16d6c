"""Training and evaluation configs: OpenGait's YAML sections (with its defaults beneath) plus `ray_cfg`.

Sections with a fixed set of keys are typed dataclasses; sections whose keys depend on the chosen
model, loss, solver or transform (`model_cfg`, `loss_cfg`, `optimizer_cfg`, `scheduler_cfg`, the
sampler and transform lists) stay mappings here and are checked by the code that builds from them.
Unknown keys and wrong types are rejected with the key's path.
"""
from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from ray_gait.heatmap.config import DEFAULT_CONFIG_PATH as DEFAULT_HEATMAP_PATH
from ray_gait.heatmap.config import HeatmapConfig, heatmap_config_from_dict
from ray_gait.io import fs
from ray_gait.yaml_config import ConfigError, apply_overrides, build_dataclass, read_yaml

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "configs")
DEFAULT_PATH = os.path.join(CONFIG_DIR, "default.yaml")
FREE_SECTIONS = ("model_cfg", "loss_cfg", "optimizer_cfg", "scheduler_cfg")


@dataclass(frozen=True)
class DataCfg:
    """`data_cfg`: where the data set is and which inputs to use.

    `val_ids` (ours): hold out the last N identities of TRAIN_SET (sorted) as a validation split,
    evaluated at every `save_iter` and reported as `val/rank1` (what Tune optimizes); a partition
    with a `VAL_SET` list uses that list instead.  `cache` (OpenGait's): keep every sequence read in
    memory; otherwise each worker keeps at most `cache_mb` (ours) MiB of decoded sequences and reads
    the rest when the sampler asks for them.  `silhouette_root` (ours): OpenGait's silhouette tree that
    SkeletonGait++ pairs with poses when `dataset_root` holds poses (maps rendered on the fly).
    """

    dataset_name: str = "CASIA-B"
    dataset_root: str = "your_path"
    dataset_partition: str = ""
    num_workers: int = 1
    remove_no_gallery: bool = False
    cache: bool = False
    test_dataset_name: str = ""
    data_in_use: list[bool] | None = None
    dataset_protocol: str | None = None
    val_ids: int = 0
    cache_mb: float = 1024.0
    silhouette_root: str = ""


@dataclass(frozen=True)
class TrainerCfg:
    """`trainer_cfg`: the training loop (OpenGait's keys)."""

    total_iter: int = 80000
    save_iter: int = 2000
    log_iter: int = 100
    restore_hint: int | str = 0
    restore_ckpt_strict: bool = True
    optimizer_reset: bool = False
    scheduler_reset: bool = False
    enable_float16: bool | str = True
    sync_BN: bool = False
    fix_BN: bool = False
    with_test: bool = False
    find_unused_parameters: bool = False
    save_name: str = "tmp"
    sampler: dict = field(default_factory=dict)
    transform: list[dict] | dict | None = None
    seed: int = 0
    keep_checkpoints: int = 3
    warmup_iter: int = 0


@dataclass(frozen=True)
class EvaluatorCfg:
    """`evaluator_cfg`: embedding extraction and the protocol."""

    enable_float16: bool | str = False
    restore_ckpt_strict: bool = True
    restore_hint: int | str = 0
    save_name: str = "tmp"
    eval_func: str = "evaluate_indoor_dataset"
    sampler: dict = field(default_factory=dict)
    transform: list[dict] | dict | None = None
    metric: str = "euc"
    cross_view_gallery: bool = False


@dataclass(frozen=True)
class RayCfg:
    """`ray_cfg` (ours): how Ray Train runs the job."""

    num_workers: int = 1
    use_gpu: bool = False
    resources_per_worker: dict = field(default_factory=dict)
    storage_path: str = "./runs"
    max_failures: int = 0
    cpus_per_worker: float = 1.0

    def worker_resources(self) -> dict[str, float]:
        """What Ray reserves for each training worker: `resources_per_worker`, else `cpus_per_worker` CPUs."""
        return dict(self.resources_per_worker) or {"CPU": self.cpus_per_worker}


@dataclass(frozen=True)
class TrainConfig:
    """A whole training/evaluation config."""

    data_cfg: DataCfg
    model_cfg: dict
    loss_cfg: dict | list[dict]
    optimizer_cfg: dict
    scheduler_cfg: dict
    trainer_cfg: TrainerCfg
    evaluator_cfg: EvaluatorCfg
    ray_cfg: RayCfg
    heatmap_cfg: dict = field(default_factory=dict)
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain data (saved in checkpoints and run folders)."""
        out = dataclasses.asdict(self)
        out.pop("source")
        return out


def _merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """OpenGait's merge: nested mappings merge key by key; anything else (lists too) replaces."""
    out = copy.deepcopy(dict(base))
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def config_from_tree(tree: Mapping[str, Any], source: str = "") -> TrainConfig:
    """Merge a config tree over the defaults and type it."""
    merged = _merge(read_yaml(DEFAULT_PATH), tree)
    if isinstance(tree.get("loss_cfg"), list):
        merged["loss_cfg"] = copy.deepcopy(tree["loss_cfg"])
    for section in FREE_SECTIONS:
        value = merged.get(section)
        if not isinstance(value, (dict, list)):
            raise ConfigError(f"{section}: expected a mapping, found {type(value).__name__}")
    try:
        cfg = build_dataclass(TrainConfig, dict(merged, source=source))
    except ConfigError as exc:
        raise ConfigError(f"{source or 'config'}: {exc}") from None
    if cfg.ray_cfg.num_workers < 1:
        raise ConfigError(f"{source}: ray_cfg.num_workers must be >= 1")
    check_save_names(cfg)
    try:
        heatmap_config(cfg)
    except ConfigError as exc:
        raise ConfigError(f"{source or 'config'}: heatmap_cfg: {exc}") from None
    if not cfg.data_cfg.cache_mb > 0:
        raise ConfigError(f"{source}: data_cfg.cache_mb must be > 0, got {cfg.data_cfg.cache_mb}")
    if cfg.data_cfg.num_workers < 1:
        raise ConfigError(f"{source}: data_cfg.num_workers (batch-building threads per worker) must be >= 1")
    return _absolute_paths(cfg)


# The fields that name files or folders: made absolute where the config is loaded (on the driver), so
# Train workers, Tune trials and Ray Data actors get the same paths whatever folder they run in.
PATH_FIELDS = (("data_cfg", "dataset_root"), ("data_cfg", "dataset_partition"), ("data_cfg", "dataset_protocol"),
               ("data_cfg", "silhouette_root"), ("ray_cfg", "storage_path"), ("trainer_cfg", "restore_hint"),
               ("evaluator_cfg", "restore_hint"))


def _absolute_paths(cfg: TrainConfig) -> TrainConfig:
    """The config with every path field absolute (relative ones from the config file's folder, see fs.absolute)."""
    base = os.path.dirname(fs.absolute(cfg.source)) if cfg.source and not fs.is_uri(cfg.source) else ""
    changes: dict[str, dict[str, str]] = {}
    for section, name in PATH_FIELDS:
        value = getattr(getattr(cfg, section), name)
        if isinstance(value, str) and value:
            changes.setdefault(section, {})[name] = fs.absolute(value, base)
    replaced = {section: dataclasses.replace(getattr(cfg, section), **values) for section, values in changes.items()}
    return dataclasses.replace(cfg, source=fs.absolute(cfg.source), **replaced)


def path_overrides(cfg: TrainConfig) -> dict[str, str]:
    """The non-empty path fields of a loaded config as dotted overrides (a tree with them parses the same anywhere)."""
    found = {f"{section}.{name}": getattr(getattr(cfg, section), name) for section, name in PATH_FIELDS}
    return {key: value for key, value in found.items() if isinstance(value, str) and value}


def load_config(path: str, overrides: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], TrainConfig]:
    """A config file with dotted overrides: its tree (paths made absolute) and its typed config."""
    tree = apply_overrides(read_yaml(path), overrides)
    cfg = config_from_tree(tree, source=path)
    return apply_overrides(tree, path_overrides(cfg)), cfg


def check_save_names(cfg: TrainConfig) -> None:
    """ConfigError unless both save_names are single folder names (runs live in `<storage>/<save_name>`)."""
    for section in ("trainer_cfg", "evaluator_cfg"):
        try:
            fs.safe_component(getattr(cfg, section).save_name, f"{section}.save_name")
        except ValueError as exc:
            raise ConfigError(f"{cfg.source or 'config'}: {exc}") from None


def heatmap_config(cfg: TrainConfig) -> HeatmapConfig:
    """The maps a pose data set is rendered into: the packaged heatmap config under `heatmap_cfg`."""
    return heatmap_config_from_dict(_merge(read_yaml(DEFAULT_HEATMAP_PATH), cfg.heatmap_cfg))


def load_train_config(path: str, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """Load a training config (ours or OpenGait's) with dotted overrides."""
    return load_config(path, overrides)[1]
