"""Peak memory (PSS of the whole process tree) of `ray-gait train` and `ray-gait test` at two data set sizes.

    python benchmarks/data_memory.py [--work /tmp/ray_gait_data_memory] [--ids 12,48] [--views 0,30,60,90,120,150]
        [--frames 40:60] [--iters 20] [--workers 2] [--sources maps,poses] [--commands train,test]
        [--set KEY=VALUE ...]

Builds (or reuses, under --work) one synthetic data set per `--ids` value (`ray-gait synth`, half the
ids in TRAIN_SET, 8 sequences per id and view: 12 ids x 6 views = 576 sequences, 48 ids = 2,304),
renders it (`ray-gait heatmap`) and pairs it with its silhouettes (`ray-gait link`).  Then, for every
size and input source, it runs under `peak-pss` (the peak PSS of the command and all its descendants:
the driver, the local Ray it starts, raylet, GCS, workers, object store pages):

- `ray-gait train` of SkeletonGait++ (`skeletongait++_synth.yaml`, `--workers` Ray Train workers,
  `--iters` iterations, one checkpoint at the end, class_num = training ids, with_test false), with a
  fresh `ray_cfg.storage_path`;
- `ray-gait test` of the checkpoint it wrote (`--workers` embedding actors), fresh storage and output.

Sources: `maps` = the paired Parquet data set (steps 1 and 2 done); `poses` = straight from the pose
pkl tree (`data_cfg.dataset_root` = synth's pose/, `data_cfg.silhouette_root` = its sil/: maps drawn on
the fly).  Each command starts its own local Ray (RAY_ADDRESS is removed from its environment).  Prints
peak PSS (MiB) per command, source and size, and the growth from the first size to the last.  The logs
of every command are kept in --work/logs, the figures in --work/results.json.
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "skeletongait" / "skeletongait++_synth.yaml"
PEAK_PSS = ROOT.parent / "shared" / "tools" / "peak-pss"
GOAL_MIB = 256
PEAK_LINE = re.compile(r"peak PSS of the process tree: (\d+) MiB \(exit (-?\d+)\)")
WORKER_RSS = re.compile(r"'worker/peak_rss_mib': ([\d.]+)")
WORKER_CACHE = re.compile(r"'data/peak_cached_mib': ([\d.]+)")
SEQUENCES_PER_ID_VIEW = 8   # nm-01..04, bg-01..02, cl-01..02


def code_fingerprint() -> str:
    """sha1 (10 hex digits) of every ray_gait/*.py: which code a figure was measured with (the tree is not committed)."""
    digest = hashlib.sha1()
    for path in sorted((ROOT / "ray_gait").rglob("*.py")):
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:10]


def environment() -> dict[str, str]:
    """The children's environment: a local Ray each, on loopback."""
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    return env


def ray_gait() -> list[str]:
    """The `ray-gait` entry point of this interpreter's environment."""
    exe = Path(sys.executable).with_name("ray-gait")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "ray_gait.cli"]


def run_logged(cmd: list[str], log_path: Path) -> tuple[int, float, str]:
    """Run `cmd`, output to `log_path`; (exit status, seconds, output)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=environment(), cwd=ROOT)
    seconds = time.perf_counter() - started
    return code, seconds, log_path.read_text(encoding="utf-8", errors="replace")


def prepare(work: Path, ids: int, args: argparse.Namespace) -> dict[str, str | int]:
    """Synthetic data, heatmaps and the paired set of one size (reused when already complete)."""
    base = work / f"ids{ids}"
    data, maps, paired = base / "data", base / "maps", base / "paired"
    logs = work / "logs"
    marker = base / "prepared.json"
    if marker.exists():
        info = json.loads(marker.read_text())
        if info.get("views") == args.views and info.get("frames") == args.frames:
            print(f"reusing {base} ({info['sequences']} sequences)", flush=True)
            return info
        shutil.rmtree(base)
    base.mkdir(parents=True, exist_ok=True)
    steps = [
        ("synth", [*ray_gait(), "synth", "--out", str(data), "--ids", str(ids), "--train-ids", str(ids // 2),
                   "--views", args.views, "--frames", args.frames, "--no-preview"]),
        ("heatmap", [*ray_gait(), "heatmap", "--pose_data_path", str(data / "pose"), "--save_root", str(maps),
                     "--dataset_name", "synth"]),
    ]
    seconds = {}
    for name, cmd in steps:
        print(f"[{ids} ids] {name} ...", flush=True)
        code, took, out = run_logged(cmd, logs / f"prepare-ids{ids}-{name}.log")
        if code:
            raise SystemExit(f"{name} failed (exit {code}); see {logs / f'prepare-ids{ids}-{name}.log'}:\n"
                             + out[-3000:])
        seconds[name] = took
    found = [p for p in glob.glob(str(maps / "synth_sigma_*")) if os.path.isdir(p)]
    if len(found) != 1:
        raise SystemExit(f"expected one heatmap data set under {maps}, found {found}")
    print(f"[{ids} ids] link ...", flush=True)
    cmd = [*ray_gait(), "link", "--heatmap_data_path", found[0], "--silhouette_data_path", str(data / "sil"),
           "--output_path", str(paired)]
    code, took, out = run_logged(cmd, logs / f"prepare-ids{ids}-link.log")
    if code:
        raise SystemExit(f"link failed (exit {code}):\n" + out[-3000:])
    seconds["link"] = took
    sequences = len(glob.glob(str(data / "pose" / "*" / "*" / "*" / "*.pkl")))
    partition = json.loads((data / "partition.json").read_text())
    info = {"ids": ids, "train_ids": len(partition["TRAIN_SET"]), "sequences": sequences,
            "views": args.views, "frames": args.frames, "data": str(data), "maps": found[0],
            "paired": str(paired), "seconds": seconds}
    marker.write_text(json.dumps(info, indent=1))
    print(f"[{ids} ids] {sequences} sequences ready ({', '.join(f'{k} {v:.0f} s' for k, v in seconds.items())})",
          flush=True)
    return info


def overrides(info: dict, source: str, storage: Path, args: argparse.Namespace) -> list[str]:
    """The --set arguments of one run."""
    data = Path(str(info["data"]))
    values = {"data_cfg.dataset_partition": str(data / "partition.json"),
              "data_cfg.dataset_protocol": str(data / "protocol.json"),
              "model_cfg.SeparateBNNecks.class_num": str(info["train_ids"]),
              "trainer_cfg.total_iter": str(args.iters), "trainer_cfg.save_iter": str(args.iters),
              "trainer_cfg.log_iter": str(args.iters), "trainer_cfg.with_test": "false",
              "evaluator_cfg.restore_hint": str(args.iters),
              "ray_cfg.num_workers": str(args.workers), "ray_cfg.storage_path": str(storage)}
    if source == "maps":
        values["data_cfg.dataset_root"] = str(info["paired"])
    else:
        values["data_cfg.dataset_root"] = str(data / "pose")
        values["data_cfg.silhouette_root"] = str(data / "sil")
    out = []
    for key, value in values.items():
        out += ["--set", f"{key}={value}"]
    for extra in args.set:
        out += ["--set", extra]
    return out


def measured(cmd: list[str], log_path: Path, retries: int = 1) -> dict:
    """Run `cmd` under peak-pss: peak MiB, exit status, seconds (a failed run is retried `retries` times)."""
    code, seconds, out = run_logged([str(args_peak_pss), *cmd], log_path)
    if code and retries > 0:
        print(f"    exit {code} (see {log_path}): retrying", flush=True)
        retry = log_path.with_name(log_path.stem + "-retry.log")
        result = measured([c.replace(log_path.stem, retry.stem) for c in cmd], retry, retries - 1)
        return dict(result, failed_before=str(log_path))
    match = PEAK_LINE.search(out)
    rss = [float(v) for v in WORKER_RSS.findall(out)]
    cached = [float(v) for v in WORKER_CACHE.findall(out)]
    return {"peak_mib": int(match.group(1)) if match else None, "exit": code, "seconds": seconds,
            "log": str(log_path), "worker_peak_rss_mib": max(rss) if rss else None,
            "worker_peak_cached_mib": max(cached) if cached else None}


def latest_checkpoint(run_dir: Path) -> str | None:
    """The newest checkpoint folder under a run folder (ray_gait's state file)."""
    sys.path.insert(0, str(ROOT))
    from ray_gait.training.state import saved_checkpoints
    found = saved_checkpoints(str(run_dir))
    return found[-1][1] if found else None


def previous_checkpoint(work: Path, source: str, ids: int) -> str | None:
    """The checkpoint of the latest earlier training run of this source and size under --work, if any."""
    for run in sorted((work / "runs").glob(f"train-{source}-ids{ids}-*"), reverse=True):
        found = latest_checkpoint(run / "SkeletonGaitPP_synth")
        if found:
            return found
    return None


def run_pair(info: dict, source: str, work: Path, args: argparse.Namespace) -> dict[str, dict]:
    """Train, then test, one size from one source; each under peak-pss with its own storage.

    Without `train` in --commands the test reuses the checkpoint of an earlier run of the same source
    and size under --work (training one, unreported, when there is none)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    tag = f"{source}-ids{info['ids']}-{stamp}"
    logs = work / "logs"
    results: dict[str, dict] = {}
    train_storage = work / "runs" / f"train-{tag}"
    checkpoint = None if "train" in args.commands else previous_checkpoint(work, source, info["ids"])
    if "train" in args.commands or checkpoint is None:
        print(f"[{info['sequences']} sequences, {source}] train ...", flush=True)
        cmd = [*ray_gait(), "train", "--cfgs", str(CONFIG), *overrides(info, source, train_storage, args)]
        results["train"] = measured(cmd, logs / f"train-{tag}.log")
        print(f"    peak {results['train']['peak_mib']} MiB, exit {results['train']['exit']}, "
              f"{results['train']['seconds']:.0f} s", flush=True)
        if "failed_before" in results["train"]:
            train_storage = train_storage.with_name(train_storage.name + "-retry")
        checkpoint = latest_checkpoint(train_storage / "SkeletonGaitPP_synth")
    if "test" in args.commands:
        if checkpoint is None:
            print(f"    no checkpoint under {train_storage}: test skipped", flush=True)
            results["test"] = {"peak_mib": None, "exit": None, "seconds": 0.0, "log": ""}
        else:
            test_storage = work / "runs" / f"test-{tag}"
            print(f"[{info['sequences']} sequences, {source}] test ...", flush=True)
            cmd = [*ray_gait(), "test", "--cfgs", str(CONFIG), "--checkpoint", checkpoint,
                   "--out", str(test_storage / "test"), *overrides(info, source, test_storage, args)]
            results["test"] = measured(cmd, logs / f"test-{tag}.log")
            print(f"    peak {results['test']['peak_mib']} MiB, exit {results['test']['exit']}, "
                  f"{results['test']['seconds']:.0f} s", flush=True)
    if "train" not in args.commands:
        results.pop("train", None)
    return results


def median(values: list[float]) -> float:
    """The median of a non-empty list."""
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def print_table(sizes: list[dict], table: dict[tuple[str, str, int], list[dict]], args: argparse.Namespace) -> None:
    """One row per command and source: peak PSS per size (every run), the growth first -> last."""
    first, last = sizes[0], sizes[-1]
    factor = last["sequences"] / max(1, first["sequences"])
    heads = [f"{s['sequences']:,} seq (MiB)" for s in sizes]
    print()
    print(f"peak PSS of the process tree, SkeletonGait++ {args.workers} workers, {args.iters} iterations"
          f"{'; ' + ' '.join(args.set) if args.set else ''}; {time.strftime('%Y-%m-%d %H:%M')}, "
          f"{os.cpu_count()} cores")
    print(f"| command | source | {' | '.join(heads)} | growth {factor:.0f}x, medians (range) | "
          f"<= {GOAL_MIB} MiB | seconds |")
    print("| --- | --- |" + " ---: |" * len(sizes) + " ---: | --- | ---: |")
    extra: list[str] = []
    for command in args.commands:
        for source in args.sources:
            cells, secs, notes, good = [], [], [], {}
            for s in sizes:
                runs = table.get((command, source, s["ids"]), [])
                ok = [r for r in runs if not r["exit"] and r["peak_mib"]]
                good[s["ids"]] = [r["peak_mib"] for r in ok]
                failed = len(runs) - len(ok)
                cells.append((" / ".join(f"{r['peak_mib']:,}" for r in ok) or "-")
                             + (f" ({failed} failed)" if failed else ""))
                secs.append(" / ".join(f"{r['seconds']:.0f}" for r in runs) or "-")
                rss = [r["worker_peak_rss_mib"] for r in ok if r.get("worker_peak_rss_mib")]
                cache = [r["worker_peak_cached_mib"] for r in ok if r.get("worker_peak_cached_mib") is not None]
                if rss:
                    notes.append(f"{s['sequences']:,} sequences: worker peak RSS {min(rss):,.0f}-{max(rss):,.0f} MiB, "
                                 f"reader cache peak {min(cache):,.0f}-{max(cache):,.0f} MiB")
            a, b = good[first["ids"]], good[last["ids"]]
            if a and b:
                growth = median(b) - median(a)
                spread = f" ({min(b) - max(a):+,.0f} .. {max(b) - min(a):+,.0f})" if len(a) + len(b) > 2 else ""
                verdict = "yes" if growth <= GOAL_MIB else "NO"
                growth_cell = f"{growth:+,.0f}{spread}"
            else:
                growth_cell, verdict = "-", "-"
            print(f"| {command} | {source} | {' | '.join(cells)} | {growth_cell} | {verdict} | {'; '.join(secs)} |")
            extra.extend(f"  {command} {source}, {n}" for n in notes)
    if extra:
        print("as the training workers report it (largest rank):")
        print("\n".join(extra))


def main() -> None:
    """Prepare the data sets, run the commands, print the table."""
    global args_peak_pss
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("--work", type=Path, default=Path("/tmp/ray_gait_data_memory"),
                        help="work folder: data sets (reused), runs, logs, results.json")
    parser.add_argument("--ids", default="12,48", help="identities of each data set, comma-separated "
                        "(default 12,48: 576 and 2,304 sequences with 6 views)")
    parser.add_argument("--views", default="0,30,60,90,120,150", help="synth --views")
    parser.add_argument("--frames", default="40:60", help="synth --frames MIN:MAX")
    parser.add_argument("--iters", type=int, default=20, help="training iterations (one checkpoint at the end)")
    parser.add_argument("--workers", type=int, default=2, help="Ray Train workers and embedding actors")
    parser.add_argument("--sources", default="maps,poses", help="maps (paired Parquet), poses (on the fly)")
    parser.add_argument("--commands", default="train,test", help="train, test or both")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra config override for every run (repeatable)")
    parser.add_argument("--peak-pss", type=Path, default=PEAK_PSS, help="the peak-pss tool")
    parser.add_argument("--prepare-only", action="store_true", help="build the data sets and stop")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each command, size and source")
    parser.add_argument("--report", action="store_true",
                        help="run nothing: print the table of every run in --work/results.json "
                        "with the same --set")
    parser.add_argument("--code", default="", help="with --report: only runs of these code fingerprints "
                        "(comma-separated; printed by every run)")
    args = parser.parse_args()
    args.sources = [s for s in args.sources.split(",") if s]
    args.commands = [c for c in args.commands.split(",") if c]
    if set(args.sources) - {"maps", "poses"} or set(args.commands) - {"train", "test"}:
        parser.error("--sources takes maps,poses and --commands train,test")
    if not args.peak_pss.exists():
        parser.error(f"{args.peak_pss} not found (--peak-pss)")
    args_peak_pss = args.peak_pss.resolve()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    sizes = [prepare(work, int(n), args) for n in args.ids.split(",")]
    if args.prepare_only:
        return
    table: dict[tuple[str, str, int], list[dict]] = {}
    results_path = work / "results.json"
    saved = json.loads(results_path.read_text()) if results_path.exists() else []
    if args.report:
        for entry in saved:
            if entry.get("overrides", []) == args.set and (not args.code or entry.get("code") in args.code.split(",")):
                table.setdefault((entry["command"], entry["source"], entry["ids"]), []).append(entry)
        print_table(sizes, table, args)
        return
    code = code_fingerprint()
    print(f"ray_gait code {code}", flush=True)
    runs = [(source, info) for _ in range(args.repeat) for source in args.sources for info in sizes]
    for source, info in runs:
        for command, result in run_pair(info, source, work, args).items():
            table.setdefault((command, source, info["ids"]), []).append(result)
            saved.append({"command": command, "source": source, "ids": info["ids"],
                          "sequences": info["sequences"], "time": time.strftime("%Y-%m-%d %H:%M:%S"),
                          "overrides": args.set, "code": code, **result})
            results_path.write_text(json.dumps(saved, indent=1))
    print_table(sizes, table, args)


args_peak_pss = PEAK_PSS

if __name__ == "__main__":
    main()
