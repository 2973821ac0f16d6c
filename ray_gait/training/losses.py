"""Training losses of SkeletonGait / SkeletonGait++ (OpenGait's ``TripletLoss``, ``CrossEntropyLoss``
and ``LossAggregator`` behaviour).

Part features are ``[n, c, p]`` (n sequences, c channels, p horizontal parts). The model's output is
read by attribute (or key): ``TripletLoss`` uses ``embeddings``, ``CrossEntropyLoss`` uses ``logits``
(OpenGait's ``training_feat['triplet']`` and ``training_feat['softmax']``).

Distributed training: when ``torch.distributed`` is initialized with more than one process, the
triplet loss gathers embeddings and labels of every rank (gradients flow through the local slice
only) and multiplies its loss by the world size, so that DDP's gradient averaging yields the gradient
of the loss over the global batch, as OpenGait's ``gather_and_scale_wrapper`` does. The logged
values are those of the global loss, unscaled. The cross-entropy stays local, as in OpenGait.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from ray_gait.registry import build
from ray_gait.yaml_config import ConfigError

__all__ = [
    "CrossEntropyLoss",
    "LOSS_INPUTS",
    "LossAggregator",
    "TripletLoss",
    "all_gather_with_grad",
    "world_size",
]

logger = logging.getLogger(__name__)


def world_size() -> int:
    """Number of processes of the default group, 1 when torch.distributed is not initialized."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def all_gather_with_grad(x: Tensor, dim: int = 0) -> Tensor:
    """Concatenate ``x`` of every rank along ``dim``; only the local slice keeps its gradient.

    Every rank must pass the same shape. Without an initialized process group of size > 1 this
    returns ``x`` unchanged (OpenGait's ``ddp_all_gather``).
    """
    size = world_size()
    if size == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(size)]
    dist.all_gather(parts, x.detach().contiguous())
    parts[dist.get_rank()] = x
    return torch.cat(parts, dim=dim)


def pairwise_distances(x: Tensor) -> Tensor:
    """Euclidean distances per part: ``[p, n, c] -> [p, n, n]`` (OpenGait's expansion formula)."""
    sq = (x**2).sum(-1)
    inner = x.matmul(x.transpose(1, 2))
    return torch.sqrt(F.relu(sq.unsqueeze(2) + sq.unsqueeze(1) - 2 * inner))


def _first_true_indices(mask: Tensor, width: int) -> tuple[Tensor, Tensor]:
    """Column indices of the True entries of each row, in order, padded to ``width``: ``[n, n] -> 2 x [n, width]``."""
    order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)[:, :width]
    valid = torch.arange(width, device=mask.device).unsqueeze(0) < mask.sum(1, keepdim=True)
    return order, valid


class TripletLoss(nn.Module):
    """Batch-all triplet loss with margin, averaged over the non-zero terms, per part.

    Every (anchor, positive, negative) with ``label[a] == label[pos]`` (the anchor itself included,
    as in OpenGait) and ``label[a] != label[neg]`` contributes ``relu(d(a, pos) - d(a, neg) + margin)``.

    Args:
        margin: the triplet margin (0.2 in the seed's configs).
    """

    def __init__(self, margin: float) -> None:
        super().__init__()
        self.margin = float(margin)

    def forward(self, embeddings: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Loss per part ``[p]`` (scaled by the world size under DDP) and detached info tensors ``[p]``.

        ``embeddings``: ``[n, c, p]``; ``labels``: ``[n]`` integer ids.
        """
        scale = world_size()
        embeddings = all_gather_with_grad(embeddings)
        labels = all_gather_with_grad(labels)
        loss_avg, info = self._loss(embeddings, labels)
        return loss_avg * scale, info

    def _loss(self, embeddings: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Unscaled loss ``[p]`` and info on one (possibly gathered) batch."""
        x = embeddings.permute(2, 0, 1).contiguous().float()  # [p, n, c]
        dist_ = pairwise_distances(x)  # [p, n, n]
        p, n, _ = dist_.shape
        matches = labels.unsqueeze(1) == labels.unsqueeze(0)  # [n, n]
        pos_idx, pos_ok = _first_true_indices(matches, int(matches.sum(1).max()))
        neg_idx, neg_ok = _first_true_indices(~matches, max(int((~matches).sum(1).max()), 1))
        ap = dist_.gather(2, pos_idx.unsqueeze(0).expand(p, -1, -1))  # [p, n, K]
        an = dist_.gather(2, neg_idx.unsqueeze(0).expand(p, -1, -1))  # [p, n, N]
        valid = pos_ok.unsqueeze(2) & neg_ok.unsqueeze(1)  # [n, K, N]
        terms = F.relu(ap.unsqueeze(3) - an.unsqueeze(2) + self.margin)
        terms = torch.where(valid.unsqueeze(0), terms, terms.new_zeros(())).reshape(p, -1)
        loss_num = (terms != 0).sum(-1).float()
        loss_avg = terms.sum(-1) / (loss_num + 1.0e-9)
        loss_avg = torch.where(loss_num == 0, torch.zeros_like(loss_avg), loss_avg)
        info = {
            "loss": loss_avg.detach().clone(),
            "hard_loss": terms.max(-1).values.detach().clone(),
            "loss_num": loss_num.detach().clone(),
            "mean_dist": dist_.mean((1, 2)).detach().clone(),
        }
        return loss_avg, info


class CrossEntropyLoss(nn.Module):
    """Scaled cross-entropy on per-part BNNeck logits, optionally label-smoothed (OpenGait's defaults).

    Args:
        scale: logits are multiplied by it (16 in the seed's configs).
        label_smooth: use label smoothing with ``eps`` (True by default, as OpenGait).
        eps: the label-smoothing amount.
        log_accuracy: also report the top-1 accuracy over all (sequence, part) pairs.
    """

    def __init__(
        self,
        scale: float = 16.0,
        label_smooth: bool = True,
        eps: float = 0.1,
        log_accuracy: bool = False,
    ) -> None:
        super().__init__()
        self.scale = float(scale)
        self.label_smooth = bool(label_smooth)
        self.eps = float(eps)
        self.log_accuracy = bool(log_accuracy)

    def forward(self, logits: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Mean loss over sequences and parts (scalar) and detached info; ``logits``: ``[n, classes, p]``."""
        n, _, p = logits.shape
        logits = logits.float()
        target = labels.long().unsqueeze(1).expand(n, p)
        smoothing = self.eps if self.label_smooth else 0.0
        loss = F.cross_entropy(logits * self.scale, target, label_smoothing=smoothing)
        info = {"loss": loss.detach().clone()}
        if self.log_accuracy:
            info["accuracy"] = (logits.argmax(dim=1) == target).float().mean().detach()
        return loss, info


LOSS_TYPES: dict[str, type[nn.Module]] = {
    "TripletLoss": TripletLoss,
    "CrossEntropyLoss": CrossEntropyLoss,
}

# Which field of the model's output (GaitOutput) each loss reads.
LOSS_INPUTS: dict[str, str] = {
    "TripletLoss": "embeddings",
    "CrossEntropyLoss": "logits",
}

_META_KEYS = ("type", "log_prefix", "loss_term_weight")
# OpenGait's seed configs spell the weight ``loss_term_weights``; OpenGait ignores that key (and
# uses the default 1.0); here it is read as the weight it obviously means.
_WEIGHT_ALIAS = "loss_term_weights"


def _loss_weight(cfg: Mapping[str, Any], where: str) -> float:
    """The ``loss_term_weight`` of one loss entry (alias ``loss_term_weights``), default 1.0."""
    has_main, has_alias = "loss_term_weight" in cfg, _WEIGHT_ALIAS in cfg
    if has_main and has_alias and float(cfg["loss_term_weight"]) != float(cfg[_WEIGHT_ALIAS]):
        raise ValueError(f"{where}: 'loss_term_weight' and 'loss_term_weights' disagree")
    if has_alias and not has_main:
        logger.debug("%s: reading 'loss_term_weights' as 'loss_term_weight'", where)
        return float(cfg[_WEIGHT_ALIAS])
    return float(cfg.get("loss_term_weight", 1.0))


def build_loss(cfg: Mapping[str, Any], where: str = "loss_cfg") -> tuple[str, nn.Module, float]:
    """One ``loss_cfg`` entry -> (log_prefix, loss module, weight); an unknown type or key is a ConfigError."""
    if isinstance(cfg, Mapping) and "log_prefix" not in cfg:
        raise ConfigError(f"{where}: missing 'log_prefix' (e.g. 'triplet' or 'softmax')")
    module = build(LOSS_TYPES, cfg, where, skip=(*_META_KEYS, _WEIGHT_ALIAS))
    return str(cfg["log_prefix"]), module, _loss_weight(cfg, where)


def _read_output(outputs: Any, field: str) -> Tensor:
    """``outputs.field`` or ``outputs[field]``; ValueError if absent."""
    if isinstance(outputs, Mapping):
        value = outputs.get(field)
    else:
        value = getattr(outputs, field, None)
    if value is None:
        raise ValueError(f"the model's output has no {field!r}, needed by the loss configuration")
    return value


class LossAggregator(nn.Module):
    """Weighted sum of the configured losses, with OpenGait's ``loss_cfg`` (a dict or a list of dicts).

    Example entry: ``{"type": "TripletLoss", "margin": 0.2, "log_prefix": "triplet", "loss_term_weight": 1.0}``.
    """

    def __init__(self, loss_cfg: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> None:
        super().__init__()
        entries = [loss_cfg] if isinstance(loss_cfg, Mapping) else list(loss_cfg)
        if not entries:
            raise ValueError("loss_cfg: no loss configured")
        self.losses = nn.ModuleDict()
        self.weights: dict[str, float] = {}
        self.inputs: dict[str, str] = {}
        for i, cfg in enumerate(entries):
            prefix, module, weight = build_loss(cfg, where=f"loss_cfg[{i}]")
            if prefix in self.losses:
                raise ValueError(f"loss_cfg[{i}]: duplicate log_prefix {prefix!r}")
            self.losses[prefix] = module
            self.weights[prefix] = weight
            self.inputs[prefix] = LOSS_INPUTS[cfg["type"]]

    def forward(self, outputs: Any, labels: Tensor) -> tuple[Tensor, dict[str, float]]:
        """Total loss (scalar) and ``{"<log_prefix>/<name>": float}`` (part-averaged, as OpenGait logs).

        ``outputs``: the model's GaitOutput (or a mapping) with ``embeddings`` / ``logits`` ``[n, c, p]``;
        ``labels``: ``[n]`` class indices.
        """
        total: Tensor | None = None
        info: dict[str, float] = {}
        for prefix, loss_fn in self.losses.items():
            loss, loss_info = loss_fn(_read_output(outputs, self.inputs[prefix]), labels)
            term = loss.mean() * self.weights[prefix]
            total = term if total is None else total + term
            for name, value in loss_info.items():
                info[f"{prefix}/{name}"] = float(value.float().mean())
        assert total is not None
        return total, info
