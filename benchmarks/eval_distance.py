"""Time an N x N probe/gallery evaluation with [N, 256, 16] float32 embeddings; check peak memory.

Runs ``ray_gait.evaluation.metrics``: ``distances`` (part-averaged euc or cos), the Rank-1 of every
probe (``topk_accuracy``) and, unless ``--skip-map``, ``rank_metrics`` (Rank-1/5/10, mAP, mINP).
Prints seconds per step and the process's peak RSS, and fails if the peak reaches ``--max-gib``.

    python benchmarks/eval_distance.py --n 5000
    python benchmarks/eval_distance.py            # N = 20,000: the output alone is 1.6 GB
"""
from __future__ import annotations

import argparse
import resource
import sys
import time

import numpy as np

from ray_gait.evaluation.metrics import DEFAULT_CHUNK_SIZE, distances, rank_metrics, topk_accuracy


def peak_rss_gib() -> float:
    """Peak resident set size of this process so far, in GiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def make_embeddings(n: int, labels: np.ndarray, centres: np.ndarray, noise: float,
                    rng: np.random.Generator, rows: int = 1024) -> np.ndarray:
    """Embeddings ``[n, c, p]`` float32: identity centre plus Gaussian noise, in row blocks."""
    out = np.empty((n,) + centres.shape[1:], dtype=np.float32)
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        block = rng.standard_normal((stop - start,) + centres.shape[1:], dtype=np.float32)
        block *= np.float32(noise)
        block += centres[labels[start:stop]]
        out[start:stop] = block
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="probes = gallery items (20000)")
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--parts", type=int, default=16)
    parser.add_argument("--ids", type=int, default=0, help="identities (default n // 4)")
    parser.add_argument("--noise", type=float, default=3.0,
                        help="noise std around the identity centres (std 1)")
    parser.add_argument("--metric", choices=("euc", "cos"), default="euc")
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE)
    parser.add_argument("--skip-map", action="store_true", help="time only distance + Rank-1")
    parser.add_argument("--max-gib", type=float, default=4.0, help="peak RSS limit (4 GiB)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return 0 if peak RSS stayed below the limit, 1 otherwise."""
    args = parse_args(argv)
    rng = np.random.default_rng(args.seed)
    ids = args.ids or max(1, args.n // 4)
    centres = rng.standard_normal((ids, args.channels, args.parts), dtype=np.float32)
    probe_labels = rng.integers(0, ids, args.n)
    gallery_labels = rng.integers(0, ids, args.n)
    probe = make_embeddings(args.n, probe_labels, centres, args.noise, rng)
    gallery = make_embeddings(args.n, gallery_labels, centres, args.noise, rng)
    del centres
    print(f"N={args.n} embeddings [{args.n}, {args.channels}, {args.parts}] float32, {ids} ids, "
          f"metric {args.metric}, chunk {args.chunk_size}; inputs ready, peak RSS "
          f"{peak_rss_gib():.2f} GiB", flush=True)

    t0 = time.perf_counter()
    dist = distances(probe, gallery, args.metric, chunk_size=args.chunk_size)
    t_dist = time.perf_counter() - t0
    print(f"distances:    {t_dist:8.1f} s   peak RSS {peak_rss_gib():.2f} GiB", flush=True)

    t0 = time.perf_counter()
    rank1 = topk_accuracy(dist, probe_labels, gallery_labels, (1,))["rank1"]
    t_rank1 = time.perf_counter() - t0
    print(f"rank-1:       {t_rank1:8.1f} s   peak RSS {peak_rss_gib():.2f} GiB   "
          f"Rank-1 {rank1:.2f} %", flush=True)
    print(f"distance + rank-1: {t_dist + t_rank1:.1f} s", flush=True)

    if not args.skip_map:
        t0 = time.perf_counter()
        res = rank_metrics(dist, probe_labels, gallery_labels)
        t_map = time.perf_counter() - t0
        print(f"rank_metrics: {t_map:8.1f} s   peak RSS {peak_rss_gib():.2f} GiB   "
              + ", ".join(f"{k} {v:.2f}" for k, v in res.items()), flush=True)

    peak = peak_rss_gib()
    print(f"peak RSS {peak:.2f} GiB (limit {args.max_gib} GiB)")
    if peak >= args.max_gib:
        print(f"FAIL: peak RSS {peak:.2f} GiB >= {args.max_gib} GiB", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
