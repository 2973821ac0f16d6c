"""`ray-gait export`: TorchScript and ONNX embedders equal the eager model on any batch and length (no Ray)."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch

from ray_gait import cli
from ray_gait.models import build_model, export_opengait_checkpoint
from ray_gait.models.export import (
    INPUT_NAME,
    OUTPUT_NAME,
    Embedder,
    export_bytes,
    onnx_runner,
    random_input,
    torchscript_runner,
    verify_export,
)
from ray_gait.config import load_train_config
from ray_gait.training.optim import build_optimizer, build_scheduler
from ray_gait.training.state import TrainState, save_state

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"skeletongait": ROOT / "configs/skeletongait/skeletongait_synth.yaml",
           "skeletongait++": ROOT / "configs/skeletongait/skeletongait++_synth.yaml"}
CHANNELS = {"skeletongait": 2, "skeletongait++": 3}
SHAPES = [(n, s) for n in (1, 3) for s in (1, 7, 30)]
OVERRIDES = {"model_cfg.SeparateBNNecks.class_num": 5}
ATOL = RTOL = 1e-4


def _model(name: str, seed: int) -> torch.nn.Module:
    """The synthetic config's model with class_num 5, random weights and random BatchNorm statistics."""
    torch.manual_seed(seed)
    model = build_model(load_train_config(str(CONFIGS[name]), OVERRIDES).model_cfg)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _eager(embedder: Embedder, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return embedder(x).numpy()


@pytest.fixture(scope="module")
def embedders() -> dict[str, Embedder]:
    return {name: Embedder(_model(name, seed=i)).eval() for i, name in enumerate(CONFIGS)}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_embedder_takes_the_models_channels(embedders, name):
    embedder = embedders[name]
    assert embedder.in_channels == CHANNELS[name]
    x = random_input(CHANNELS[name], 2, 5)
    with torch.no_grad():
        assert torch.equal(embedder(x), embedder.model(x, None).inference)
    assert _eager(embedder, x).shape == (2, 64, 16)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_torchscript_equals_eager_on_every_batch_and_length(embedders, name):
    embedder = embedders[name]
    run = torchscript_runner(export_bytes(embedder, "torchscript"))
    for n, s in SHAPES:
        x = random_input(CHANNELS[name], n, s, seed=10 * n + s)
        got = run(x).numpy()
        assert got.shape == (n, 64, 16) and got.dtype == np.float32
        np.testing.assert_allclose(got, _eager(embedder, x), atol=ATOL, rtol=RTOL, err_msg=f"n={n} s={s}")


def _needs_onnx():
    """onnxruntime, after skipping the test where the ONNX packages are not installed."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    return pytest.importorskip("onnxruntime")


def _assert_onnx_equals_eager(data: bytes, embedder: Embedder, channels: int) -> None:
    """The ONNX graph has free n and s, and onnxruntime's output equals the eager one on every shape."""
    import onnx
    graph = onnx.load_from_string(data).graph
    assert [i.name for i in graph.input] == [INPUT_NAME] and [o.name for o in graph.output] == [OUTPUT_NAME]
    dims = graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and dims[1].dim_param                  # n and s are free
    assert [d.dim_value for d in dims[2:]] == [channels, 64, 44]
    run = onnx_runner(data)
    for n, s in SHAPES:
        x = random_input(channels, n, s, seed=10 * n + s)
        got = run(x.numpy())
        assert got.shape == (n, 64, 16) and got.dtype == np.float32
        np.testing.assert_allclose(got, _eager(embedder, x), atol=ATOL, rtol=RTOL, err_msg=f"n={n} s={s}")


def test_onnx_equals_eager_on_every_batch_and_length(embedders):
    """SkeletonGait here; SkeletonGait++ in test_cli_writes_onnx_from_an_opengait_checkpoint (one export each)."""
    _needs_onnx()
    embedder = embedders["skeletongait"]
    _assert_onnx_equals_eager(export_bytes(embedder, "onnx"), embedder, CHANNELS["skeletongait"])


def test_verify_export_refuses_another_models_file(embedders):
    other = Embedder(_model("skeletongait", seed=99))
    data = export_bytes(other, "torchscript")
    assert verify_export(other, data, "torchscript") == pytest.approx(0.0, abs=ATOL)
    with pytest.raises(RuntimeError, match="differs from the eager model"):
        verify_export(embedders["skeletongait"], data, "torchscript")


def test_unknown_format_is_a_clear_error(embedders, capsys, tmp_path):
    with pytest.raises(ValueError, match="unknown export format 'tflite'; choose one of torchscript, onnx"):
        export_bytes(embedders["skeletongait"], "tflite")
    with pytest.raises(SystemExit) as stop:
        cli.main(["export", "--cfgs", str(CONFIGS["skeletongait"]), "--checkpoint", str(tmp_path),
                  "--format", "tflite", "--out", str(tmp_path / "m.bin")])
    assert stop.value.code == 2
    assert "invalid choice: 'tflite'" in capsys.readouterr().err
    assert not (tmp_path / "m.bin").exists()


def test_missing_checkpoint_is_a_one_line_error(capsys, tmp_path):
    code = cli.main(["export", "--cfgs", str(CONFIGS["skeletongait"]), "--checkpoint", str(tmp_path / "none.pt"),
                     "--format", "torchscript", "--out", str(tmp_path / "m.pt")])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("ray-gait export: error:") and "none.pt" in err
    assert not (tmp_path / "m.pt").exists()


def test_help_shows_an_example(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["export", "--help"])
    out = capsys.readouterr().out
    assert stop.value.code == 0 and "--format {torchscript,onnx}" in out and "example: ray-gait export" in out


def _export_cli(name: str, checkpoint: str, fmt: str, out: Path) -> int:
    sets = [arg for key, value in OVERRIDES.items() for arg in ("--set", f"{key}={value}")]
    return cli.main(["export", "--cfgs", str(CONFIGS[name]), "--checkpoint", checkpoint, "--format", fmt,
                     "--out", str(out), *sets])


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_cli_writes_torchscript_from_a_training_checkpoint(tmp_path, capsys):
    model = _model("skeletongait", seed=7)
    cfg = load_train_config(str(CONFIGS["skeletongait"]), OVERRIDES)
    optimizer = build_optimizer(model, cfg.optimizer_cfg)
    state = TrainState(model, optimizer, build_scheduler(optimizer, dict(cfg.scheduler_cfg), 10), None, iteration=3)
    folder = tmp_path / "checkpoint_000003"
    save_state(str(folder), state, {"note": "test"})
    out = tmp_path / "exported" / "skeletongait.pt"
    assert _export_cli("skeletongait", str(folder), "torchscript", out) == 0
    assert f"-> {out}" in capsys.readouterr().out
    loaded = torch.jit.load(str(out))
    x = random_input(2, 3, 7, seed=5)
    with torch.no_grad():
        np.testing.assert_allclose(loaded(x).numpy(), _eager(Embedder(model), x), atol=ATOL, rtol=RTOL)
    assert _export_cli("skeletongait", str(folder / "state.pt"), "torchscript", out) == 0   # state.pt too


def test_cli_writes_onnx_from_an_opengait_checkpoint(tmp_path):
    ort = _needs_onnx()
    model = _model("skeletongait++", seed=8)
    checkpoint = tmp_path / "SkeletonGaitPP-00600.pt"
    export_opengait_checkpoint(model, checkpoint, iteration=600)
    out = tmp_path / "skeletongait++.onnx"
    assert _export_cli("skeletongait++", str(checkpoint), "onnx", out) == 0
    session = ort.InferenceSession(str(out))                       # as README says
    x = random_input(3, 1, 30, seed=6)
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got, _eager(Embedder(model), x), atol=ATOL, rtol=RTOL)
    _assert_onnx_equals_eager(out.read_bytes(), Embedder(model).eval(), CHANNELS["skeletongait++"])


FIXTURES = ROOT / "tests" / "data" / "models"   # OpenGait's own checkpoints and outputs (see its README.md)
FIXTURE_SETS = {"SkeletonGait": ("skeletongait", ["model_cfg.SeparateBNNecks.class_num=20"]),
                "SkeletonGaitPP": ("skeletongait++", ["model_cfg.SeparateBNNecks.class_num=20",
                                                      "model_cfg.Backbone.C=1"])}


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("fixture", list(FIXTURE_SETS))
def test_exported_torchscript_reproduces_opengaits_embeddings(tmp_path, fixture):
    name, sets = FIXTURE_SETS[fixture]
    out = tmp_path / f"{fixture}.pt"
    args = ["export", "--cfgs", str(CONFIGS[name]), "--checkpoint", str(FIXTURES / f"{fixture}.pt"),
            "--format", "torchscript", "--out", str(out)]
    assert cli.main(args + [arg for item in sets for arg in ("--set", item)]) == 0
    loaded = torch.jit.load(str(out))
    reference = np.load(FIXTURES / f"{fixture}_io.npz")
    with torch.no_grad():
        for x, expected in (("x_fixed", "embeddings_fixed"), ("x_odd", "embeddings_odd")):
            got = loaded(torch.from_numpy(reference[x])).numpy()
            np.testing.assert_allclose(got, reference[expected], atol=ATOL, rtol=RTOL, err_msg=x)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_cli_writes_into_a_bucket(s3_bucket):
    s3, bucket = s3_bucket
    assert cli.main(["export", "--cfgs", str(CONFIGS["skeletongait"]), "--checkpoint",
                     str(FIXTURES / "SkeletonGait.pt"), "--set", "model_cfg.SeparateBNNecks.class_num=20",
                     "--format", "torchscript", "--out", f"s3://{bucket}/models/skeletongait.pt"]) == 0
    with s3.open_input_file(f"{bucket}/models/skeletongait.pt") as handle:
        loaded = torch.jit.load(io.BytesIO(handle.read()))
    reference = np.load(FIXTURES / "SkeletonGait_io.npz")
    with torch.no_grad():
        got = loaded(torch.from_numpy(reference["x_odd"])).numpy()
    np.testing.assert_allclose(got, reference["embeddings_odd"], atol=ATOL, rtol=RTOL)
