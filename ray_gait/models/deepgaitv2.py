"""DeepGaitV2, which SkeletonGait is (``in_channels: 2``, heatmaps in), and the parts SkeletonGait++ shares.

Behaviour and ``state_dict`` keys follow OpenGait's ``DeepGaitV2`` (``opengait/modeling/models/
deepgaitv2.py``); the code is our own. Top-level module names (``layer0`` .. ``layer4``, ``FCs``,
``BNNecks``) are frozen for weight compatibility with OpenGait checkpoints.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from torch import Tensor, nn

from ray_gait.registry import check_keys

from .blocks import BasicBlock2D, BasicBlock3D, BasicBlockP3D, make_layer, set_stem
from .layers import (
    HorizontalPoolingPyramid,
    SeparateBNNecks,
    SeparateFCs,
    SetBlockWrapper,
    TemporalMaxPool,
    normalize_seq_lengths,
)

__all__ = ["DeepGaitV2", "GaitModel", "GaitOutput", "PARTS_NUM"]

PARTS_NUM = 16  # horizontal strips of the head; OpenGait hard-codes HPP bin_num=[16] for both models.

_MODES = ("2d", "p3d", "3d")


class GaitOutput(NamedTuple):
    """What a gait model returns; ``p = 16`` parts."""

    embeddings: Tensor  # [n, E, p]: SeparateFCs output, the triplet loss input (OpenGait's embed_1)
    logits: Tensor  # [n, class_num, p]: BNNeck cosine logits, the cross-entropy input
    inference: Tensor  # [n, E, p]: what the test phase compares (embed_1, or embed_2 with use_emb2)


class GaitModel(nn.Module):
    """Shared head: temporal max -> horizontal pooling -> SeparateFCs -> SeparateBNNecks.

    Subclasses build ``FCs``, ``BNNecks`` (frozen names), set ``use_emb2``, and implement
    ``forward_features(x) -> [n, c, s, h, w]``.
    """

    FCs: SeparateFCs
    BNNecks: SeparateBNNecks
    use_emb2: bool
    inputs: tuple[str, ...] = ("heatmap",)  # the data set columns the model reads, in its channel order

    def _build_head(self, in_channels: int, embed_dim: int, class_num: int) -> None:
        """Create the pooling and part heads (``TP`` and ``HPP`` hold no weights)."""
        self.TP = TemporalMaxPool()
        self.HPP = HorizontalPoolingPyramid(bin_num=[PARTS_NUM])
        # Names frozen for weight compatibility: ``FCs.fc_bin``, ``BNNecks.fc_bin``, ``BNNecks.bn1d.*``.
        self.FCs = SeparateFCs(PARTS_NUM, in_channels, embed_dim)
        self.BNNecks = SeparateBNNecks(PARTS_NUM, embed_dim, class_num=class_num)

    def _init_weights(self) -> None:
        """OpenGait's ``BaseModel.init_parameters``: Xavier convs/linears, BN weight ~ N(1, 0.02), bias 0."""
        for m in self.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)) and m.affine:
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        """Backbone: input ``[n, s, C, h, w]`` -> frame features ``[n, c, s, h', w']``."""
        raise NotImplementedError

    def forward_head(self, feats: Tensor, seq_lengths: list[int] | None = None) -> GaitOutput:
        """Pool ``[n, c, s, h, w]`` over time (per packed sequence) and parts, then embed."""
        pooled = self.TP(feats, seq_lengths)  # [n or k, c, h, w]
        parts = self.HPP(pooled)  # [n, c, p]
        embed_1 = self.FCs(parts)  # [n, E, p]
        embed_2, logits = self.BNNecks(embed_1)  # [n, E, p], [n, class_num, p]
        return GaitOutput(embeddings=embed_1, logits=logits, inference=embed_2 if self.use_emb2 else embed_1)

    def forward(self, x: Tensor, seq_lengths: Sequence[int] | Tensor | None = None) -> GaitOutput:
        """Embed ``x [n, s, C, h, w]``; ``seq_lengths`` packs k sequences along ``s`` (n = 1) -> k rows.

        A 4-D ``[n, s, h, w]`` input is read as one channel, as OpenGait does.
        """
        if x.dim() == 4:
            x = x.unsqueeze(2)
        if x.dim() != 5:
            raise ValueError(f"{type(self).__name__} expects input [n, s, C, h, w], got shape {tuple(x.shape)}")
        lengths = normalize_seq_lengths(seq_lengths, x.shape[0], x.shape[1])
        return self.forward_head(self.forward_features(x), lengths)


class DeepGaitV2(GaitModel):
    """DeepGaitV2 / SkeletonGait: ``[n, s, in_channels, 64, 44] -> GaitOutput`` with ``E = channels[2]``.

    Args:
        in_channels: input channels per frame (2 heatmaps for SkeletonGait, 1 silhouette for DeepGaitV2).
        mode: ``"p3d"`` (pseudo-3D stages 2-4, SkeletonGait's), ``"2d"`` (frame-wise) or ``"3d"``.
        layers: number of blocks in each of the four stages.
        channels: width of each stage; the embedding has ``channels[2]`` channels.
        class_num: number of training identities (BNNeck classifier width).
        use_emb2: use the BNNeck features, not the FC ones, as the inference embedding.

    Stage 1 is frame-wise 2-D in every mode. (OpenGait's ``3d`` mode hands 3-D strides to those 2-D
    blocks and fails when ``layers[0] > 1``; here it builds, with the same parameter names.)
    """

    def __init__(
        self,
        *,
        in_channels: int = 2,
        mode: str = "p3d",
        layers: Sequence[int] = (1, 4, 4, 1),
        channels: Sequence[int] = (64, 128, 256, 512),
        class_num: int,
        use_emb2: bool = False,
    ) -> None:
        super().__init__()
        if mode not in _MODES:
            raise ValueError(f"DeepGaitV2 mode must be one of {list(_MODES)}, got {mode!r}")
        if len(layers) != 4 or len(channels) != 4:
            raise ValueError(f"DeepGaitV2 needs 4 stages, got layers={list(layers)} channels={list(channels)}")
        self.in_channels = in_channels
        self.mode = mode
        self.use_emb2 = use_emb2

        # Stage strides (OpenGait's): stage 1 is always frame-wise 2-D; 3-D stages take (t, h, w).
        if mode == "3d":
            block, strides = BasicBlock3D, ((1, 2, 2), (1, 2, 2), (1, 1, 1))
        else:
            block, strides = (BasicBlock2D if mode == "2d" else BasicBlockP3D), ((2, 2), (2, 2), (1, 1))

        # Names frozen for weight compatibility: layer0 .. layer4.
        self.layer0 = set_stem(in_channels, channels[0])
        self.layer1 = SetBlockWrapper(make_layer(BasicBlock2D, channels[0], channels[0], 1, layers[0]))
        stages = []
        inplanes = channels[0]
        for planes, stride, blocks in zip(channels[1:], strides, layers[1:]):
            stage: nn.Module = make_layer(block, inplanes, planes, stride, blocks)
            stages.append(SetBlockWrapper(stage) if mode == "2d" else stage)
            inplanes = planes * block.expansion
        self.layer2, self.layer3, self.layer4 = stages
        self._build_head(inplanes, channels[2], class_num)
        self._init_weights()

    @classmethod
    def from_config(cls, model_cfg: Mapping[str, Any]) -> DeepGaitV2:
        """Build from an OpenGait ``model_cfg`` (``model: DeepGaitV2``); unknown keys raise ValueError."""
        check_keys(model_cfg, "model_cfg", {"Backbone", "SeparateBNNecks"}, {"model", "use_emb2"})
        check_model_name(model_cfg, cls.__name__)
        backbone = check_keys(model_cfg["Backbone"], "model_cfg.Backbone",
                                 {"in_channels", "mode", "layers", "channels"})
        necks = check_keys(model_cfg["SeparateBNNecks"], "model_cfg.SeparateBNNecks", {"class_num"})
        mode = backbone["mode"]
        if mode not in _MODES:
            raise ValueError(f"model_cfg.Backbone.mode must be one of {list(_MODES)}, got {mode!r}")
        return cls(
            in_channels=positive_int(backbone["in_channels"], "model_cfg.Backbone.in_channels"),
            mode=mode,
            layers=positive_int_list(backbone["layers"], "model_cfg.Backbone.layers", 4),
            channels=positive_int_list(backbone["channels"], "model_cfg.Backbone.channels", 4),
            class_num=positive_int(necks["class_num"], "model_cfg.SeparateBNNecks.class_num"),
            use_emb2=boolean(model_cfg.get("use_emb2", False), "model_cfg.use_emb2"),
        )

    def forward_features(self, x: Tensor) -> Tensor:
        """``[n, s, in_channels, h, w] -> [n, channels[3], s', h / 4, w / 4]``."""
        if x.shape[2] != self.in_channels:
            raise ValueError(f"DeepGaitV2 expects {self.in_channels} input channels, got shape {tuple(x.shape)}")
        out = self.layer0(x.transpose(1, 2).contiguous())
        out = self.layer1(out)
        out = self.layer2(out)
        out = self.layer3(out)
        return self.layer4(out)


def check_model_name(model_cfg: Mapping[str, Any], name: str) -> None:
    """Raise ValueError when ``model_cfg['model']`` is present and is not ``name``."""
    if model_cfg.get("model", name) != name:
        raise ValueError(f"model_cfg.model is {model_cfg['model']!r}, expected {name!r}")


def positive_int(value: Any, where: str) -> int:
    """Return ``value`` if it is a positive int, else raise ValueError naming ``where``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{where} must be a positive integer, got {value!r}")
    return value


def positive_int_list(value: Any, where: str, length: int) -> list[int]:
    """Return ``value`` as a list of ``length`` positive ints, else raise ValueError naming ``where``."""
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != length:
        raise ValueError(f"{where} must be a list of {length} positive integers, got {value!r}")
    return [positive_int(v, f"{where}[{i}]") for i, v in enumerate(value)]


def boolean(value: Any, where: str) -> bool:
    """Return ``value`` if it is a bool, else raise ValueError naming ``where``."""
    if not isinstance(value, bool):
        raise ValueError(f"{where} must be true or false, got {value!r}")
    return value
