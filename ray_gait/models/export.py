"""The embedding network as a file: TorchScript or ONNX, with dynamic batch and frame axes.

    embedder = load_embedder(cfg.model_cfg, "runs/SkeletonGaitPP_synth/checkpoint_...")
    result = export_embedder(embedder, "onnx", "s3://bucket/skeletongait++.onnx")

The file maps float ``x [n, s, C, 64, 44]`` (frames after the evaluator's transforms, values in
[0, 1]; C = 2 heatmaps for SkeletonGait, 2 heatmaps + 1 silhouette for SkeletonGait++) to the
inference embeddings ``[n, E, p]`` that ``ray-gait test`` compares; every sequence has s frames.
Each export is checked against the eager model on a batch and length other than the traced ones.
"""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ray_gait.io import fs
from ray_gait.models import build_model
from ray_gait.models.weights import load_eval_weights

__all__ = [
    "FORMATS",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "Embedder",
    "ExportResult",
    "export_bytes",
    "export_embedder",
    "load_embedder",
    "onnx_runner",
    "random_input",
    "torchscript_runner",
    "verify_export",
]

FORMATS = ("torchscript", "onnx")
INPUT_NAME = "x"
OUTPUT_NAME = "embedding"
FRAME_SIZE = (64, 44)  # height, width after the evaluator's BaseSilCuttingTransform
TRACE_SHAPE = (2, 4)  # n, s of the example input the graph is recorded with
CHECK_SHAPE = (3, 7)  # n, s of the check against the eager model: neither traced size
ATOL = 1e-4
RTOL = 1e-4

log = logging.getLogger(__name__)


class Embedder(nn.Module):
    """``x [n, s, C, 64, 44] -> [n, E, p]``: the model's inference embeddings, no packed sequences."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.in_channels = int(model.in_channels)

    def forward(self, x: Tensor) -> Tensor:
        """Inference embeddings of ``n`` sequences of ``s`` frames each."""
        return self.model(x, None).inference


@dataclass(frozen=True)
class ExportResult:
    """What `export_embedder` wrote."""

    uri: str
    format: str
    size_bytes: int
    in_channels: int
    embed_dim: int
    parts: int
    max_abs_diff: float | None  # against the eager model on CHECK_SHAPE; None when not checked


def check_format(fmt: str) -> str:
    """Return ``fmt`` if it is one of FORMATS, else raise ValueError listing them."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return fmt


def load_embedder(model_cfg: Mapping[str, Any], checkpoint: str) -> Embedder:
    """``model_cfg``'s model, weights from ``checkpoint`` (ray_gait folder/state.pt or OpenGait file), eval, CPU."""
    model = build_model(model_cfg)
    load_eval_weights(model, checkpoint, strict=True)
    return Embedder(model).eval()


def random_input(in_channels: int, n: int, s: int, seed: int = 0) -> Tensor:
    """A float input ``[n, s, in_channels, 64, 44]`` in [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, s, in_channels, *FRAME_SIZE, generator=generator)


@contextlib.contextmanager
def _quiet_exporters() -> Iterator[None]:
    """Silence the exporters' deprecation and tracer warnings; `verify_export` checks what they warn about."""
    onnx_log = logging.getLogger("torch.onnx")
    level = onnx_log.level
    onnx_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        onnx_log.setLevel(level)


def _torchscript_bytes(embedder: Embedder, example: Tensor) -> bytes:
    """Trace ``embedder`` on ``example`` (sizes are recorded as operations, so n and s stay free)."""
    buffer = io.BytesIO()
    with _quiet_exporters(), torch.no_grad():
        torch.jit.save(torch.jit.trace(embedder, example, check_trace=False), buffer)
    return buffer.getvalue()


def _onnx_bytes(embedder: Embedder, example: Tensor) -> bytes:
    """Export ``embedder`` with torch.export (dynamo) and ``n``, ``s`` as symbolic dimensions."""
    dims = {0: torch.export.Dim("n"), 1: torch.export.Dim("s")}
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise RuntimeError(f"ONNX export needs the onnx and onnxscript packages (pip install onnx onnxscript): "
                           f"{exc}") from None
    with _quiet_exporters():
        program = torch.onnx.export(embedder, (example,), None, input_names=[INPUT_NAME],
                                    output_names=[OUTPUT_NAME], dynamic_shapes={"x": dims}, dynamo=True,
                                    external_data=False, verbose=False)
    if program is None:
        raise RuntimeError("torch.onnx.export returned no program")
    return program.model_proto.SerializeToString()


def export_bytes(embedder: Embedder, fmt: str) -> bytes:
    """The file contents of ``embedder`` in format ``fmt`` (``torchscript`` or ``onnx``), built in memory."""
    check_format(fmt)
    embedder.eval()
    example = random_input(embedder.in_channels, *TRACE_SHAPE)
    return _torchscript_bytes(embedder, example) if fmt == "torchscript" else _onnx_bytes(embedder, example)


def torchscript_runner(data: bytes, device: str | torch.device = "cpu") -> Callable[[Tensor], Tensor]:
    """Load TorchScript bytes onto ``device``; returns ``x -> embeddings`` (no gradients)."""
    with _quiet_exporters():
        module = torch.jit.load(io.BytesIO(data), map_location=device).eval()

    def run(x: Tensor) -> Tensor:
        with torch.no_grad():
            return module(x)
    return run


def onnx_runner(data: bytes, providers: list[str] | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """An onnxruntime session over ONNX bytes; returns ``x (float32 ndarray) -> embeddings ndarray``."""
    import onnxruntime
    session = onnxruntime.InferenceSession(data, providers=providers or ["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(x: np.ndarray) -> np.ndarray:
        return session.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})[0]
    return run


def _onnxruntime_available() -> bool:
    """True when onnxruntime can be imported."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def verify_export(embedder: Embedder, data: bytes, fmt: str, shape: tuple[int, int] = CHECK_SHAPE) -> float | None:
    """Max |exported - eager| on a random ``[n, s, C, 64, 44]`` of ``shape``; RuntimeError beyond ATOL/RTOL.

    Returns None for ONNX when onnxruntime is not installed (nothing can run the file here).
    """
    check_format(fmt)
    if fmt == "onnx" and not _onnxruntime_available():
        log.warning("onnxruntime is not installed: the ONNX file was not checked against the eager model")
        return None
    x = random_input(embedder.in_channels, *shape, seed=1)
    with torch.no_grad():
        expected = embedder.eval()(x).numpy()
    got = torchscript_runner(data)(x).numpy() if fmt == "torchscript" else onnx_runner(data)(x.numpy())
    if got.shape != expected.shape or not np.allclose(got, expected, atol=ATOL, rtol=RTOL):
        diff = float(np.abs(got - expected).max()) if got.shape == expected.shape else float("inf")
        raise RuntimeError(f"the {fmt} export differs from the eager model on input {tuple(x.shape)}: "
                           f"output {got.shape} vs {expected.shape}, max abs diff {diff:.3g}")
    return float(np.abs(got - expected).max())


def export_embedder(embedder: Embedder, fmt: str, out: str, verify: bool = True) -> ExportResult:
    """Export ``embedder`` as ``fmt``, check it against the eager model, write it atomically to ``out`` (path/URI)."""
    data = export_bytes(embedder, fmt)
    diff = verify_export(embedder, data, fmt) if verify else None
    loc = fs.resolve(out)
    fs.write_bytes_atomic(loc, data)
    with torch.no_grad():
        _, embed_dim, parts = embedder(random_input(embedder.in_channels, 1, 1)).shape
    return ExportResult(uri=loc.uri, format=fmt, size_bytes=len(data), in_channels=embedder.in_channels,
                        embed_dim=int(embed_dim), parts=int(parts), max_abs_diff=diff)
