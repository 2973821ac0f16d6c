"""Time the exported embedder (`ray-gait export`) against the eager model: ms per batch, fp32, eval mode.

    python benchmarks/export_speed.py                                # CPU: synth widths, 1x30 and 8x30 frames
    python benchmarks/export_speed.py --device cuda --widths seed   # on a GPU: the paper's widths
    python benchmarks/export_speed.py --shapes 1x60,32x30 --iters 20

For each model and input shape ``NxS`` ([N, S, C, 64, 44]): the eager model, the TorchScript file
(`torch.jit.load` onto the device) and the ONNX file under onnxruntime (CPUExecutionProvider on the CPU;
CUDAExecutionProvider with inputs and outputs bound on the GPU, when onnxruntime has it). Each figure
is the median of ``--iters`` calls after ``--warmup``; the largest difference from the eager output is
printed beside it. Random weights: the timing does not depend on them.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ray_gait.models import build_model  # noqa: E402
from ray_gait.models.export import (  # noqa: E402
    Embedder,
    export_bytes,
    random_input,
    torchscript_runner,
)
from ray_gait.config import CONFIG_DIR, load_train_config  # noqa: E402

if TYPE_CHECKING:
    import onnxruntime

CONFIGS = {("skeletongait", "synth"): "skeletongait_synth.yaml",
           ("skeletongait", "seed"): "skeletongait_Gait3D.yaml",
           ("skeletongait++", "synth"): "skeletongait++_synth.yaml",
           ("skeletongait++", "seed"): "skeletongait++_Gait3D.yaml"}


def parse_shapes(text: str) -> list[tuple[int, int]]:
    """``"1x30,8x30"`` -> ``[(1, 30), (8, 30)]`` (batch x frames)."""
    try:
        shapes = [tuple(int(v) for v in item.split("x")) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shapes takes NxS[,NxS...], got {text!r}") from None
    if not shapes or any(len(s) != 2 or min(s) < 1 for s in shapes):
        raise argparse.ArgumentTypeError(f"--shapes takes NxS[,NxS...] with N, S >= 1, got {text!r}")
    return [(n, s) for n, s in shapes]


def interleaved_median_ms(calls: dict[str, Callable[[], object]], warmup: int, iters: int,
                          sync: Callable[[], None]) -> dict[str, float]:
    """Median wall time in ms of each call, the calls taking turns (so that a busy machine slows each alike)."""
    for _ in range(warmup):
        for call in calls.values():
            call()
    sync()
    times: dict[str, list[float]] = {key: [] for key in calls}
    for _ in range(iters):
        for key, call in calls.items():
            start = time.perf_counter()
            call()
            sync()
            times[key].append((time.perf_counter() - start) * 1e3)
    return {key: statistics.median(values) for key, values in times.items()}


def onnx_session(data: bytes, device: torch.device) -> onnxruntime.InferenceSession | str:
    """An onnxruntime session for ``device``, or the reason there is none."""
    try:
        import onnxruntime as ort
    except ImportError:
        return "onnxruntime not installed"
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    if device.type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            return f"onnxruntime {ort.__version__} has no CUDAExecutionProvider (install onnxruntime-gpu)"
        providers = [("CUDAExecutionProvider", {"device_id": device.index or 0})]
    else:
        providers = ["CPUExecutionProvider"]
    try:
        session = ort.InferenceSession(data, options, providers=providers)
    except Exception as exc:  # noqa: BLE001 - a provider that cannot start is reported, not fatal
        return f"session failed: {' '.join(str(exc).split())[:200]}"
    if session.get_providers()[0] != (providers[0] if isinstance(providers[0], str) else providers[0][0]):
        return f"onnxruntime fell back to {session.get_providers()}"
    return session


def onnx_export_session(embedder: Embedder, device: torch.device) -> onnxruntime.InferenceSession | str:
    """Export ``embedder`` to ONNX (timed) and open it on ``device``, or the reason that failed."""
    start = time.perf_counter()
    try:
        data = export_bytes(embedder, "onnx")
    except RuntimeError as exc:
        return f"export failed: {' '.join(str(exc).split())[:200]}"
    print(f"  export ONNX {time.perf_counter() - start:.1f} s ({len(data) / 1e6:.1f} MB)", flush=True)
    return onnx_session(data, device)


def onnx_call(session: onnxruntime.InferenceSession,
              x: torch.Tensor) -> tuple[Callable[[], object], Callable[[], np.ndarray]]:
    """``(run, result)`` for ``x``: numpy in and out on the CPU; inputs and outputs bound on the GPU."""
    name, out_name = session.get_inputs()[0].name, session.get_outputs()[0].name
    if x.device.type != "cuda":
        feed = {name: x.numpy()}
        return (lambda: session.run(None, feed)), (lambda: session.run(None, feed)[0])
    x = x.contiguous()
    index = x.device.index or 0
    binding = session.io_binding()
    binding.bind_input(name, "cuda", index, np.float32, tuple(x.shape), x.data_ptr())
    binding.bind_output(out_name, "cuda", index)
    return (lambda: session.run_with_iobinding(binding)), (lambda: binding.copy_outputs_to_cpu()[0])


def bench_model(name: str, widths: str, shapes: list[tuple[int, int]], device: torch.device,
                args: argparse.Namespace) -> list[dict[str, object]]:
    """Rows (model, shape, ms per batch and max diff of each runtime) for one model."""
    cfg = load_train_config(os.path.join(CONFIG_DIR, "skeletongait", CONFIGS[(name, widths)]))
    torch.manual_seed(0)
    embedder = Embedder(build_model(cfg.model_cfg)).eval()
    start = time.perf_counter()
    script = export_bytes(embedder, "torchscript")
    script_s = time.perf_counter() - start
    print(f"{name} ({widths} widths): export TorchScript {script_s:.1f} s ({len(script) / 1e6:.1f} MB)",
          flush=True)
    session = onnx_export_session(embedder, device) if not args.skip_onnx else "skipped (--skip-onnx)"
    if isinstance(session, str):
        print(f"  ONNX: {session}")
    embedder.to(device)
    traced = torchscript_runner(script, device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    rows = []
    for n, s in shapes:
        x = random_input(embedder.in_channels, n, s).to(device)
        calls: dict[str, Callable[[], object]] = {"eager": lambda x=x: embedder(x),
                                                  "torchscript": lambda x=x: traced(x)}
        if not isinstance(session, str):
            calls["onnx"], onnx_result = onnx_call(session, x)
        with torch.no_grad():
            expected = embedder(x).float().cpu().numpy()
            row: dict[str, object] = {"model": name, "shape": f"{n}x{s}",
                                      **interleaved_median_ms(calls, args.warmup, args.iters, sync)}
        row["torchscript_diff"] = float(np.abs(traced(x).cpu().numpy() - expected).max())
        if "onnx" in calls:
            row["onnx_diff"] = float(np.abs(onnx_result() - expected).max())
        print(format_row(row), flush=True)
        rows.append(row)
    return rows


def format_row(row: dict[str, object]) -> str:
    """One table line: ms per batch of each runtime, its ratio to eager and its max diff."""
    eager = float(row["eager"])
    text = f"  {row['model']:<15} {row['shape']:>6}  eager {eager:9.2f} ms"
    for key in ("torchscript", "onnx"):
        if key in row:
            ms = float(row[key])
            text += f"  | {key} {ms:9.2f} ms (x{eager / ms:4.2f}, diff {float(row[key + '_diff']):.1e})"
    return text


def main() -> None:
    """Parse the flags and time every model."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--widths", choices=["synth", "seed"], default=None,
                        help="synth: the CPU configs (16-128); seed: the paper's (64-512); default seed on CUDA")
    parser.add_argument("--models", default="skeletongait,skeletongait++")
    parser.add_argument("--shapes", type=parse_shapes, default=None,
                        help="batch x frames, comma-separated (default 1x30,8x30; 1x60,32x30 on CUDA)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (torch and onnxruntime)")
    parser.add_argument("--skip-onnx", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    widths = args.widths or ("seed" if device.type == "cuda" else "synth")
    shapes = args.shapes or ([(1, 60), (32, 30)] if device.type == "cuda" else [(1, 30), (8, 30)])
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"export_speed: torch {torch.__version__}, {name}, fp32, median of {args.iters} after {args.warmup}")
    for model in args.models.split(","):
        bench_model(model.strip(), widths, shapes, device, args)


if __name__ == "__main__":
    main()
