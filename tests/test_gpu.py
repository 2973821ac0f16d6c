"""The CUDA paths of training in plain torch (no Ray): fp16 autocast with a GradScaler, SyncBatchNorm.

The tests marked `gpu` are skipped without a CUDA device; the CPU tests here run the same policy
functions (which precision, which scaler, when SyncBatchNorm) so that their choices are checked
everywhere.  The same under Ray Train (NCCL, several GPUs) is in tests/test_train.py.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ray_gait.models import build_model
from ray_gait.config import load_train_config
from ray_gait.data.batches import BatchMaker
from ray_gait.data.sources import SequenceSet
from ray_gait.models import input_columns
from ray_gait.models.precision import autocast_dtype
from ray_gait.training.loop import make_scaler, train_step, with_sync_bn
from ray_gait.training.losses import LossAggregator
from ray_gait.training.optim import build_optimizer

ROOT = Path(__file__).resolve().parents[1]
PP_CONFIG = ROOT / "configs" / "skeletongait" / "skeletongait++_synth.yaml"


def _tiny_pp():
    cfg = load_train_config(str(PP_CONFIG), {"model_cfg.SeparateBNNecks.class_num": 4,
                                             "trainer_cfg.sampler.batch_size": [4, 2],
                                             "trainer_cfg.sampler.frames_num_fixed": 8})
    rng = np.random.default_rng(0)
    data = SequenceSet(input_columns(cfg.model_cfg["model"], cfg.data_cfg.data_in_use))
    for i in range(4):
        for j in range(3):
            data.add({"id": f"{i}", "type": "nm", "view": f"{j}", "seq": "s",
                      "heatmap": rng.integers(0, 255, (12, 2, 64, 64), dtype=np.uint8),
                      "silhouette": rng.integers(0, 255, (12, 64, 44), dtype=np.uint8)})
    return cfg, BatchMaker(data, cfg.trainer_cfg.sampler, cfg.trainer_cfg.transform, seed=0)


def _count(model: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


def test_sync_bn_only_on_cuda_with_several_ranks():
    cfg, _ = _tiny_pp()
    model = build_model(cfg.model_cfg)
    batch_norms = _count(model, nn.modules.batchnorm._BatchNorm)
    assert batch_norms > 0
    assert with_sync_bn(model, True, torch.device("cpu"), 2) is model
    assert with_sync_bn(model, True, torch.device("cuda"), 1) is model
    assert with_sync_bn(model, False, torch.device("cuda"), 2) is model
    converted = with_sync_bn(model, True, torch.device("cuda"), 2)
    assert _count(converted, nn.SyncBatchNorm) == batch_norms
    assert set(converted.state_dict()) == set(model.state_dict())     # checkpoints keep OpenGait's keys


def test_bf16_steps_on_cpu_learn_without_a_scaler():
    cfg, maker = _tiny_pp()
    device = torch.device("cpu")
    dtype = autocast_dtype(True, device)
    assert dtype == torch.bfloat16 and make_scaler(dtype, device) is None
    torch.manual_seed(0)
    model = build_model(cfg.model_cfg)
    losses = LossAggregator(cfg.loss_cfg)
    optimizer = build_optimizer(model, cfg.optimizer_cfg)
    before = [p.detach().clone() for p in model.parameters()]
    infos = [train_step(model, losses, optimizer, None, maker.make(step), device, dtype) for step in range(3)]
    assert all(np.isfinite(i["loss"]) for i in infos)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


@pytest.mark.gpu
def test_fp16_steps_with_grad_scaler_on_cuda():
    cfg, maker = _tiny_pp()
    device = torch.device("cuda")
    dtype = autocast_dtype("fp16", device)
    scaler = make_scaler(dtype, device)
    assert dtype == torch.float16 and scaler is not None
    torch.manual_seed(0)
    model = build_model(cfg.model_cfg).to(device)
    losses = LossAggregator(cfg.loss_cfg).to(device)
    optimizer = build_optimizer(model, cfg.optimizer_cfg)
    before = [p.detach().clone() for p in model.parameters()]
    infos = [train_step(model, losses, optimizer, scaler, maker.make(step), device, dtype) for step in range(4)]
    assert all(np.isfinite(i["loss"]) for i in infos)
    assert scaler.get_scale() > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(p.dtype == torch.float32 for p in model.parameters())      # fp16 only inside autocast
