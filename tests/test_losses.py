"""Triplet and cross-entropy losses, the aggregator, and the DDP gather (2 gloo processes on loopback)."""
from __future__ import annotations

import math
import os
from typing import NamedTuple

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ray_gait.training.losses import CrossEntropyLoss, LossAggregator, TripletLoss, all_gather_with_grad
from ports import free_port


class FakeOutput(NamedTuple):
    embeddings: torch.Tensor
    logits: torch.Tensor
    inference: torch.Tensor


def slow_triplet(embeddings: torch.Tensor, labels: torch.Tensor, margin: float) -> dict[str, torch.Tensor]:
    """Obviously-correct loops: per part, every (anchor, positive incl. itself, negative) term."""
    n, _, p = embeddings.shape
    x = embeddings.double()
    losses, counts, hards, means = [], [], [], []
    for part in range(p):
        d = [[torch.linalg.norm(x[i, :, part] - x[j, :, part]) for j in range(n)] for i in range(n)]
        terms = [
            max(float(d[a][pos] - d[a][neg]) + margin, 0.0)
            for a in range(n)
            for pos in range(n)
            for neg in range(n)
            if labels[a] == labels[pos] and labels[a] != labels[neg]
        ]
        nonzero = [t for t in terms if t > 0]
        losses.append(sum(nonzero) / len(nonzero) if nonzero else 0.0)
        counts.append(float(len(nonzero)))
        hards.append(max(terms) if terms else 0.0)
        means.append(float(sum(float(v) for row in d for v in row)) / (n * n))
    return {k: torch.tensor(v) for k, v in
            {"loss": losses, "loss_num": counts, "hard_loss": hards, "mean_dist": means}.items()}


def test_triplet_hand_computed() -> None:
    # 1-D embeddings a=0, b=1 (id 0) and c=2, d=4 (id 1), margin 0.2. The non-zero terms are
    # d(b,a) - d(b,c) + .2 = 0.2, d(c,d) - d(c,a) + .2 = 0.2 and d(c,d) - d(c,b) + .2 = 1.2,
    # so loss = 1.6 / 3, loss_num = 3, hard_loss = 1.2; mean distance = 26 / 16.
    emb = torch.tensor([0.0, 1.0, 2.0, 4.0]).view(4, 1, 1)
    labels = torch.tensor([0, 0, 1, 1])
    loss, info = TripletLoss(margin=0.2)(emb, labels)
    assert loss.shape == (1,)
    assert loss.item() == pytest.approx(1.6 / 3, abs=1e-6)
    assert info["loss_num"].item() == 3
    assert info["hard_loss"].item() == pytest.approx(1.2, abs=1e-6)
    assert info["mean_dist"].item() == pytest.approx(26 / 16, abs=1e-6)


@pytest.mark.parametrize("labels", [[0, 0, 1, 1, 2, 2, 3, 3], [0, 0, 0, 1, 1, 2, 2, 2, 2]])
def test_triplet_matches_slow_loop(labels: list[int]) -> None:
    torch.manual_seed(0)
    lab = torch.tensor(labels)
    emb = torch.randn(len(labels), 5, 3)
    loss, info = TripletLoss(margin=0.2)(emb, lab)
    ref = slow_triplet(emb, lab, 0.2)
    torch.testing.assert_close(loss.double(), ref["loss"].double(), atol=1e-4, rtol=1e-4)
    for key in ("loss_num", "hard_loss", "mean_dist"):
        torch.testing.assert_close(info[key].double(), ref[key].double(), atol=1e-4, rtol=1e-4)


def test_triplet_zero_when_separated() -> None:
    emb = torch.tensor([0.0, 0.0, 10.0, 10.0]).view(4, 1, 1)
    loss, info = TripletLoss(margin=0.2)(emb, torch.tensor([0, 0, 1, 1]))
    assert loss.item() == 0.0 and info["loss_num"].item() == 0


def test_cross_entropy_hand_computed() -> None:
    logits = torch.tensor([[[0.1], [0.0]]])  # [n=1, classes=2, p=1]; scaled by 16 -> (1.6, 0)
    labels = torch.tensor([0])
    nll0, nll1 = math.log1p(math.exp(-1.6)), math.log1p(math.exp(1.6))
    plain, info = CrossEntropyLoss(scale=16, label_smooth=False, log_accuracy=True)(logits, labels)
    assert plain.item() == pytest.approx(nll0, abs=1e-6)
    assert info["accuracy"].item() == 1.0
    smooth, _ = CrossEntropyLoss(scale=16, eps=0.1)(logits, labels)
    assert smooth.item() == pytest.approx(0.9 * nll0 + 0.1 * (nll0 + nll1) / 2, abs=1e-6)


def test_cross_entropy_matches_slow_loop() -> None:
    torch.manual_seed(1)
    n, c, p = 6, 5, 4
    logits, labels = torch.randn(n, c, p), torch.randint(0, c, (n,))
    loss, info = CrossEntropyLoss(scale=16, eps=0.1, log_accuracy=True)(logits, labels)
    total, hits = 0.0, 0
    for i in range(n):
        for j in range(p):
            logp = torch.log_softmax(16 * logits[i, :, j].double(), 0)
            total += 0.9 * -logp[labels[i]].item() + 0.1 * -logp.mean().item()
            hits += int(logits[i, :, j].argmax() == labels[i])
    assert loss.item() == pytest.approx(total / (n * p), abs=1e-5)
    assert info["accuracy"].item() == pytest.approx(hits / (n * p))


SEED_LOSS_CFG = [
    {"loss_term_weights": 1.0, "margin": 0.2, "type": "TripletLoss", "log_prefix": "triplet"},
    {"loss_term_weights": 1.0, "scale": 16, "type": "CrossEntropyLoss", "log_prefix": "softmax",
     "log_accuracy": True},
]


def _fake_output(n: int = 8, classes: int = 4) -> tuple[FakeOutput, torch.Tensor]:
    torch.manual_seed(2)
    emb = torch.randn(n, 6, 16, requires_grad=True)
    logits = torch.randn(n, classes, 16, requires_grad=True)
    return FakeOutput(emb, logits, emb.detach()), torch.arange(n) % classes


def test_aggregator_seed_config() -> None:
    out, labels = _fake_output()
    total, info = LossAggregator(SEED_LOSS_CFG)(out, labels)
    tri, _ = TripletLoss(0.2)(out.embeddings, labels)
    ce, _ = CrossEntropyLoss(16, log_accuracy=True)(out.logits, labels)
    assert total.item() == pytest.approx((tri.mean() + ce).item(), abs=1e-5)
    assert set(info) == {"triplet/loss", "triplet/hard_loss", "triplet/loss_num", "triplet/mean_dist",
                         "softmax/loss", "softmax/accuracy"}
    assert all(isinstance(v, float) for v in info.values())
    total.backward()
    assert out.embeddings.grad is not None and out.logits.grad is not None


def test_aggregator_weights_and_single_dict() -> None:
    out, labels = _fake_output()
    one, _ = LossAggregator({"type": "TripletLoss", "margin": 0.2, "log_prefix": "triplet"})(out, labels)
    two, _ = LossAggregator({"type": "TripletLoss", "margin": 0.2, "log_prefix": "t",
                             "loss_term_weight": 2.5})(out._asdict(), labels)
    assert two.item() == pytest.approx(2.5 * one.item(), rel=1e-6)


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"type": "ArcFace", "log_prefix": "x"}, "ArcFace"),
        ({"type": "TripletLoss", "margin": 0.2, "log_prefix": "t", "margn": 1}, "margn"),
        ({"type": "TripletLoss", "margin": 0.2}, "log_prefix"),
        ({"type": "TripletLoss", "log_prefix": "t"}, "margin"),
        ([{"type": "TripletLoss", "margin": 0.2, "log_prefix": "t"}] * 2, "duplicate"),
    ],
)
def test_aggregator_rejects_bad_config(cfg: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LossAggregator(cfg)  # type: ignore[arg-type]


def _ddp_worker(rank: int, world: int, port: int, emb: torch.Tensor, labels: torch.Tensor, out_dir: str) -> None:
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        share = emb.shape[0] // world
        local = emb[rank * share:(rank + 1) * share].clone().requires_grad_(True)
        loss, info = TripletLoss(margin=0.2)(local, labels[rank * share:(rank + 1) * share])
        loss.mean().backward()
        probe = local.detach().clone().requires_grad_(True)
        gathered = all_gather_with_grad(probe)
        others = torch.cat([gathered[:rank * share], gathered[(rank + 1) * share:]])
        (grad_from_others,) = torch.autograd.grad(others.sum(), probe, allow_unused=True)
        torch.save({"loss": loss.detach(), "info": info, "grad": local.grad,
                    "grad_from_others": grad_from_others}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_ddp_gather_global_triplet(tmp_path) -> None:
    torch.manual_seed(3)
    world, n = 2, 8
    emb = torch.randn(n, 4, 3)
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])  # every identity spans both ranks
    mp.spawn(_ddp_worker, args=(world, free_port(), emb, labels, str(tmp_path)), nprocs=world, join=True)
    ref_emb = emb.clone().requires_grad_(True)
    ref_loss, ref_info = TripletLoss(margin=0.2)(ref_emb, labels)
    ref_loss.mean().backward()
    for rank in range(world):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        for key in ("loss", "loss_num", "hard_loss", "mean_dist"):
            torch.testing.assert_close(got["info"][key], ref_info[key])
        torch.testing.assert_close(got["loss"], world * ref_loss.detach())  # OpenGait's scaling
        # DDP averages the ranks' gradients: world * (global-loss gradient of the local slice) / world.
        torch.testing.assert_close(got["grad"], world * ref_emb.grad[rank * 4:(rank + 1) * 4])
        assert got["grad_from_others"] is None or not got["grad_from_others"].any()


def test_gather_is_noop_without_ddp() -> None:
    x = torch.randn(3, 2)
    assert all_gather_with_grad(x) is x
