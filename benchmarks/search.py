"""Time and peak RSS of `ray-gait search` over a large gallery of random embeddings.

Writes a gallery of N random sequences and P probes as embeddings data sets (the format `ray-gait embed`
writes: Parquet parts of `--part-rows` rows, E x p float32 each), then runs `ray-gait search` in a child
process, as a user would, and reports its wall time and peak RSS, next to the peak RSS of a child that
only imports the search module (the floor).  `--sizes` runs several gallery sizes to show that the peak
does not grow with the gallery.

    python benchmarks/search.py                           # 100,000 x (64 x 16) gallery, 1,000 probes, top-5
    python benchmarks/search.py --sizes 25000,100000      # the same, and a gallery 4x smaller
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ray_gait.io import fs  # noqa: E402
from ray_gait.io.embeddings import part_name, write_part  # noqa: E402


def write_random_set(root: Path, n: int, dim: int, parts: int, part_rows: int, seed: int) -> float:
    """An embeddings data set of n random sequences, written part by part; returns its size in MB."""
    rng = np.random.default_rng(seed)
    loc = fs.resolve(str(root))
    for shard, start in enumerate(range(0, n, part_rows)):
        stop = min(n, start + part_rows)
        emb = rng.standard_normal((stop - start, dim, parts), dtype=np.float32)
        keys = [(f"{i // 10:06d}", f"t{i % 10}", "000", f"s{i:07d}") for i in range(start, stop)]
        write_part(loc.join(part_name(shard)), keys, list(emb))
    return sum(p.stat().st_size for p in root.iterdir()) / 1e6


def peak_rss_of(command: list[str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MiB) and stdout of a command, run below a wrapper that reads RUSAGE_CHILDREN."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--child", json.dumps(command)], capture_output=True, text=True,
                          cwd=ROOT, check=False)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip()[-2000:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return seconds, report["peak_rss_mib"], report["stdout"]


def child(command: list[str]) -> int:
    """Run `command`, then print its peak RSS (MiB) and stdout as one JSON line (RUSAGE_CHILDREN of this process)."""
    import resource
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)
    if done.returncode:
        sys.stderr.write(done.stderr)
        return done.returncode
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"peak_rss_mib": peak, "stdout": done.stdout}))
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000", help="gallery sizes, comma-separated (default 100000)")
    parser.add_argument("--probes", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=64, help="E (default 64, as the synth configs)")
    parser.add_argument("--parts", type=int, default=16, help="p (default 16)")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--metric", choices=("euc", "cos"), default="euc")
    parser.add_argument("--chunk-rows", type=int, default=1024)
    parser.add_argument("--part-rows", type=int, default=4096, help="rows per Parquet part of the sets")
    parser.add_argument("--workdir", default=None, help="where the sets go (default: a temporary folder)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Write the sets, run the searches, print one line per gallery size."""
    args = parse_args(argv)
    if args.child is not None:
        return child(json.loads(args.child))
    work = Path(args.workdir or tempfile.mkdtemp(prefix="search_bench_"))
    probe = work / "probe"
    write_random_set(probe, args.probes, args.dim, args.parts, args.part_rows, seed=1)
    _, floor, _ = peak_rss_of([sys.executable, "-c", "import ray_gait.evaluation.search, ray_gait.cli"])
    print(f"E x p = {args.dim} x {args.parts} float32 ({args.dim * args.parts * 4} B a sequence), {args.probes} "
          f"probes, top-{args.top_k}, {args.metric}, chunks of {args.chunk_rows} rows; import floor {floor:.0f} MiB RSS")
    for n in (int(v) for v in args.sizes.split(",")):
        gallery = work / f"gallery-{n}"
        started = time.perf_counter()
        size_mb = write_random_set(gallery, n, args.dim, args.parts, args.part_rows, seed=2)
        written = time.perf_counter() - started
        command = [sys.executable, "-m", "ray_gait.cli", "-q", "search", "--gallery", str(gallery), "--probe",
                   str(probe), "--top-k", str(args.top_k), "--metric", args.metric, "--chunk-rows",
                   str(args.chunk_rows), "--out", str(work / f"matches-{n}.csv"), "--show", "0"]
        seconds, peak, out = peak_rss_of(command)
        summary = out.strip().splitlines()[-1]
        print(f"gallery {n:,} ({size_mb:,.0f} MB on disk, written in {written:.1f} s): search {seconds:.1f} s "
              f"wall, peak RSS {peak:.0f} MiB ({peak - floor:.0f} MiB above the import floor); {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
