"""Training curves (loss, accuracy, lr) from a run's TensorBoard events, as PNG files.

    python benchmarks/plot_training.py RUN_DIR [--out DIR]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ray_gait.evaluation.plots import lines_figure, write_figure  # noqa: E402
from ray_gait.training.events import scalar_series  # noqa: E402

PANELS = {"loss": ["train/loss", "triplet/loss", "softmax/loss"], "accuracy": ["softmax/accuracy"]}


def main() -> None:
    """Write loss.png and accuracy.png next to the run (or into --out)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    events = sorted(Path(args.run_dir, "tensorboard").glob("events.out.tfevents.*"))
    if not events:
        raise SystemExit(f"no TensorBoard events under {args.run_dir}/tensorboard")
    out = Path(args.out or args.run_dir)
    out.mkdir(parents=True, exist_ok=True)
    for panel, tags in PANELS.items():
        curves = {}
        for tag in tags:
            series = scalar_series(events, tag)
            if series:
                curves[tag] = ([s for s, _ in series], [v for _, v in series])
                print(f"{tag}: first {series[0][1]:.4f} at {series[0][0]}, last {series[-1][1]:.4f} at {series[-1][0]}")
        if curves:
            path = out / f"{panel}.png"
            write_figure(str(path), lines_figure(curves, f"{Path(args.run_dir).name}: {panel}", "iteration", panel))
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
