"""Cost of reading pickles without unpickling them: `ray_gait.io.safe_pickle.loads_arrays` against
`pickle.loads` (the unsafe reference, for scale only) on a pose file, a silhouette file and a list of
per-frame arrays, and the time to refuse the attack corpus of tests/hostile.py.

    python benchmarks/safe_loader.py [--repeat 200]
"""
from __future__ import annotations

import argparse
import pickle
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from hostile import corpus  # noqa: E402

from ray_gait.io.safe_pickle import loads_arrays  # noqa: E402


def per_call(fn: Callable[[], object], repeat: int) -> float:
    """Best of three averages of `repeat` calls, in seconds."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeat):
            fn()
        best = min(best, (time.perf_counter() - start) / repeat)
    return best


def main() -> None:
    """Print one line per input: bytes, safe loader, pickle.loads."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    inputs = {
        "pose (100 x 17 x 3 float32)": rng.random((100, 17, 3)).astype(np.float32),
        "silhouette (300 x 64 x 64 uint8)": rng.integers(0, 255, (300, 64, 64), dtype=np.uint8),
        "list of 300 per-frame poses": [rng.random((17, 3)).astype(np.float32) for _ in range(300)],
    }
    print(f"{'input':36s} {'bytes':>10s} {'safe loader':>12s} {'pickle.loads':>13s}")
    for name, obj in inputs.items():
        data = pickle.dumps(obj, protocol=4)
        safe = per_call(lambda: loads_arrays(data), args.repeat)
        plain = per_call(lambda: pickle.loads(data), args.repeat)
        print(f"{name:36s} {len(data):10d} {safe * 1e6:9.1f} us {plain * 1e6:10.1f} us")
    print("refusing the attack corpus:")
    for name, data, _ in corpus():
        def refuse() -> None:
            try:
                loads_arrays(data)
            except ValueError:
                pass
        print(f"  {name:40s} {len(data):9d} B {per_call(refuse, 1) * 1e3:9.2f} ms")


if __name__ == "__main__":
    main()
