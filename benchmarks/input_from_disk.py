"""Training input read from disk: BatchMaker over a SequenceReader, against the training step it feeds.

    python benchmarks/input_from_disk.py [--work /tmp/ray_gait_data_memory] [--ids 48]
        [--sources maps,paired,poses,poses+sil] [--threads 1,2] [--batches 4] [--cpu-batches 16]
        [--cold-cache-mb 16] [--step-steps 1] [--no-step] [--render]

The data set is the synthetic one `data_memory.py` builds under --work (`ids<N>/`; built here when
absent).  Each source is a training config's TRAIN_SET read the way a Ray Train worker reads it
(`ray_gait.data.split.split_index` + `make_reader`, `BatchMaker`, `prefetch(maker, 0, n, workers=k)`):

- `maps`: SkeletonGait (`skeletongait_synth.yaml`) over the step-1 maps (Parquet);
- `paired`: SkeletonGait++ (`skeletongait++_synth.yaml`) over the step-2 paired set (Parquet);
- `poses`: SkeletonGait over the pose pkl tree, maps drawn on the fly;
- `poses+sil`: SkeletonGait++ over the pose pkl tree and the silhouette tree, maps drawn on the fly.

Batches: the reference one (32 x 4 sequences of 30 frames) and the CPU config's (the yaml's
sampler), the whole P x K batch in one process (a single rank), `--threads` prefetch threads.
Cold: a fresh reader with a small cache (`data_cfg.cache_mb` = --cold-cache-mb), so nearly every
draw is read and decoded from its file (the OS page cache is warm: the files were read before);
warm: `data_cfg.cache: true` with every sequence of the split read beforehand.  Prints sequences/s
and ms/batch, and, for each model and batch, the training step at the same batch on this machine
(forward, losses, backward, optimizer; bf16 autocast; the CPU config's widths; all cores; the
timing of `train_throughput.py`): the ratio input / step (sequences/s delivered / consumed).
`--render` also runs `render_on_the_fly.py` (render cost per batch, one thread) and prints it.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402

from ray_gait.data.split import make_reader, split_index  # noqa: E402
from ray_gait.config import CONFIG_DIR, TrainConfig, load_train_config  # noqa: E402
from ray_gait.data.batches import BatchMaker, prefetch  # noqa: E402

REFERENCE_BATCH = (32, 4, 30)
SOURCES = {"maps": ("skeletongait_synth.yaml", "maps"),
           "paired": ("skeletongait++_synth.yaml", "paired"),
           "poses": ("skeletongait_synth.yaml", "poses"),
           "poses+sil": ("skeletongait++_synth.yaml", "poses")}


def config_for(source: str, info: dict, batch: tuple[int, int, int] | None, cache: str,
               cold_cache_mb: float) -> TrainConfig:
    """The source's training config pointed at the data set, with the batch and the cache policy."""
    yaml_name, kind = SOURCES[source]
    data = Path(info["data"])
    values = {"data_cfg.dataset_partition": str(data / "partition.json"),
              "model_cfg.SeparateBNNecks.class_num": int(info["train_ids"])}
    if kind in ("maps", "paired"):
        values["data_cfg.dataset_root"] = info["maps"] if source == "maps" else info["paired"]
    else:
        values["data_cfg.dataset_root"] = str(data / "pose")
        if source == "poses+sil":
            values["data_cfg.silhouette_root"] = str(data / "sil")
    if cache == "warm":
        values["data_cfg.cache"] = True
    else:
        values["data_cfg.cache"] = False
        values["data_cfg.cache_mb"] = cold_cache_mb
    if batch is not None:
        values["trainer_cfg.sampler.batch_size"] = [batch[0], batch[1]]
        values["trainer_cfg.sampler.frames_num_fixed"] = batch[2]
    return load_train_config(os.path.join(CONFIG_DIR, "skeletongait", yaml_name), values)


def cpu_batch(source: str) -> tuple[int, int, int]:
    """(P, K, frames) of the source's CPU config."""
    sampler = load_train_config(os.path.join(CONFIG_DIR, "skeletongait", SOURCES[source][0])).trainer_cfg.sampler
    return int(sampler["batch_size"][0]), int(sampler["batch_size"][1]), int(sampler["frames_num_fixed"])


def input_figures(cfg: TrainConfig, cache: str, threads: int, batches: int) -> dict:
    """Sequences/s and ms/batch of `threads` prefetch threads over a fresh reader of TRAIN_SET."""
    torch.set_num_threads(1)
    index = split_index(cfg, "TRAIN_SET")
    reader = make_reader(cfg, index)
    if cache == "warm":
        for i in range(len(reader)):
            reader.arrays(i)
    maker = BatchMaker(reader, cfg.trainer_cfg.sampler, cfg.trainer_cfg.transform)
    reads, hits = reader.reads, reader.hits
    count = 0
    start = time.perf_counter()
    for _, batch, _ in prefetch(maker, 0, batches, workers=threads):
        count += len(batch[1])
    seconds = time.perf_counter() - start
    drawn = (reader.reads - reads) + (reader.hits - hits)
    return {"sequences_per_s": count / seconds, "ms_per_batch": seconds / batches * 1e3,
            "sequences": len(reader), "kind": index.kind,
            "hit_rate": (reader.hits - hits) / drawn if drawn else 0.0,
            "cached_mib": reader.cached_bytes / (1 << 20)}


def step_figure(cfg: TrainConfig, steps: int) -> float:
    """Seconds per training step at the config's batch (bf16 autocast, all cores), after one warm-up step."""
    from train_throughput import step_seconds
    index = split_index(cfg, "TRAIN_SET")
    reader = make_reader(cfg, index)
    torch.set_num_threads(os.cpu_count() or 1)
    try:
        return step_seconds(cfg, reader, torch.device("cpu"), True, False, steps)
    finally:
        torch.set_num_threads(1)


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("--work", type=Path, default=Path("/tmp/ray_gait_data_memory"),
                        help="data_memory.py's work folder (the data set is built there when absent)")
    parser.add_argument("--ids", type=int, default=48, help="identities of the data set (ids<N>/ under --work)")
    parser.add_argument("--views", default="0,30,60,90,120,150", help="synth --views, when it is built here")
    parser.add_argument("--frames", default="40:60", help="synth --frames, when it is built here")
    parser.add_argument("--sources", default="maps,paired,poses,poses+sil")
    parser.add_argument("--threads", default="1,2", help="prefetch threads to measure, comma-separated")
    parser.add_argument("--batches", type=int, default=4, help="batches timed per figure at the reference batch")
    parser.add_argument("--cpu-batches", type=int, default=16, help="batches timed per figure at the CPU batch")
    parser.add_argument("--cold-cache-mb", type=float, default=16.0, help="data_cfg.cache_mb of the cold reader")
    parser.add_argument("--step-steps", type=int, default=1, help="timed training steps (after a warm-up one)")
    parser.add_argument("--no-step", action="store_true", help="skip the training step")
    parser.add_argument("--no-reference", action="store_true", help="skip the reference batch")
    parser.add_argument("--render", action="store_true", help="also run render_on_the_fly.py")
    args = parser.parse_args()
    sources = [s for s in args.sources.split(",") if s]
    if set(sources) - set(SOURCES):
        parser.error(f"--sources: choose from {sorted(SOURCES)}")
    threads = [int(t) for t in args.threads.split(",")]

    import cv2
    cv2.setNumThreads(1)
    import logging
    logging.getLogger("ray_gait.data.sampler").setLevel(logging.ERROR)

    info_path = args.work.resolve() / f"ids{args.ids}" / "prepared.json"
    if not info_path.exists():
        import data_memory
        data_memory.prepare(args.work.resolve(), args.ids, argparse.Namespace(views=args.views, frames=args.frames))
    import json
    info = json.loads(info_path.read_text())

    shapes = [] if args.no_reference else [("reference", REFERENCE_BATCH, args.batches)]
    print(f"input from disk: {info['sequences']} synthetic sequences ({info['ids']} ids, {info['train_ids']} in "
          f"TRAIN_SET), {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"load {os.getloadavg()[0]:.1f}")
    print("| source (model) | batch | cache | threads | sequences/s | ms/batch | cache hits | step s | consumed seq/s | input / step |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    steps: dict[tuple[str, tuple[int, int, int]], float] = {}
    for source in sources:
        model = SOURCES[source][0].split("_")[0]
        warm_up = config_for(source, info, None, "cold", args.cold_cache_mb)
        BatchMaker(make_reader(warm_up, split_index(warm_up, "TRAIN_SET")), warm_up.trainer_cfg.sampler,
                   warm_up.trainer_cfg.transform, seed=1).make(0)   # imports, kernels, first file opens
        for label, shape, batches in shapes + [("CPU config", cpu_batch(source), args.cpu_batches)]:
            key = (model, shape)
            if not args.no_step and key not in steps:
                steps[key] = step_figure(config_for(source, info, shape, "cold", args.cold_cache_mb), args.step_steps)
            step = steps.get(key)
            consumed = shape[0] * shape[1] / step if step else None
            for cache in ("cold", "warm"):
                cfg = config_for(source, info, shape, cache, args.cold_cache_mb)
                for k in threads:
                    fig = input_figures(cfg, cache, k, max(batches, 2 * k))
                    ratio = f"{fig['sequences_per_s'] / consumed:.1f}" if consumed else "-"
                    print(f"| {source} ({model}) | {label} {shape[0]}x{shape[1]}x{shape[2]} | {cache} | {k} | "
                          f"{fig['sequences_per_s']:.1f} | {fig['ms_per_batch']:.0f} | {fig['hit_rate'] * 100:.0f} % | "
                          f"{'-' if step is None else f'{step:.2f}'} | {'-' if consumed is None else f'{consumed:.1f}'} "
                          f"| {ratio} |", flush=True)
    if args.render:
        print()
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "render_on_the_fly.py")], check=False)


if __name__ == "__main__":
    main()
