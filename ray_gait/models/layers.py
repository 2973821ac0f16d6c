"""Set-level layers shared by SkeletonGait and SkeletonGait++ (OpenGait's ``modules.py`` behaviour).

Tensors follow OpenGait's layout: a batch of sequences is ``[n, c, s, h, w]`` (n sequences, c
channels, s frames), part features are ``[n, c, p]`` (p horizontal parts).

Attribute names of these modules (``forward_block``, ``fc_bin``, ``bn1d``) are frozen: they make
the ``state_dict`` keys equal to OpenGait's, so that its checkpoints load with ``strict=True``.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "HorizontalPoolingPyramid",
    "SeparateBNNecks",
    "SeparateFCs",
    "SetBlockWrapper",
    "TemporalMaxPool",
    "conv1x1",
    "conv3x3",
    "normalize_seq_lengths",
]


def conv3x3(in_planes: int, out_planes: int, stride: int | Sequence[int] = 1) -> nn.Conv2d:
    """3x3 2-D convolution, padding 1, no bias."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int | Sequence[int] = 1) -> nn.Conv2d:
    """1x1 2-D convolution, no bias."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class SetBlockWrapper(nn.Module):
    """Apply a frame-level 2-D block to every frame: ``[n, c, s, h, w] -> [n, c', s, h', w']``."""

    def __init__(self, forward_block: nn.Module) -> None:
        super().__init__()
        # Name frozen for weight compatibility: keys are ``<name>.forward_block.*``.
        self.forward_block = forward_block

    def forward(self, x: Tensor) -> Tensor:
        """Run the block on ``[n*s, c, h, w]`` and restore ``[n, c', s, h', w']``."""
        if x.dim() != 5:
            raise ValueError(f"SetBlockWrapper expects [n, c, s, h, w], got shape {tuple(x.shape)}")
        n, c, s, h, w = x.shape
        frames = x.transpose(1, 2).reshape(n * s, c, h, w)
        out = self.forward_block(frames)
        return out.reshape(n, s, *out.shape[1:]).transpose(1, 2).contiguous()


def normalize_seq_lengths(seq_lengths: Sequence[int] | Tensor | None, n: int, s: int) -> list[int] | None:
    """Check ``seq_lengths`` (OpenGait's ``seqL``: list, 1-D or ``[1, k]`` tensor) against ``n`` and ``s``.

    Packed sequences lie one after another along time in a single batch row, so ``n`` must be 1
    and the lengths, all positive, must add up to ``s``. Returns a list of ints, or None.
    """
    if seq_lengths is None:
        return None
    if isinstance(seq_lengths, Tensor):
        if seq_lengths.dim() == 2 and seq_lengths.shape[0] == 1:
            seq_lengths = seq_lengths[0]
        if seq_lengths.dim() != 1 or seq_lengths.is_floating_point():
            raise ValueError(
                f"seq_lengths must be a 1-D (or [1, k]) integer tensor, got {tuple(seq_lengths.shape)} "
                f"{seq_lengths.dtype}")
        lengths = [int(v) for v in seq_lengths.tolist()]
    else:
        lengths = []
        for v in seq_lengths:
            if isinstance(v, bool) or int(v) != v:
                raise ValueError(f"seq_lengths must hold integers, got {v!r}")
            lengths.append(int(v))
    if not lengths:
        raise ValueError("seq_lengths is empty")
    if n != 1:
        raise ValueError(f"packed seq_lengths need a batch of one row (n = 1), got n = {n}")
    if min(lengths) < 1:
        raise ValueError(f"seq_lengths must be positive, got {lengths}")
    if sum(lengths) != s:
        raise ValueError(f"seq_lengths add up to {sum(lengths)} but the input has s = {s} frames")
    return lengths


class TemporalMaxPool(nn.Module):
    """Max over time per sequence: ``[n, c, s, h, w] -> [n, c, h, w]``, or ``[k, c, h, w]`` when packed.

    With ``seq_lengths`` (n = 1), each of the k packed sequences is pooled over its own frames,
    as OpenGait's ``PackSequenceWrapper(torch.max)``.
    """

    def forward(self, x: Tensor, seq_lengths: list[int] | None = None) -> Tensor:
        """Pool ``x`` over dim 2 (time)."""
        if seq_lengths is None:
            return x.max(dim=2).values
        return torch.cat([part.max(dim=2).values for part in x.split(seq_lengths, dim=2)], dim=0)


class HorizontalPoolingPyramid(nn.Module):
    """Split each map into horizontal strips, pool each by mean + max: ``[n, c, h, w] -> [n, c, p]``.

    ``bin_num`` lists the strip counts of each pyramid level (OpenGait's default ``[16, 8, 4, 2, 1]``;
    SkeletonGait uses ``[16]``); ``p = sum(bin_num)``.
    """

    def __init__(self, bin_num: Sequence[int] = (16, 8, 4, 2, 1)) -> None:
        super().__init__()
        if not bin_num or any(int(b) < 1 for b in bin_num):
            raise ValueError(f"bin_num must be positive integers, got {list(bin_num)}")
        self.bin_num = [int(b) for b in bin_num]

    def forward(self, x: Tensor) -> Tensor:
        """Pool ``[n, c, h, w]`` into ``[n, c, sum(bin_num)]``."""
        n, c, h, w = x.shape
        features = []
        for bins in self.bin_num:
            if (h * w) % bins:
                raise ValueError(f"a {h}x{w} feature map cannot be split into {bins} strips")
            strips = x.reshape(n, c, bins, -1)
            features.append(strips.mean(-1) + strips.max(-1).values)
        return torch.cat(features, dim=-1)


class SeparateFCs(nn.Module):
    """One linear map per part: ``[n, c_in, p] -> [n, c_out, p]`` (weight ``fc_bin [p, c_in, c_out]``)."""

    def __init__(self, parts_num: int, in_channels: int, out_channels: int, norm: bool = False) -> None:
        super().__init__()
        self.p = parts_num
        self.norm = norm
        # Name frozen for weight compatibility: ``FCs.fc_bin``.
        self.fc_bin = nn.Parameter(nn.init.xavier_uniform_(torch.zeros(parts_num, in_channels, out_channels)))

    def forward(self, x: Tensor) -> Tensor:
        """Apply part p's matrix to ``x[:, :, p]``."""
        weight = F.normalize(self.fc_bin, dim=1) if self.norm else self.fc_bin
        out = x.permute(2, 0, 1).matmul(weight)  # [p, n, c_out]
        return out.permute(1, 2, 0).contiguous()


class SeparateBNNecks(nn.Module):
    """BNNeck per part: ``[n, c, p] -> (features [n, c, p], logits [n, class_num, p])``.

    One ``BatchNorm1d`` over all ``c * p`` features, then (``norm=True``) cosine logits between the
    L2-normalized features and the L2-normalized class weights ``fc_bin [p, c, class_num]``.
    """

    def __init__(self, parts_num: int, in_channels: int, class_num: int, norm: bool = True) -> None:
        super().__init__()
        self.p = parts_num
        self.class_num = class_num
        self.norm = norm
        # Names frozen for weight compatibility: ``BNNecks.fc_bin``, ``BNNecks.bn1d``.
        self.fc_bin = nn.Parameter(nn.init.xavier_uniform_(torch.zeros(parts_num, in_channels, class_num)))
        self.bn1d = nn.BatchNorm1d(in_channels * parts_num)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return the normalized features and the per-part logits."""
        n, c, p = x.shape
        feature = self.bn1d(x.reshape(n, c * p)).reshape(n, c, p).permute(2, 0, 1)  # [p, n, c]
        if self.norm:
            feature = F.normalize(feature, dim=-1)
            logits = feature.matmul(F.normalize(self.fc_bin, dim=1))
        else:
            logits = feature.matmul(self.fc_bin)
        return feature.permute(1, 2, 0).contiguous(), logits.permute(1, 2, 0).contiguous()
