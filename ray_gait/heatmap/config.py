"""The heatmap config (configs/heatmap.yaml): OpenGait's `pretreatment_heatmap.yaml`, typed."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

from ray_gait.yaml_config import (ConfigError, apply_overrides, build_dataclass, check_keys, config_hash,
                                  read_yaml, resolve_references)

DEFAULT_CONFIG_PATH = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "heatmap.yaml")


@dataclass(frozen=True)
class Coco18Args:
    """`coco18tococo17_args`: convert OpenPose COCO-18 to COCO-17 first."""

    transfer_to_coco17: bool = False


@dataclass(frozen=True)
class PadArgs:
    """`padkeypoints_args`: how missing joints (coordinate 0) are filled."""

    pad_method: Literal["knn", "simple"] = "knn"
    use_conf: bool = True
    fix_quirks: bool = False


@dataclass(frozen=True)
class NormArgs:
    """`norm_args`: centre on the hips, scale the pose height to `heatmap_image_height // 1.5`."""

    pose_format: Literal["coco", "openpose-18", "openpose-25"] = "coco"
    use_conf: bool = True
    heatmap_image_height: int = 128


@dataclass(frozen=True)
class GeneratorArgs:
    """`heatmap_generator_args`: Gaussian limb and joint maps."""

    sigma: float = 8.0
    use_score: bool = True
    img_h: int = 128
    img_w: int = 128
    with_limb: bool | None = None
    with_kp: bool | None = None
    eps: float = 1e-3


@dataclass(frozen=True)
class AlignArgs:
    """`align_args`: crop to the person and resize to `final_img_size`."""

    align: bool = True
    final_img_size: int = 64
    offset: int = 0
    heatmap_image_size: int = 128


@dataclass(frozen=True)
class HeatmapConfig:
    """Every option of step 1, as OpenGait's YAML names them."""

    coco18tococo17_args: Coco18Args = field(default_factory=Coco18Args)
    padkeypoints_args: PadArgs = field(default_factory=PadArgs)
    norm_args: NormArgs = field(default_factory=NormArgs)
    heatmap_generator_args: GeneratorArgs = field(default_factory=GeneratorArgs)
    align_args: AlignArgs = field(default_factory=AlignArgs)

    @property
    def sigma(self) -> float:
        """The Gaussian sigma (it names the output folder)."""
        return self.heatmap_generator_args.sigma

    @property
    def use_confidence(self) -> bool:
        """Whether confidences set the Gaussian peaks (every use_conf/use_score switch on)."""
        return (self.padkeypoints_args.use_conf and self.norm_args.use_conf
                and self.heatmap_generator_args.use_score)

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain data (what the manifest records and hashes)."""
        return dataclasses.asdict(self)

    def hash(self) -> str:
        """A short stable hash of the resolved config."""
        return config_hash(self.to_dict())


def _validate(cfg: HeatmapConfig) -> None:
    gen, norm, align = cfg.heatmap_generator_args, cfg.norm_args, cfg.align_args
    if not gen.sigma > 0:
        raise ConfigError(f"heatmap_generator_args.sigma must be > 0, got {gen.sigma}")
    for key, value in (("norm_args.heatmap_image_height", norm.heatmap_image_height),
                       ("heatmap_generator_args.img_h", gen.img_h), ("heatmap_generator_args.img_w", gen.img_w),
                       ("align_args.final_img_size", align.final_img_size),
                       ("align_args.heatmap_image_size", align.heatmap_image_size)):
        if value < 2:
            raise ConfigError(f"{key} must be at least 2, got {value}")
    if align.offset < 0:
        raise ConfigError(f"align_args.offset must be >= 0, got {align.offset}")
    if not align.align and gen.img_h != gen.img_w:
        raise ConfigError("align_args.align: false needs a square map (img_h == img_w)")


def heatmap_config_from_dict(tree: Mapping[str, Any]) -> HeatmapConfig:
    """Build a HeatmapConfig from a YAML tree whose `${...}` references are still unresolved.

    Unknown keys are refused before any reference is expanded.
    """
    check_keys(HeatmapConfig, tree)
    cfg = build_dataclass(HeatmapConfig, resolve_references(dict(tree)))
    _validate(cfg)
    return cfg


def load_heatmap_config(path: str | None = None, overrides: Mapping[str, Any] | None = None) -> HeatmapConfig:
    """Load configs/heatmap.yaml (or OpenGait's pretreatment_heatmap.yaml), with dotted overrides."""
    source = path or DEFAULT_CONFIG_PATH
    tree = read_yaml(source)
    try:
        return heatmap_config_from_dict(apply_overrides(tree, overrides))
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
