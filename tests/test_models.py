"""SkeletonGait / SkeletonGait++ models: block shapes, OpenGait parity, checkpoints (CPU, fast)."""
from __future__ import annotations

import json
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ray_gait.models import (
    AttentionFusion,
    CheckpointError,
    DeepGaitV2,
    GaitOutput,
    SkeletonGaitPP,
    build_model,
    embed,
    export_opengait_checkpoint,
    load_opengait_checkpoint,
    load_weights,
)
from ray_gait.models.blocks import (
    BasicBlock2D,
    BasicBlock3D,
    BasicBlockP3D,
    PointwiseConv3d,
    TemporalConv3d,
    make_layer,
    set_stem,
)
from ray_gait.models.layers import (
    HorizontalPoolingPyramid,
    SeparateBNNecks,
    SeparateFCs,
    SetBlockWrapper,
    TemporalMaxPool,
)

DATA = Path(__file__).parent / "data" / "models"
TOL = 1e-4
FIXTURES = ("SkeletonGait", "SkeletonGaitPP")

TINY_DGV2 = {"model": "DeepGaitV2",
             "Backbone": {"in_channels": 2, "mode": "p3d", "layers": [1, 2, 1, 1], "channels": [4, 8, 8, 16]},
             "SeparateBNNecks": {"class_num": 5}}
TINY_PP = {"model": "SkeletonGaitPP", "Backbone": {"in_channels": 3, "blocks": [1, 1, 1, 1], "C": 1},
           "SeparateBNNecks": {"class_num": 5}}

# model_cfg sections of OpenGait's configs/skeletongait/*.yaml, with OpenGait's parameter and
# state_dict tensor counts for them (counted by building OpenGait's own classes).
SEED_CFGS = {
    "skeletongait_Gait3D": ({"model": "DeepGaitV2",
                             "Backbone": {"in_channels": 2, "mode": "p3d", "layers": [1, 4, 4, 1],
                                          "channels": [64, 128, 256, 512]},
                             "SeparateBNNecks": {"class_num": 3000}}, 25492736, 205),
    "skeletongait_CCPG": ({"model": "DeepGaitV2",
                           "Backbone": {"in_channels": 2, "mode": "p3d", "layers": [1, 1, 1, 1],
                                        "channels": [64, 128, 256, 512]},
                           "SeparateBNNecks": {"class_num": 100}, "use_emb2": True}, 8446464, 97),
    "skeletongait++_Gait3D": ({"model": "SkeletonGaitPP",
                               "Backbone": {"in_channels": 3, "blocks": [1, 4, 4, 1], "C": 2},
                               "SeparateBNNecks": {"class_num": 3000}}, 25568608, 236),
    "skeletongait++_CCPG": ({"model": "SkeletonGaitPP",
                             "Backbone": {"in_channels": 3, "blocks": [1, 1, 1, 1], "C": 2},
                             "SeparateBNNecks": {"class_num": 100}}, 8522336, 128),
}


@pytest.fixture(autouse=True)
def _few_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(min(threads, 2))
    yield
    torch.set_num_threads(threads)


def _cfg(name: str) -> dict:
    return json.loads((DATA / f"{name}_model_cfg.json").read_text())


@pytest.fixture(scope="module")
def fixture_models():
    """The two fixture models with OpenGait's weights, and their inputs/outputs."""
    out = {}
    for name in FIXTURES:
        model = build_model(_cfg(name), weights=DATA / f"{name}.pt").eval()
        out[name] = (model, dict(np.load(DATA / f"{name}_io.npz")))
    return out


def _max_diff(a: torch.Tensor, b: np.ndarray) -> float:
    return float((a - torch.from_numpy(b)).abs().max())


# ---------------------------------------------------------------- blocks and layers: shapes


@pytest.mark.parametrize("module, shape_in, shape_out", [
    (set_stem(3, 8), (2, 3, 5, 64, 44), (2, 8, 5, 64, 44)),
    (BasicBlock2D(8, 8), (6, 8, 32, 22), (6, 8, 32, 22)),
    (make_layer(BasicBlock2D, 8, 16, 2, 2), (6, 8, 32, 22), (6, 16, 16, 11)),
    (SetBlockWrapper(make_layer(BasicBlock2D, 8, 16, 2, 1)), (2, 8, 3, 32, 22), (2, 16, 3, 16, 11)),
    (BasicBlockP3D(8, 8), (2, 8, 5, 16, 11), (2, 8, 5, 16, 11)),
    (make_layer(BasicBlockP3D, 8, 16, (2, 2), 2), (2, 8, 5, 32, 22), (2, 16, 5, 16, 11)),
    (make_layer(BasicBlockP3D, 8, 16, 1, 1), (1, 8, 1, 16, 11), (1, 16, 1, 16, 11)),
    (make_layer(BasicBlock3D, 8, 16, (1, 2, 2), 2), (2, 8, 5, 32, 22), (2, 16, 5, 16, 11)),
    (make_layer(BasicBlock3D, 8, 8, (2, 1, 1), 1), (2, 8, 5, 16, 11), (2, 8, 3, 16, 11)),
    (make_layer(BasicBlock3D, 8, 8, (3, 1, 1), 1), (2, 8, 6, 16, 11), (2, 8, 2, 16, 11)),
    (HorizontalPoolingPyramid([16]), (2, 8, 16, 11), (2, 8, 16)),
    (HorizontalPoolingPyramid(), (2, 8, 16, 11), (2, 8, 31)),
    (SeparateFCs(16, 8, 4), (3, 8, 16), (3, 4, 16)),
])
def test_block_output_shapes(module: nn.Module, shape_in: tuple, shape_out: tuple) -> None:
    module.eval()
    with torch.no_grad():
        assert tuple(module(torch.rand(shape_in)).shape) == shape_out


def test_head_and_fusion_shapes() -> None:
    feats, logits = SeparateBNNecks(16, 8, class_num=5).eval()(torch.rand(3, 8, 16))
    assert feats.shape == (3, 8, 16) and logits.shape == (3, 5, 16)
    assert torch.allclose(feats.norm(dim=1), torch.ones(3, 16), atol=1e-5)  # L2-normalized per part
    fusion = AttentionFusion(32).eval()
    sil, maps = torch.rand(2, 32, 4, 16, 11), torch.rand(2, 32, 4, 16, 11)
    with torch.no_grad():
        fused = fusion(sil, maps)
    assert fused.shape == (2, 32, 4, 16, 11)
    assert bool(((fused >= torch.minimum(sil, maps) - 1e-6) & (fused <= torch.maximum(sil, maps) + 1e-6)).all())
    pooled = TemporalMaxPool()(torch.rand(1, 4, 7, 16, 11), [3, 4])
    assert pooled.shape == (2, 4, 16, 11)


@pytest.mark.parametrize("h", [16, 15])
def test_fast_3d_convs_equal_conv3d(h: int) -> None:
    x = torch.rand(2, 8, 5, h, 11, dtype=torch.float64)
    temporal = TemporalConv3d(8, 6).double()
    ref = nn.functional.conv3d(x, temporal.weight, padding=(1, 0, 0))
    assert torch.allclose(temporal(x), ref, atol=1e-12)
    for stride in ((1, 1), (2, 2)):
        point = PointwiseConv3d(8, 6, stride).double()
        ref = nn.functional.conv3d(x, point.weight, stride=(1, *stride))
        assert point(x).shape == ref.shape and torch.allclose(point(x), ref, atol=1e-12)


def test_make_layer_downsample_rule() -> None:
    assert make_layer(BasicBlockP3D, 8, 8, 1, 2)[0].downsample is None
    assert make_layer(BasicBlockP3D, 8, 16, 1, 1)[0].downsample is not None
    layer = make_layer(BasicBlock2D, 8, 8, 2, 3)
    assert layer[0].downsample is not None and all(b.downsample is None for b in layer[1:])
    assert isinstance(make_layer(BasicBlock3D, 8, 8, (1, 2, 2), 1)[0].downsample[0], nn.Conv3d)


@pytest.mark.parametrize("build, match", [
    (lambda: BasicBlock2D(8, 8, groups=2), "groups"),
    (lambda: BasicBlockP3D(8, 8, base_width=32), "base_width"),
    (lambda: BasicBlock3D(8, 8, dilation=2), "dilation"),
    (lambda: BasicBlockP3D(8, 8, stride=(1, 2, 2)), "stride"),
    (lambda: BasicBlock2D(8, 8, stride=0), "stride"),
    (lambda: BasicBlock3D(8, 8, stride=(4, 1, 1)), "temporal stride"),
    (lambda: make_layer(BasicBlock2D, 8, 8, 1, 0), "at least one block"),
    (lambda: AttentionFusion(8), "squeeze_ratio"),
    (lambda: HorizontalPoolingPyramid([0]), "bin_num"),
])
def test_blocks_reject_unsupported_options(build, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build()


# ---------------------------------------------------------------- build_model and config checks


@pytest.mark.parametrize("name", sorted(SEED_CFGS))
def test_seed_configs_build_with_opengait_sizes(name: str) -> None:
    cfg, n_params, n_tensors = SEED_CFGS[name]
    model = build_model(cfg)
    assert sum(p.numel() for p in model.parameters()) == n_params
    assert len(model.state_dict()) == n_tensors
    assert model.FCs.fc_bin.shape[-1] == 256  # E = 256 for the seed's configs
    assert model.use_emb2 is cfg.get("use_emb2", False)


def _with(cfg: dict, path: str, value) -> dict:
    cfg = json.loads(json.dumps(cfg))
    *parents, last = path.split(".")
    node = cfg
    for p in parents:
        node = node[p]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return cfg


@pytest.mark.parametrize("base, path, value, match", [
    (TINY_DGV2, "model", "GaitSet", "model_cfg.model"),
    (TINY_DGV2, "extra", 1, "unknown key.*extra"),
    (TINY_DGV2, "Backbone.foo", 1, r"model_cfg.Backbone: unknown key.*foo"),
    (TINY_DGV2, "Backbone.mode", "p4d", "model_cfg.Backbone.mode"),
    (TINY_DGV2, "Backbone.layers", [1, 1, 1], "model_cfg.Backbone.layers"),
    (TINY_DGV2, "Backbone.channels", [4, 8, 0, 16], r"model_cfg.Backbone.channels\[2\]"),
    (TINY_DGV2, "Backbone.in_channels", KeyError, "missing key.*in_channels"),
    (TINY_DGV2, "SeparateBNNecks.class_num", 0, "model_cfg.SeparateBNNecks.class_num"),
    (TINY_DGV2, "SeparateBNNecks.parallel_BN1d", False, "unknown key.*parallel_BN1d"),
    (TINY_DGV2, "use_emb2", "yes", "model_cfg.use_emb2"),
    (TINY_PP, "Backbone.in_channels", 2, "model_cfg.Backbone.in_channels"),
    (TINY_PP, "Backbone.C", 1.3, "model_cfg.Backbone.C"),
    (TINY_PP, "Backbone.C", 0, "model_cfg.Backbone.C"),
    (TINY_PP, "Backbone.mode", "p3d", "unknown key.*mode"),
    (TINY_PP, "Backbone.blocks", "1111", "model_cfg.Backbone.blocks"),
])
def test_build_model_rejects_bad_config(base: dict, path: str, value, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_model(_with(base, path, value))


def test_build_model_dispatch_and_output_type() -> None:
    assert isinstance(build_model(TINY_DGV2), DeepGaitV2)
    model = build_model(TINY_PP).eval()
    assert isinstance(model, SkeletonGaitPP)
    with torch.no_grad():
        out = model(torch.rand(2, 3, 3, 64, 44))
    assert isinstance(out, GaitOutput)
    assert out.embeddings.shape == (2, 128, 16) and out.logits.shape == (2, 5, 16)
    assert out.inference is out.embeddings
    with pytest.raises(ValueError, match="3 input channels"):
        model(torch.rand(1, 3, 2, 64, 44))


def test_use_emb2_selects_bnneck_features() -> None:
    model = build_model({**TINY_DGV2, "use_emb2": True}).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 2, 64, 44))
    assert torch.equal(out.inference, model.BNNecks(out.embeddings)[0])


# ---------------------------------------------------------------- OpenGait parity on the fixtures


@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_checkpoint_loads_strictly(name: str) -> None:
    ckpt = load_opengait_checkpoint(DATA / f"{name}.pt")
    assert set(ckpt) == {"model", "optimizer", "scheduler", "iteration"}
    model = build_model(_cfg(name))
    assert list(model.state_dict()) == list(ckpt["model"])
    assert load_weights(model, DATA / f"{name}.pt") == ([], [])


@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_embeddings_reproduced(fixture_models, name: str) -> None:
    model, io = fixture_models[name]
    with torch.no_grad():
        out = model(torch.from_numpy(io["x_fixed"]))
    assert _max_diff(out.inference, io["embeddings_fixed"]) <= TOL
    assert _max_diff(out.embeddings, io["embeddings_fixed"]) <= TOL
    assert _max_diff(out.logits, io["logits_fixed"]) <= TOL
    assert _max_diff(embed(model, io["x_odd"]), io["embeddings_odd"]) <= TOL


@pytest.mark.parametrize("name", FIXTURES)
def test_packed_sequences_match_opengait(fixture_models, name: str) -> None:
    model, io = fixture_models[name]
    ref = np.load(DATA / "opengait_packed.npz")
    lengths = ref["seq_lengths"].tolist()  # [6, 5, 9]
    pieces = [io["x_fixed"][0, :6], io["x_fixed"][1, :5], io["x_odd"][0, :9]]
    x = torch.from_numpy(np.concatenate(pieces)[None])
    with torch.no_grad():
        out = model(x, lengths)
    assert out.inference.shape[0] == 3
    assert _max_diff(out.inference, ref[f"{name}_embeddings"]) <= TOL
    assert _max_diff(out.logits, ref[f"{name}_logits"]) <= TOL
    # OpenGait's seqL form: an int tensor [1, k]
    again = embed(model, x, seq_lengths=torch.tensor([lengths], dtype=torch.int32))
    assert torch.equal(out.inference, again)
    # Packed P3D temporal convs cross sequence joins (as in OpenGait): close to, not equal to, one by one.
    one_by_one = torch.cat([embed(model, torch.from_numpy(p[None])) for p in pieces])
    gap = float((out.inference - one_by_one).abs().max())
    assert 0 < gap < 0.2


@pytest.mark.parametrize("mode", ["2d", "3d"])
def test_other_backbone_modes_match_opengait(mode: str) -> None:
    name = f"DeepGaitV2_{mode}"
    model = build_model(_cfg(name), weights=DATA / f"{name}.pt").eval()
    io = np.load(DATA / f"{name}_io.npz")
    x = torch.from_numpy(io["x_fixed_u8"]).float() / 255
    with torch.no_grad():
        out = model(x)
    assert _max_diff(out.inference, io["embeddings_fixed"]) <= TOL
    assert _max_diff(out.logits, io["logits_fixed"]) <= TOL
    xp = torch.from_numpy(io["x_packed_u8"]).float() / 255
    assert _max_diff(embed(model, xp, io["seq_lengths"].tolist()), io["embeddings_packed"]) <= TOL


def test_packing_is_exact_without_temporal_convs() -> None:
    model = build_model(_with(TINY_DGV2, "Backbone.mode", "2d")).eval()
    x = torch.rand(1, 7, 2, 64, 44)
    packed = embed(model, x, [3, 4])
    separate = torch.cat([embed(model, x[:, :3]), embed(model, x[:, 3:])])
    assert torch.allclose(packed, separate, atol=1e-6)


# ---------------------------------------------------------------- embed() contract


def test_embed_contract() -> None:
    model = build_model(TINY_DGV2).train()
    x = torch.rand(2, 4, 2, 64, 44)
    out = embed(model, x)
    assert out.shape == (2, 8, 16) and not out.requires_grad
    assert model.training  # mode restored
    assert torch.equal(out, embed(model, x.numpy()))
    with pytest.raises(ValueError, match="float"):
        embed(model, (x * 255).to(torch.uint8))
    with pytest.raises(ValueError, match="n = 1"):
        embed(model, x, [2, 2])
    with pytest.raises(ValueError, match="add up to"):
        embed(model, x[:1], [2, 3])
    with pytest.raises(ValueError, match="positive"):
        embed(model, x[:1], [4, 0])


# ---------------------------------------------------------------- training


@pytest.mark.parametrize("cfg", [TINY_DGV2, TINY_PP, _with(TINY_DGV2, "Backbone.mode", "3d"),
                                 _with(TINY_DGV2, "Backbone.mode", "2d")],
                         ids=["SkeletonGait", "SkeletonGaitPP", "3d", "2d"])
def test_gradients_reach_every_parameter(cfg: dict) -> None:
    torch.manual_seed(0)
    model = build_model(cfg).train()
    channels = 3 if cfg["model"] == "SkeletonGaitPP" else 2
    out = model(torch.rand(4, 3, channels, 64, 44))
    labels = torch.tensor([0, 1, 2, 3])
    loss = nn.functional.cross_entropy(out.logits * 16, labels[:, None].expand(-1, 16)) + out.embeddings.pow(2).mean()
    loss.backward()
    no_grad = [k for k, p in model.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert no_grad == []
    before = model.FCs.fc_bin.detach().clone()
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    assert not torch.equal(before, model.FCs.fc_bin)


# ---------------------------------------------------------------- checkpoints


def test_export_reload_round_trip(tmp_path: Path) -> None:
    model = build_model(TINY_PP)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.rand(2, 2, 3, 64, 44)).embeddings.sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[10, 20])
    path = Path(export_opengait_checkpoint(model.state_dict(), tmp_path / "ckpt" / "GaitModel-00005.pt",
                                           optimizer_state=opt.state_dict(), scheduler_state=sched.state_dict(),
                                           iteration=5))
    assert [p.name for p in path.parent.iterdir()] == ["GaitModel-00005.pt"]  # no temporary left
    ckpt = load_opengait_checkpoint(path)
    assert ckpt["iteration"] == 5 and ckpt["scheduler"]["milestones"] == Counter({10: 1, 20: 1})
    opt2 = torch.optim.SGD(build_model(TINY_PP).parameters(), lr=0.1, momentum=0.9)
    opt2.load_state_dict(ckpt["optimizer"])
    fresh = build_model(TINY_PP)
    load_weights(fresh, path)
    x = torch.rand(1, 3, 3, 64, 44)
    assert torch.equal(embed(model, x), embed(fresh, x))
    # a module is accepted too, and DDP's ``module.`` prefix is stripped on both sides
    prefixed = {f"module.{k}": v for k, v in model.state_dict().items()}
    export_opengait_checkpoint(prefixed, tmp_path / "ddp.pt")
    assert not any(k.startswith("module.") for k in load_opengait_checkpoint(tmp_path / "ddp.pt")["model"])
    load_weights(build_model(TINY_PP), prefixed)
    export_opengait_checkpoint(model, tmp_path / "module.pt")
    load_weights(build_model(TINY_PP), tmp_path / "module.pt")


def test_wrong_keys_are_refused_with_their_names(tmp_path: Path) -> None:
    model = build_model(TINY_DGV2)
    state = model.state_dict()
    state["layer0.forward_block.0.weigth"] = state.pop("layer0.forward_block.0.weight")
    path = export_opengait_checkpoint(state, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as err:
        load_weights(build_model(TINY_DGV2), path)
    msg = str(err.value)
    assert "bad.pt" in msg and "layer0.forward_block.0.weigth" in msg and "layer0.forward_block.0.weight" in msg
    missing, unexpected = load_weights(build_model(TINY_DGV2), path, strict=False)
    assert missing == ["layer0.forward_block.0.weight"] and unexpected == ["layer0.forward_block.0.weigth"]
    # right names, wrong shapes (another class_num): refused even when not strict
    other = build_model(_with(TINY_DGV2, "SeparateBNNecks.class_num", 9))
    with pytest.raises(CheckpointError, match=r"BNNecks.fc_bin: checkpoint \(16, 8, 9\)"):
        load_weights(build_model(TINY_DGV2), other.state_dict(), strict=False)


class _Payload:
    """Pickles as a call that creates a marker file when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


def test_pickle_with_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "optimizer": _Payload(marker), "iteration": 0}, path)
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_opengait_checkpoint(path)
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_weights(build_model(TINY_DGV2), path)
    assert not marker.exists()
    with open(path, "rb") as f:  # the payload is live: an unrestricted load would run it
        torch.load(f, weights_only=False)
    assert marker.exists()
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_opengait_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_opengait_checkpoint(tmp_path / "junk.pt")


@pytest.mark.parametrize("data", [b"junk\n", b"", b"PK\x03\x04 not a zip", b"\x80\x02}q\x00.", bytes(range(256))],
                         ids=["text", "empty", "zip-magic", "pickle-header", "bytes"])
def test_junk_checkpoint_files_are_a_checkpoint_error_naming_the_file(tmp_path: Path, data: bytes) -> None:
    """torch's loader raises KeyError, EOFError, RuntimeError or UnpicklingError on arbitrary bytes: both
    checkpoint readers turn each into CheckpointError (a one-line CLI error) naming the file."""
    from ray_gait.models.checkpoint import STATE_FILE, read_state
    (tmp_path / "junk.pt").write_bytes(data)
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_opengait_checkpoint(tmp_path / "junk.pt")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / STATE_FILE).write_bytes(data)
    with pytest.raises(CheckpointError, match=f"run/{STATE_FILE}"):
        read_state(str(tmp_path / "run"))


def test_a_torch_file_that_is_not_a_ray_gait_state_is_refused(tmp_path: Path) -> None:
    from ray_gait.models.checkpoint import read_state
    for name, obj in (("list.pt", [torch.zeros(1)]), ("no_model.pt", {"iteration": 3}),
                      ("no_iteration.pt", {"model": {"w": torch.zeros(1)}})):
        torch.save(obj, tmp_path / name)
        with pytest.raises(CheckpointError, match=f"{name}: not a ray_gait checkpoint"):
            read_state(str(tmp_path / name))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_plain_pickle_module_is_not_used_for_loading(tmp_path: Path) -> None:
    path = tmp_path / "raw.pkl"
    path.write_bytes(pickle.dumps({"model": {"w": np.zeros(1)}}))
    with pytest.raises(CheckpointError, match="raw.pkl"):
        load_opengait_checkpoint(path)


def test_fractional_width_multiplier_keeps_opengait_names():
    """C = 0.5 (ours, for CPUs) gives widths 16-32-64-128 under the same parameter names as C = 1."""
    cfg = {"model": "SkeletonGaitPP", "Backbone": {"in_channels": 3, "blocks": [1, 1, 1, 1], "C": 0.5},
           "SeparateBNNecks": {"class_num": 5}}
    half = build_model(cfg)
    full = build_model({**cfg, "Backbone": {**cfg["Backbone"], "C": 1}})
    assert list(half.state_dict()) == list(full.state_dict())
    assert half.FCs.fc_bin.shape[1:] == (128, 64)
    out = half(torch.rand(2, 4, 3, 64, 44))
    assert out.embeddings.shape == (2, 64, 16)
