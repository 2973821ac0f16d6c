"""Time one training step (forward + backward + SGD) of SkeletonGait and SkeletonGait++.

    python benchmarks/model_step.py                                  # seed widths, 32x4 x 30 frames
    python benchmarks/model_step.py --widths tiny --batch 4x2 --frames 8 --steps 3
    python benchmarks/model_step.py --device cuda --amp
    python benchmarks/model_step.py --opengait /path/to/OpenGait --opengait-site /path/with/einops

Prints ms/step (median over ``--steps`` after ``--warmup``) and peak memory (CUDA: peak allocated
during the warm-up steps of that model; CPU: the peak resident set size of the whole process so
far, so only the first model's figure is its own). With ``--opengait``, OpenGait's own network
classes (imported from that checkout, with stand-ins for what the networks do not use: BaseModel's
training machinery, torchvision.ops, matplotlib) run the same steps on the same weights and inputs,
alternating step by step with ours, and the ratio OpenGait / ray_gait of the medians is printed.

The loss is cross-entropy on the BNNeck logits (scale 16, label smoothing 0.1) plus a batch-hard
triplet loss (margin 0.2) on the FC embeddings, averaged over parts; the optimizer is the seed's
SGD (lr 0.1, momentum 0.9, weight decay 5e-4). With ``--amp``: float16 autocast and a GradScaler
on CUDA (OpenGait's ``enable_float16``), bfloat16 autocast on the CPU.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import statistics
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ray_gait.models import build_model  # noqa: E402

WIDTHS = {
    "seed": {  # OpenGait's configs/skeletongait/*_Gait3D.yaml
        "DeepGaitV2": {"model": "DeepGaitV2",
                       "Backbone": {"in_channels": 2, "mode": "p3d", "layers": [1, 4, 4, 1],
                                    "channels": [64, 128, 256, 512]},
                       "SeparateBNNecks": {"class_num": 3000}},
        "SkeletonGaitPP": {"model": "SkeletonGaitPP", "Backbone": {"in_channels": 3, "blocks": [1, 4, 4, 1], "C": 2},
                           "SeparateBNNecks": {"class_num": 3000}},
    },
    "tiny": {
        "DeepGaitV2": {"model": "DeepGaitV2",
                       "Backbone": {"in_channels": 2, "mode": "p3d", "layers": [1, 1, 1, 1],
                                    "channels": [16, 32, 64, 128]},
                       "SeparateBNNecks": {"class_num": 100}},
        "SkeletonGaitPP": {"model": "SkeletonGaitPP", "Backbone": {"in_channels": 3, "blocks": [1, 1, 1, 1], "C": 1},
                           "SeparateBNNecks": {"class_num": 100}},
    },
}
CHANNELS = {"DeepGaitV2": 2, "SkeletonGaitPP": 3}


def parse_batch(text: str) -> tuple[int, int]:
    """``"32x4"`` -> (32 identities, 4 sequences each)."""
    try:
        p, k = (int(v) for v in text.lower().split("x"))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--batch takes PxK, e.g. 32x4, got {text!r}") from err
    if p < 2 or k < 1:
        raise argparse.ArgumentTypeError(f"--batch needs P >= 2 and K >= 1, got {text!r}")
    return p, k


def triplet_loss(embeddings: Tensor, labels: Tensor, margin: float = 0.2) -> Tensor:
    """Batch-hard triplet loss per part, averaged: embeddings ``[n, c, p]``, labels ``[n]``."""
    feats = embeddings.float().permute(2, 0, 1)  # [p, n, c]
    dist = torch.cdist(feats, feats)  # [p, n, n]
    same = labels[:, None] == labels[None, :]
    hardest_pos = dist.masked_fill(~same, float("-inf")).amax(-1)
    hardest_neg = dist.masked_fill(same, float("inf")).amin(-1)
    return F.relu(hardest_pos - hardest_neg + margin).mean()


def step_loss(embeddings: Tensor, logits: Tensor, labels: Tensor) -> Tensor:
    """Triplet on the FC embeddings + scaled, smoothed cross-entropy on the logits ``[n, classes, p]``."""
    parts = logits.shape[-1]
    ce = F.cross_entropy(16 * logits.float(), labels[:, None].expand(-1, parts), label_smoothing=0.1)
    return triplet_loss(embeddings, labels) + ce


def load_opengait(root: Path, site: str | None) -> dict[str, type]:
    """Import OpenGait's DeepGaitV2 and SkeletonGaitPP classes from a checkout, unmodified."""
    if site and site not in sys.path:
        sys.path.append(site)
    src = root / "opengait"

    def load(name: str, path: Path, package: str | None = None) -> types.ModuleType:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        if package:
            module.__package__ = package
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module

    def stub(name: str, **attrs: object) -> None:
        if name not in sys.modules:
            module = types.ModuleType(name)
            module.__dict__.update(attrs)
            module.__path__ = []
            sys.modules[name] = module

    stub("torchvision")
    stub("torchvision.ops", RoIAlign=object)
    stub("matplotlib")
    stub("matplotlib.pyplot")
    if "utils" not in sys.modules:
        load("utils", src / "utils" / "common.py")

    class BaseModel(nn.Module):
        """Stand-in for OpenGait's BaseModel: build_network + the same parameter initialization."""

        def __init__(self, model_cfg: dict) -> None:
            super().__init__()
            self.build_network(model_cfg)
            for m in self.modules():
                if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
                    nn.init.xavier_uniform_(m.weight)
                elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
                    nn.init.normal_(m.weight, 1.0, 0.02)
                    nn.init.zeros_(m.bias)

    stub("og_bench")
    stub("og_bench.models")
    stub("og_bench.base_model", BaseModel=BaseModel)
    load("og_bench.modules", src / "modeling" / "modules.py", "og_bench")
    dgv2 = load("og_bench.models.deepgaitv2", src / "modeling" / "models" / "deepgaitv2.py", "og_bench.models")
    pp = load("og_bench.models.skeletongait_pp", src / "modeling" / "models" / "skeletongait++.py", "og_bench.models")
    return {"DeepGaitV2": dgv2.DeepGaitV2, "SkeletonGaitPP": pp.SkeletonGaitPP}


def opengait_forward(net: nn.Module) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
    """Call an OpenGait network as its trainer does; return (embeddings, logits)."""
    def forward(x: Tensor) -> tuple[Tensor, Tensor]:
        out = net(([x], None, None, None, None))["training_feat"]
        return out["triplet"]["embeddings"], out["softmax"]["logits"]
    return forward


def ours_forward(model: nn.Module) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
    """Call a ray_gait model; return (embeddings, logits)."""
    def forward(x: Tensor) -> tuple[Tensor, Tensor]:
        out = model(x)
        return out.embeddings, out.logits
    return forward


class StepRunner:
    """One model, its optimizer and AMP state; ``step()`` runs and times one training step."""

    def __init__(self, model: nn.Module, forward: Callable, x: Tensor, labels: Tensor, amp: bool) -> None:
        self.model, self.forward, self.x, self.labels, self.amp = model, forward, x, labels, amp
        self.device = x.device
        self.opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp and self.device.type == "cuda")
        self.amp_dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        self.times: list[float] = []
        self.first_loss: float | None = None
        model.train()

    def step(self, record: bool) -> None:
        """Forward + backward + SGD step; append its wall time in ms when ``record``."""
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
            embeddings, logits = self.forward(self.x)
        loss = step_loss(embeddings, logits, self.labels)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        if record:
            self.times.append((time.perf_counter() - start) * 1000)
        if self.first_loss is None:
            self.first_loss = float(loss.detach())


def peak_memory(device: torch.device) -> str:
    """CUDA: peak allocated since the last reset; CPU: the process's peak RSS so far."""
    if device.type == "cuda":
        return f"CUDA peak allocated {torch.cuda.max_memory_allocated(device) / 2**20:8.0f} MiB"
    return f"process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:8.0f} MiB"


def run_pair(runners: dict[str, StepRunner], args: argparse.Namespace) -> dict[str, str]:
    """Step the runners in turn (alternating, so load changes hit both alike); return peak memory each."""
    peaks = {}
    for name, runner in runners.items():  # warm-up, and the peak memory of each alone
        if runner.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(runner.device)
        for _ in range(args.warmup):
            runner.step(record=False)
        peaks[name] = peak_memory(runner.device)
    for _ in range(args.steps):
        for runner in runners.values():
            runner.step(record=True)
    return peaks


def main(argv: list[str] | None = None) -> int:
    """Parse flags, run the benchmark, print one line per model (and the OpenGait ratio)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=["both", "DeepGaitV2", "SkeletonGaitPP"], default="both")
    ap.add_argument("--batch", type=parse_batch, default=(32, 4), help="P x K sequences (default 32x4)")
    ap.add_argument("--frames", type=int, default=30, help="frames per sequence (default 30)")
    ap.add_argument("--height", type=int, default=64)
    ap.add_argument("--width", type=int, default=44)
    ap.add_argument("--widths", choices=sorted(WIDTHS), default="seed")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--amp", action="store_true", help="fp16 autocast + GradScaler on CUDA, bf16 on CPU")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first; peak memory is read after them")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--opengait", type=Path, default=None, help="OpenGait checkout to compare against")
    ap.add_argument("--opengait-site", default=os.environ.get("OPENGAIT_SITE"),
                    help="extra import path for OpenGait's dependencies (einops)")
    args = ap.parse_args(argv)
    if min(args.steps, args.warmup, args.frames) < 1:
        ap.error("--steps, --warmup and --frames must be >= 1 (peak memory is read after the warm-up)")
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    opengait = load_opengait(args.opengait, args.opengait_site) if args.opengait else None
    p, k = args.batch
    names = ["DeepGaitV2", "SkeletonGaitPP"] if args.model == "both" else [args.model]
    print(f"device={args.device} amp={args.amp} batch={p}x{k} frames={args.frames} "
          f"size={args.height}x{args.width} widths={args.widths} threads={torch.get_num_threads()} "
          f"steps={args.steps} (+{args.warmup} warm-up)")
    for name in names:
        cfg = WIDTHS[args.widths][name]
        gen = torch.Generator().manual_seed(0)
        x = torch.rand(p * k, args.frames, CHANNELS[name], args.height, args.width, generator=gen).to(device)
        labels = torch.arange(p).repeat_interleave(k).to(device)
        torch.manual_seed(0)
        model = build_model(cfg).to(device)
        runners = {"ray_gait": StepRunner(model, ours_forward(model), x, labels, args.amp)}
        if opengait is not None:
            net = opengait[name](cfg).to(device)
            net.load_state_dict(model.state_dict(), strict=True)
            runners["OpenGait"] = StepRunner(net, opengait_forward(net), x, labels, args.amp)
        peaks = run_pair(runners, args)
        label = "SkeletonGait (DeepGaitV2)" if name == "DeepGaitV2" else "SkeletonGait++ (SkeletonGaitPP)"
        ms = {key: statistics.median(r.times) for key, r in runners.items()}
        for key, runner in runners.items():
            line = (f"{label:32s} {key:>8s}: {ms[key]:9.1f} ms/step  {peaks[key]}"
                    f"  first loss {runner.first_loss:.4f}")
            if key == "OpenGait":
                line += f"  ratio OpenGait/ray_gait {ms[key] / ms['ray_gait']:.2f}"
            print(line)
            label = ""
        del runners, model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
