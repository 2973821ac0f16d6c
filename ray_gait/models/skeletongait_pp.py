"""SkeletonGait++: a silhouette stem and a heatmap stem fused by attention, then shared P3D stages.

Behaviour and ``state_dict`` keys follow OpenGait's ``SkeletonGaitPP`` (``opengait/modeling/models/
skeletongait++.py``); the code is our own. Module names (``sil_layer0``, ``map_layer0``,
``sil_layer1``, ``map_layer1``, ``fusion.conv``, ``layer2`` .. ``layer4``, ``FCs``, ``BNNecks``) are
frozen for weight compatibility with OpenGait checkpoints.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .blocks import BasicBlock2D, BasicBlockP3D, make_layer, set_stem
from ray_gait.registry import check_keys

from .deepgaitv2 import GaitModel, boolean, check_model_name, positive_int, positive_int_list
from .layers import SetBlockWrapper, conv1x1, conv3x3

__all__ = ["AttentionFusion", "SkeletonGaitPP"]

# Input channel layout, fixed by OpenGait's model: 2 heatmaps (limbs, joints), then the silhouette.
MAP_CHANNELS = 2
SIL_CHANNELS = 1


class AttentionFusion(nn.Module):
    """Per-pixel softmax weighting of two streams: ``2 x [n, c, s, h, w] -> [n, c, s, h, w]``.

    A bottleneck (1x1 -> 3x3 -> 1x1, hidden width ``in_channels // squeeze_ratio``) scores the
    concatenated streams; the two scores of each channel and pixel are softmax-normalized.
    """

    def __init__(self, in_channels: int = 64, squeeze_ratio: int = 16) -> None:
        super().__init__()
        hidden = in_channels // squeeze_ratio
        if hidden < 1:
            raise ValueError(
                f"AttentionFusion needs in_channels >= squeeze_ratio, got {in_channels} and {squeeze_ratio}")
        # Name and Sequential indices (0, 1, 3, 4, 6) frozen for weight compatibility: fusion.conv.*.
        self.conv = SetBlockWrapper(nn.Sequential(
            conv1x1(in_channels * 2, hidden),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            conv3x3(hidden, hidden),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            conv1x1(hidden, in_channels * 2),
        ))

    def forward(self, sil_feat: Tensor, map_feat: Tensor) -> Tensor:
        """Fuse ``sil_feat`` and ``map_feat`` (both ``[n, c, s, h, w]``)."""
        n, c, s, h, w = sil_feat.shape
        score = self.conv(torch.cat([sil_feat, map_feat], dim=1))  # [n, 2c, s, h, w]
        score = score.reshape(n, 2, c, s, h, w).softmax(dim=1)
        return sil_feat * score[:, 0] + map_feat * score[:, 1]


class SkeletonGaitPP(GaitModel):
    """SkeletonGait++: ``[n, s, 3, 64, 44]`` (2 heatmaps + silhouette) ``-> GaitOutput``, ``E = 128 * C``.

    Args:
        blocks: number of blocks in each of the four stages (stage 1 per stream, 2-4 shared P3D).
        channel_multiplier: OpenGait's ``C``; stage widths are ``32C, 64C, 128C, 256C``.  A fraction
            with an integral ``32C`` (e.g. 0.5 for 16-32-64-128) is ours, for CPU-sized models.
        class_num: number of training identities (BNNeck classifier width).
        use_emb2: use the BNNeck features, not the FC ones, as the inference embedding.
        in_channels: must be 3 (OpenGait reads the key but hard-codes 2 heatmaps + 1 silhouette).
    """

    inputs = ("heatmap", "silhouette")

    def __init__(
        self,
        *,
        blocks: Sequence[int] = (1, 4, 4, 1),
        channel_multiplier: float = 2,
        class_num: int,
        use_emb2: bool = False,
        in_channels: int = MAP_CHANNELS + SIL_CHANNELS,
    ) -> None:
        super().__init__()
        if in_channels != MAP_CHANNELS + SIL_CHANNELS:
            raise ValueError(f"SkeletonGaitPP takes {MAP_CHANNELS} heatmaps + {SIL_CHANNELS} silhouette = 3 input "
                             f"channels, got in_channels={in_channels}")
        if len(blocks) != 4:
            raise ValueError(f"SkeletonGaitPP needs 4 stages, got blocks={list(blocks)}")
        self.in_channels = in_channels
        self.use_emb2 = use_emb2
        widths = [int(32 * channel_multiplier), int(64 * channel_multiplier), int(128 * channel_multiplier),
                  int(256 * channel_multiplier)]

        # Names frozen for weight compatibility.
        self.sil_layer0 = set_stem(SIL_CHANNELS, widths[0])
        self.map_layer0 = set_stem(MAP_CHANNELS, widths[0])
        self.sil_layer1 = SetBlockWrapper(make_layer(BasicBlock2D, widths[0], widths[0], 1, blocks[0]))
        self.map_layer1 = SetBlockWrapper(make_layer(BasicBlock2D, widths[0], widths[0], 1, blocks[0]))
        self.fusion = AttentionFusion(widths[0])
        self.layer2 = make_layer(BasicBlockP3D, widths[0], widths[1], 2, blocks[1])
        self.layer3 = make_layer(BasicBlockP3D, widths[1], widths[2], 2, blocks[2])
        self.layer4 = make_layer(BasicBlockP3D, widths[2], widths[3], 1, blocks[3])
        self._build_head(widths[3], widths[2], class_num)
        self._init_weights()

    @classmethod
    def from_config(cls, model_cfg: Mapping[str, Any]) -> SkeletonGaitPP:
        """Build from an OpenGait ``model_cfg`` (``model: SkeletonGaitPP``); unknown keys raise ValueError."""
        check_keys(model_cfg, "model_cfg", {"Backbone", "SeparateBNNecks"}, {"model", "use_emb2"})
        check_model_name(model_cfg, cls.__name__)
        backbone = check_keys(model_cfg["Backbone"], "model_cfg.Backbone", {"in_channels", "blocks", "C"})
        necks = check_keys(model_cfg["SeparateBNNecks"], "model_cfg.SeparateBNNecks", {"class_num"})
        in_channels = positive_int(backbone["in_channels"], "model_cfg.Backbone.in_channels")
        if in_channels != MAP_CHANNELS + SIL_CHANNELS:
            raise ValueError(f"model_cfg.Backbone.in_channels must be 3 for SkeletonGaitPP (2 heatmaps + 1 "
                             f"silhouette), got {in_channels}")
        return cls(
            blocks=positive_int_list(backbone["blocks"], "model_cfg.Backbone.blocks", 4),
            channel_multiplier=_width_multiplier(backbone["C"]),
            class_num=positive_int(necks["class_num"], "model_cfg.SeparateBNNecks.class_num"),
            use_emb2=boolean(model_cfg.get("use_emb2", False), "model_cfg.use_emb2"),
            in_channels=in_channels,
        )

    def forward_features(self, x: Tensor) -> Tensor:
        """``[n, s, 3, h, w]`` (channels: limb map, joint map, silhouette) ``-> [n, 256C, s, h / 4, w / 4]``."""
        if x.shape[2] != self.in_channels:
            raise ValueError(f"SkeletonGaitPP expects 3 input channels (2 heatmaps + silhouette), got shape "
                             f"{tuple(x.shape)}")
        x = x.transpose(1, 2)  # [n, 3, s, h, w]
        maps = self.map_layer1(self.map_layer0(x[:, :MAP_CHANNELS]))
        sils = self.sil_layer1(self.sil_layer0(x[:, MAP_CHANNELS:]))
        out = self.fusion(sils, maps)
        out = self.layer2(out)
        out = self.layer3(out)
        return self.layer4(out)


def _width_multiplier(value: Any) -> float:
    """`Backbone.C`: a positive int (OpenGait), or a fraction whose 32C is a whole number (ours)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0 or (32 * value) % 1:
        raise ValueError(f"model_cfg.Backbone.C must be a positive int (or a fraction with 32*C whole), "
                         f"got {value!r}")
    return int(value) if float(value).is_integer() else float(value)
