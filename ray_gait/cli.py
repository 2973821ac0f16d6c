"""`ray-gait SUBCOMMAND`: the command line (the same flags as `jobs/<subcommand>.py`)."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, Callable, Sequence

from ray_gait import console
from ray_gait.yaml_config import ConfigError, parse_override

log = logging.getLogger("ray_gait")


class CommandError(Exception):
    """A failure to report as one line on stderr with a non-zero exit status."""


def _overrides(items: Sequence[str] | None) -> dict:
    return dict(parse_override(item) for item in items or [])


def add_heatmap_parser(sub: argparse._SubParsersAction) -> None:
    """Flags of `ray-gait heatmap` (OpenGait's pretreatment_heatmap.py flags, plus ours)."""
    p = sub.add_parser("heatmap", help="step 1: pose files -> skeleton maps (Parquet data set)",
                       description="Render 2-channel skeleton maps (limbs, joints; 64x64 uint8) from pose files "
                                   "in OpenGait's layout <id>/<type>/<view>/<seq>.pkl, with Ray Data, into "
                                   "SAVE_ROOT/<NAME>_sigma_<sigma>_<EXT>/.",
                       epilog="example: ray-gait heatmap --pose_data_path data/pose --save_root out "
                              "--dataset_name Gait3D --set heatmap_generator_args.sigma=4.0")
    p.add_argument("--pose_data_path", required=True, help="root of the pose .pkl files, or a pose data set "
                   "written by `ray-gait ingest` (path or s3://, gs:// URI)")
    p.add_argument("--save_root", required=True, help="where the data set folder is written (path or URI)")
    p.add_argument("--dataset_name", required=True,
                   help="data set name (SUSTech1K keeps only 03*.pkl; GREW reads (T, 2+17*3) rows)")
    p.add_argument("--ext_name", default="", help="suffix of the output folder name (default: empty)")
    p.add_argument("--heatmap_cfg_path", "--heatemap_cfg_path", default=None,
                   help="heatmap config YAML (default: the packaged configs/heatmap.yaml; OpenGait's "
                        "pretreatment_heatmap.yaml also loads)")
    add_set_flag(p, "override a config key, e.g. "
                   "heatmap_generator_args.sigma=4.0 (repeatable)")
    p.add_argument("--format", default="parquet", choices=["parquet", "pkl", "both"],
                   help="parquet (default), pkl (OpenGait's per-sequence tree under pkl/) or both")
    p.add_argument("--max-errors", type=int, default=0,
                   help="exit non-zero when more inputs than this are rejected (default 0)")
    p.add_argument("--shard-size", type=int, default=16, help="pose files per task and per Parquet part")
    p.add_argument("--workers", type=int, default=None, help="concurrent render tasks (default: one per CPU)")
    p.add_argument("--backend", default="auto", choices=["auto", "c", "numpy", "torch"],
                   help="renderer: auto (the compiled kernel when built, else numpy), c, numpy, torch "
                        "(each shard's frames drawn in one batch)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                   help="cuda: each worker holds a GPU and renders its shards there with the torch backend "
                        "(use a larger --shard-size, e.g. 256)")
    p.set_defaults(handler=run_heatmap)


def run_heatmap(args: argparse.Namespace) -> int:
    """Run step 1 and print the summary."""
    from ray_gait.heatmap.config import load_heatmap_config
    from ray_gait.ray_layer.heatmap_job import run_heatmap_job
    config = load_heatmap_config(args.heatmap_cfg_path, _overrides(args.set))
    summary = run_heatmap_job(args.pose_data_path, args.save_root, args.dataset_name, config,
                              ext_name=args.ext_name, fmt=args.format, shard_size=args.shard_size,
                              workers=args.workers, backend=args.backend, device=args.device)
    print(f"heatmap: {summary.sequences} sequences, {summary.frames} frames, {summary.errors} errors, "
          f"{summary.frames_per_second:.0f} frames/s ({summary.skipped_shards}/{summary.shards} shards "
          f"already done) -> {summary.output}")
    if summary.errors > args.max_errors:
        raise CommandError(f"{summary.errors} input(s) rejected (more than --max-errors {args.max_errors}); "
                           f"see {summary.output}/errors.jsonl")
    return 0


_INGEST_EPILOG = """\
formats and layouts (paths below --input_path; the format is detected unless --format says):
  openpose-json  OpenPose JSON per frame, people[i].pose_keypoints_2d (COCO-18 or BODY-25):
                 OU-MVLP's <id>/<view>_<seq>/<frame>.json, or <id>/<type>/<view>/<frame>.json
  gait3d-txt     comma-separated txt per frame, two leading values, then x, y, score per joint:
                 Gait3D's 2D_Poses/<id>/<camid_videoid>/<seq>/human_crop_f<N>.txt
  grew           GREW's <N>_2d_pose.txt rows: train/<id>/<seq>/, test/gallery/<id>/<seq>/,
                 test/probe/<seq>/ (or the rearranged <id>/<type>/<view>/)
  pkl            OpenGait pose pickles <id>/<type>/<view>/<seq>.pkl, (T, V, 3) or GREW's (T, 2 + V*3)
options for --set: min_frames=1 drop_empty_frames=false tracking.jump=1.0 tracking.scale=1.0
  tracking.prominence=0.25
example: ray-gait ingest --input_path OUMVLP-pose --output_path OUMVLP-pose-ingested \\
           --pose_selection_dir OUMVLP/Pose/match_idx/OpenPose
"""


def add_ingest_parser(sub: argparse._SubParsersAction) -> None:
    """Flags of `ray-gait ingest` (OpenGait's pretreatment.py --pose, plus ours)."""
    p = sub.add_parser("ingest", help="step 0: raw per-frame pose files -> pose sequences (pkl tree + Parquet)",
                       description="Group raw per-frame pose files into sequences <id>/<type>/<view> with Ray Data,\n"
                                   "pick the walking subject in frames with several people, and write OpenGait's\n"
                                   "pkl tree (OUTPUT/pkl/<id>/<type>/<view>/<view>.pkl) and a Parquet pose data set\n"
                                   "(OUTPUT/part-*.parquet) that `ray-gait heatmap --pose_data_path OUTPUT` reads.",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_INGEST_EPILOG)
    p.add_argument("--input_path", required=True, help="root of the raw pose files (path or URI)")
    p.add_argument("--output_path", required=True, help="where the pose data set and pkl tree go (path or URI)")
    p.add_argument("--format", default="auto", choices=["auto", "openpose-json", "gait3d-txt", "grew", "pkl"],
                   help="input format (default auto: detected from the files, reported in the summary)")
    p.add_argument("--pose_selection_dir", "--oumvlp_index_dir", default=None,
                   help="OU-MVLP: folder of <id>/<seq>/<view>/pose_selection_idx.pkl (which person each crowded "
                        "frame shows); without it the subject is tracked")
    add_set_flag(p, "override an ingest option, e.g. "
                   "min_frames=5 (repeatable)")
    p.add_argument("--max-errors", type=int, default=0,
                   help="exit non-zero when more inputs than this are rejected (default 0)")
    p.add_argument("--shard-size", type=int, default=32, help="sequences per task and per Parquet part")
    p.add_argument("--workers", type=int, default=None, help="concurrent tasks (default: one per CPU)")
    p.set_defaults(handler=run_ingest)


def run_ingest(args: argparse.Namespace) -> int:
    """Run step 0 and print the summary."""
    from ray_gait.ingest.shards import ingest_config
    from ray_gait.ray_layer.ingest_job import run_ingest_job
    config = ingest_config(_overrides(args.set))
    summary = run_ingest_job(args.input_path, args.output_path, fmt=args.format,
                             selection_dir=args.pose_selection_dir, config=config, shard_size=args.shard_size,
                             workers=args.workers)
    how = "detected" if summary.detected else "given"
    print(f"ingest: {summary.sequences} sequences ({summary.format}, {how}), {summary.frames} frames "
          f"({summary.empty_frames} with nobody, {summary.multi_person_frames} with several people, "
          f"{summary.index_frames} chosen by pose_selection_idx), {summary.errors} errors, "
          f"{summary.rejected} sequences rejected, {summary.sequences_per_second:.1f} sequences/s "
          f"({summary.skipped_shards}/{summary.shards} shards already done) -> {summary.output}")
    if summary.errors > args.max_errors:
        raise CommandError(f"{summary.errors} input(s) rejected (more than --max-errors {args.max_errors}); "
                           f"see {summary.output}/errors.jsonl")
    return 0


def add_link_parser(sub: argparse._SubParsersAction) -> None:
    """Flags of `ray-gait link` (OpenGait's ln_sil_heatmap.py flags, plus ours)."""
    p = sub.add_parser("link", help="step 2: pair heatmaps with silhouettes (for SkeletonGait++)",
                       description="Pair heatmaps and silhouettes per (id, type, view): a Parquet data set "
                                   "with both columns, or OpenGait's symlink tree (0_heatmap.pkl, 1_sil.pkl).",
                       epilog="example: ray-gait link --heatmap_data_path out/Gait3D_sigma_8.0_ "
                              "--silhouette_data_path data/Gait3D-sils --output_path out/Gait3D-merged")
    p.add_argument("--heatmap_data_path", required=True, help="heatmap data set (Parquet) or OpenGait pkl tree")
    p.add_argument("--silhouette_data_path", required=True, help="silhouette tree <id>/<type>/<view>/<file>")
    p.add_argument("--output_path", required=True, help="where the paired data set or link tree goes")
    p.add_argument("--dataset_pkl_ext_name", default=".pkl", help="silhouette file suffix (default .pkl)")
    p.add_argument("--format", default="parquet", choices=["parquet", "symlink"], help="output kind")
    p.add_argument("--relative", action="store_true", help="symlink: relative links (default absolute)")
    p.add_argument("--max-unmatched", type=int, default=0,
                   help="exit non-zero when more pairs than this cannot be made (default 0)")
    p.set_defaults(handler=run_link)


def run_link(args: argparse.Namespace) -> int:
    """Run step 2 and print the summary."""
    from ray_gait.ray_layer.link_job import REPORT, run_link_job
    summary = run_link_job(args.heatmap_data_path, args.silhouette_data_path, args.output_path,
                           sil_ext=args.dataset_pkl_ext_name, fmt=args.format, relative=args.relative)
    state = " (already up to date)" if summary.up_to_date else ""
    print(f"link: {summary.paired} pairs, {summary.unmatched} unmatched, {summary.seconds:.1f} s{state} "
          f"-> {summary.output}")
    if summary.unmatched > args.max_unmatched:
        raise CommandError(f"{summary.unmatched} input(s) could not be paired (more than --max-unmatched "
                           f"{args.max_unmatched}); see {summary.output}/{REPORT}")
    return 0


def _views(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--views must be comma-separated degrees, got {text!r}") from None


def _frames(text: str) -> tuple[int, int]:
    try:
        low, high = (int(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--frames must look like MIN:MAX, got {text!r}") from None
    return low, high


def add_set_flag(parser: Any, help_text: str = "override a config key (repeatable)") -> None:
    """`--set KEY=VALUE`, repeatable: the one definition of the override flag of every command."""
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help=help_text)


def add_synth_flags(parser: Any) -> None:
    """The synthetic data set's size and seed (`synth`, and `pipeline` without real data)."""
    parser.add_argument("--ids", type=int, default=60, help="identities (default 60)")
    parser.add_argument("--train-ids", type=int, default=None, help="identities in TRAIN_SET (default: half)")
    parser.add_argument("--views", type=_views, default=(0, 45, 90, 135, 180), help="walking directions in degrees")
    parser.add_argument("--frames", type=_frames, default=(40, 60), help="frames per sequence MIN:MAX (default 40:60)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (the data set is a function of it)")


def synth_config(args: argparse.Namespace) -> Any:
    """The SynthConfig of the synthetic-data flags (TRAIN_SET: half the identities unless --train-ids)."""
    from ray_gait.synth import SynthConfig
    train = args.train_ids if args.train_ids is not None else args.ids // 2
    return SynthConfig(ids=args.ids, train_ids=train, views=args.views, frames=args.frames, seed=args.seed)


def add_synth_parser(sub: argparse._SubParsersAction) -> None:
    """Flags of `ray-gait synth`."""
    p = sub.add_parser("synth", help="write the synthetic gait data set (poses, silhouettes, partition, protocol)",
                       description="Generate walking people with persistent body proportions and walking style "
                                   "(3D kinematics, perspective camera, imperfect pose estimator, silhouettes; "
                                   "conditions normal / bag / coat) in OpenGait's layout: OUT/pose, OUT/sil, "
                                   "OUT/partition.json, OUT/protocol.json, OUT/preview.png.",
                       epilog="example: ray-gait synth --out data/synth --ids 60 --views 0,45,90,135,180")
    p.add_argument("--out", required=True, help="output folder")
    add_synth_flags(p)
    p.add_argument("--workers", type=int, default=None, help="concurrent tasks (default: one per CPU)")
    p.add_argument("--no-preview", action="store_true", help="skip preview.png")
    p.set_defaults(handler=run_synth)


def run_synth(args: argparse.Namespace) -> int:
    """Generate the synthetic data set."""
    from ray_gait.ray_layer.synth_job import run_synth_job
    result = run_synth_job(args.out, synth_config(args), workers=args.workers, preview=not args.no_preview)
    print(f"synth: {result['sequences']} sequences ({result['made']} written, {result['skipped']} already there), "
          f"{result['seconds']:.1f} s -> {result['output']}")
    return 0


def _train_config(args: argparse.Namespace) -> tuple[dict, Any]:
    """The raw config tree (with --set applied, for the workers) and the typed config of --cfgs."""
    from ray_gait.config import load_config
    return load_config(args.cfgs, _overrides(args.set))


def add_train_parser(sub: argparse._SubParsersAction) -> None:
    """Flags of `ray-gait train`."""
    p = sub.add_parser("train", help="step 3: train SkeletonGait / SkeletonGait++ with DDP on Ray Train",
                       description="Train from an OpenGait-style YAML config (data_cfg, model_cfg, loss_cfg, "
                                   "optimizer_cfg, scheduler_cfg, trainer_cfg, evaluator_cfg, ray_cfg). A rerun "
                                   "with the same trainer_cfg.save_name resumes from its latest checkpoint.",
                       epilog="example: ray-gait train --cfgs configs/skeletongait/skeletongait++_synth.yaml "
                              "--set trainer_cfg.total_iter=200 --set ray_cfg.num_workers=2")
    p.add_argument("--cfgs", required=True, help="config YAML (ours or OpenGait's)")
    add_set_flag(p)
    p.add_argument("--log_to_file", action="store_true", help="also write the log to <run>/train.log")
    p.set_defaults(handler=run_train)


def run_train(args: argparse.Namespace) -> int:
    """Run training and print where the results are."""
    tree, cfg = _train_config(args)
    if args.log_to_file:
        _log_to_file(cfg)
    from ray_gait.ray_layer.trainer import result_checkpoint, run_folder, run_training
    result = run_training(cfg, tree)
    if result.error is not None:
        raise CommandError(f"training failed: {result.error}")
    metrics = result.metrics or {}
    print(f"train: iteration {metrics.get('iteration')} loss {metrics.get('loss', float('nan')):.4f} -> "
          f"checkpoint {result_checkpoint(cfg, result)}; run folder {run_folder(cfg)}")
    return 0


def _log_to_file(cfg) -> None:
    """Log into `<storage>/<save_name>/train.log`; on object storage, a local file uploaded when the command ends."""
    import atexit
    import os
    import tempfile
    from ray_gait.io import fs
    target = fs.resolve(os.path.join(cfg.ray_cfg.storage_path, cfg.trainer_cfg.save_name, "train.log"))
    if target.is_local:
        os.makedirs(os.path.dirname(target.path), exist_ok=True)
        path = target.path
    else:
        path = os.path.join(tempfile.mkdtemp(prefix="ray_gait_log_"), "train.log")
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    if not target.is_local:
        def upload() -> None:
            handler.flush()
            fs.write_bytes_atomic(target, fs.read_bytes(fs.resolve(path), limit=2**40))
        atexit.register(upload)


def add_test_parser(sub: argparse._SubParsersAction) -> None:
    """Flags of `ray-gait test`."""
    p = sub.add_parser("test", help="evaluate a checkpoint with the config's protocol (evaluator_cfg.eval_func)",
                       description="Embed the test split with Ray Data actors and compute the protocol of "
                                   "evaluator_cfg.eval_func (OpenGait's names, or evaluate_protocol with a "
                                   "protocol.json); writes metrics.json, embeddings.npz and PNG plots.",
                       epilog="example: ray-gait test --cfgs configs/skeletongait/skeletongait++_synth.yaml")
    p.add_argument("--cfgs", required=True, help="config YAML")
    p.add_argument("--checkpoint", default=None, help="ray_gait checkpoint folder/state.pt or an OpenGait .pt "
                   "(default: evaluator_cfg.restore_hint, else the run's latest checkpoint)")
    p.add_argument("--out", default=None, help="output folder (default: <run folder>/test)")
    add_set_flag(p)
    p.add_argument("--workers", type=int, default=None, help="embedding actors (default ray_cfg.num_workers)")
    p.set_defaults(handler=run_test)


def run_test(args: argparse.Namespace) -> int:
    """Evaluate and print the table."""
    import os
    from ray_gait.ray_layer.evaluate import format_table, run_evaluation
    tree, cfg = _train_config(args)
    out = args.out or os.path.join(cfg.ray_cfg.storage_path, cfg.evaluator_cfg.save_name, "test")
    metrics = run_evaluation(cfg, tree, out, checkpoint=args.checkpoint, workers=args.workers)
    print(format_table(metrics))
    left_out = f" ({len(metrics['unreadable'])} unreadable, left out: see metrics.json)" if metrics["unreadable"] else ""
    print(f"test: {metrics['sequences']} sequences{left_out}, {metrics['seconds']:.1f} s -> {out}/metrics.json; "
          "plots: " + ", ".join(metrics["plots"]))
    return 0


def add_embed_parser(sub: argparse._SubParsersAction) -> None:
    """Flags of `ray-gait embed`."""
    p = sub.add_parser("embed", help="embed every sequence of a data set with a trained model (Parquet out)",
                       description="Embed every sequence of --data (maps of step 1, a paired data set, or poses "
                                   "rendered on the fly; SkeletonGait++ from poses reads data_cfg.silhouette_root) "
                                   "with Ray Data actors (ray_cfg.use_gpu: one GPU each), as `ray-gait test` embeds "
                                   "its test split. OUT: one row per sequence (id, type, view, seq, embedding "
                                   "float32 (E, p), dim, parts) in Parquet parts written as shards finish, and "
                                   "_manifest.json (config, checkpoint, unreadable sequences).",
                       epilog="example: ray-gait embed --cfgs configs/skeletongait/skeletongait++_synth.yaml "
                              "--checkpoint SkeletonGaitPP-00600.pt --data demo/paired --out demo/embeddings")
    p.add_argument("--cfgs", required=True, help="config YAML (model_cfg, evaluator_cfg, ray_cfg, data_cfg)")
    p.add_argument("--checkpoint", default=None, help="ray_gait checkpoint folder/state.pt or an OpenGait .pt "
                   "(default: evaluator_cfg.restore_hint, else the run's latest checkpoint)")
    p.add_argument("--data", required=True, help="data set to embed, all of it (path or URI)")
    p.add_argument("--out", required=True, help="output folder (path or URI); an earlier embed output is replaced")
    add_set_flag(p)
    p.add_argument("--workers", type=int, default=None, help="embedding actors (default ray_cfg.num_workers)")
    p.add_argument("--shard-size", type=int, default=128, help="sequences per task and per Parquet part")
    p.set_defaults(handler=run_embed)


def run_embed(args: argparse.Namespace) -> int:
    """Embed a data set and print the summary."""
    from ray_gait.io import fs
    from ray_gait.ray_layer.embed_job import run_embed_job
    tree, cfg = _train_config(args)
    summary = run_embed_job(cfg, tree, fs.absolute(args.data), fs.absolute(args.out), checkpoint=args.checkpoint,
                            workers=args.workers, shard_size=args.shard_size)
    skipped = summary.unreadable + summary.left_out
    left_out = f" ({skipped} left out: see _manifest.json)" if skipped else ""
    print(f"embed: {summary.sequences} sequences{left_out}, embeddings [{summary.dim}, {summary.parts}], "
          f"{summary.files} part(s), {summary.seconds:.1f} s -> {summary.output}")
    return 0


def add_search_parser(sub: argparse._SubParsersAction) -> None:
    """Flags of `ray-gait search`."""
    p = sub.add_parser("search", help="k nearest gallery sequences of every probe sequence (embeddings in, table out)",
                       description="For every sequence of --probe, its --top-k nearest sequences of --gallery (two "
                                   "outputs of `ray-gait embed`) by the evaluation's distance (part-averaged, "
                                   "OpenGait's): exact, reading both in chunks, so memory does not grow with the "
                                   "gallery. Prints the first rows; --out writes all of them as CSV or JSON.",
                       epilog="example: ray-gait search --gallery emb/gallery --probe emb/probe --top-k 5 "
                              "--out matches.csv")
    p.add_argument("--gallery", required=True, help="embeddings data set of the gallery (path or URI)")
    p.add_argument("--probe", required=True, help="embeddings data set of the probes (path or URI)")
    p.add_argument("--top-k", type=int, default=5, help="neighbours per probe (default 5)")
    p.add_argument("--metric", default="euc", choices=["euc", "cos"], help="distance (default euc, as evaluator_cfg)")
    p.add_argument("--out", default=None, help="FILE.csv or FILE.json (path or URI) with every row")
    p.add_argument("--chunk-rows", type=int, default=1024, help="probe and gallery rows per block (memory bound)")
    p.add_argument("--show", type=int, default=20, help="rows printed (default 20)")
    p.set_defaults(handler=run_search)


def run_search(args: argparse.Namespace) -> int:
    """Search and print the first rows and the counts."""
    import time
    from ray_gait.evaluation.search import format_rows, output_format, search, write_results
    if args.out is not None:
        output_format(args.out)
    started = time.perf_counter()
    rows = search(args.gallery, args.probe, top_k=args.top_k, metric=args.metric, probe_rows=args.chunk_rows,
                  gallery_rows=args.chunk_rows)
    summary = write_results(rows, args.out, keep=max(0, args.show))
    if summary.first:
        print(format_rows(summary.first))
    more = f" (first {len(summary.first)} shown)" if summary.rows > len(summary.first) else ""
    print(f"search: {summary.probes} probes x top-{args.top_k} ({args.metric}) = {summary.rows} rows{more}, "
          f"{time.perf_counter() - started:.1f} s" + (f" -> {summary.output}" if summary.output else ""))
    return 0


def add_tune_parser(sub: argparse._SubParsersAction) -> None:
    """Flags of `ray-gait tune`."""
    p = sub.add_parser("tune", help="Ray Tune sweep over training keys (lr, ...) and heatmap keys (sigma, ...)",
                       description="Run a Ray Tune sweep: each trial is a Ray Train run of --cfgs with the values of "
                                   "the search space; ASHA stops weak trials early on the validation Rank-1 "
                                   "(data_cfg.val_ids held-out identities, evaluated every save_iter). Each distinct "
                                   "heatmap config is rendered once, before the trials, and reused. A rerun with the "
                                   "same sweep name resumes. Ends with the table of trials, best_config.yaml "
                                   "(for ray-gait train) and rank1_vs_lr.png in <storage_path>/<name>/.",
                       epilog="example: ray-gait tune --cfgs configs/skeletongait/skeletongait++_synth.yaml "
                              "--search configs/tune/lr_sigma.yaml --set trainer_cfg.total_iter=100")
    p.add_argument("--cfgs", required=True, help="training config YAML (the base of every trial)")
    p.add_argument("--search", default=None, help="search space YAML (default: the packaged "
                   "configs/tune/lr_sigma.yaml: lr log-uniform, sigma 4 and 8, on the demo's synthetic data)")
    add_set_flag(p, "override a training config key (repeatable)")
    p.set_defaults(handler=run_tune)


def run_tune(args: argparse.Namespace) -> int:
    """Run a sweep and print its table and outputs."""
    from ray_gait.ray_layer.tune_job import run_sweep
    from ray_gait.tuning.space import DEFAULT_SEARCH, load_search_spec
    tree, cfg = _train_config(args)
    spec = load_search_spec(args.search or DEFAULT_SEARCH)
    summary = run_sweep(spec, cfg, tree)
    print(summary.table)
    rendered = sum(1 for r in summary.renders if r.rendered_frames)
    print(f"tune: {len(summary.rows)} trials{' (resumed)' if summary.restored else ''}, {len(summary.renders)} "
          f"heatmap config(s), {rendered} rendered in this run, {summary.seconds:.0f} s -> {summary.path}")
    if summary.best is None:
        raise CommandError(f"no trial reported {spec.metric}; see {summary.path}")
    print(f"best: {summary.best.trial_id} {spec.metric} {summary.best.last if summary.best.last is not None else summary.best.best:.2f} "
          f"{summary.best.params}\n  config: {summary.best_config}\n  plot: {summary.plot}")
    return 0


def add_demo_parser(sub: argparse._SubParsersAction) -> None:
    """Flags of `ray-gait demo`."""
    p = sub.add_parser("demo", help="the whole pipeline on the embedded synthetic data set, on a local Ray",
                       description="Synthetic data -> heatmaps -> pairing -> SkeletonGait++ training -> "
                                   "evaluation, on a local Ray (or the cluster in RAY_ADDRESS). Rerunning "
                                   "resumes each step.",
                       epilog="example: ray-gait demo --out demo")
    p.add_argument("--out", default="demo", help="output folder (default ./demo)")
    p.add_argument("--ids", type=int, default=None, help="identities in the synthetic set (default 40)")
    p.add_argument("--iters", type=int, default=None,
                   help="training iterations (default 160 of 8-frame clips, about 5 minutes on 2 cores)")
    p.add_argument("--cfgs", default=None, help="training config (default skeletongait++_synth.yaml)")
    add_set_flag(p, "override a training config key")
    p.set_defaults(handler=run_demo_command)


def _print_run(name: str, result: dict[str, Any]) -> None:
    print(result["table"])
    print(f"{name}: {result['seconds']:.0f} s\n  plots: {', '.join(result['metrics']['plots'])}\n"
          f"  TensorBoard: tensorboard --logdir {result['tensorboard']}\n  checkpoint: {result['checkpoint']}\n"
          f"  metrics: {result['run_dir']}/test/metrics.json")


def run_demo_command(args: argparse.Namespace) -> int:
    """Run the demo and print the table and where everything is."""
    from ray_gait.ray_layer.demo import DEMO_CONFIG, run_demo
    sizes = {key: value for key, value in (("ids", args.ids), ("total_iter", args.iters)) if value is not None}
    result = run_demo(args.out, config=args.cfgs or DEMO_CONFIG, overrides=_overrides(args.set), **sizes)
    _print_run("demo", result)
    return 0


def add_pipeline_parser(sub: argparse._SubParsersAction) -> None:
    """Flags of `ray-gait pipeline`."""
    p = sub.add_parser("pipeline", help="every step as one job: poses (real or synthetic) -> heatmaps -> pairing "
                                        "-> training -> evaluation",
                       description="Run steps 1-3 and the evaluation as one job on a local Ray or the cluster in "
                                   "RAY_ADDRESS: synthetic data (default) or real poses (--pose_data_path) -> "
                                   "heatmaps (OUT/maps) -> pairing with silhouettes when the model reads them "
                                   "(OUT/paired) -> Ray Train (OUT/runs) -> Rank-1 table and plots. Rerunning the "
                                   "same command resumes each step.",
                       epilog="examples:\n  ray-gait pipeline --out synth-run --ids 60 --iters 200\n"
                              "  ray-gait pipeline --out ccpg-run --cfgs configs/skeletongait/skeletongait++_CCPG.yaml "
                              "--pose_data_path CCPG-pose --silhouette_data_path CCPG-sils --dataset_name CCPG "
                              "--dataset_partition CCPG.json --heatmap-set coco18tococo17_args.transfer_to_coco17=true "
                              "--set ray_cfg.num_workers=8 --set ray_cfg.use_gpu=true",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--cfgs", default=None, help="training config (default skeletongait++_synth.yaml)")
    add_set_flag(p, "override a training config key")
    p.add_argument("--iters", type=int, default=None, help="training iterations (default: the config's total_iter)")
    real = p.add_argument_group("real data (default: the synthetic data set)")
    real.add_argument("--pose_data_path", default=None, help="pose tree <id>/<type>/<view>/<seq>.pkl or an ingested "
                      "pose data set")
    real.add_argument("--silhouette_data_path", default=None, help="silhouette tree (for SkeletonGait++)")
    real.add_argument("--dataset_partition", default=None, help="partition JSON (TRAIN_SET, TEST_SET)")
    real.add_argument("--dataset_protocol", default=None, help="protocol JSON for evaluate_protocol")
    real.add_argument("--dataset_name", default="synth", help="data set name (GREW, SUSTech1K rules apply)")
    real.add_argument("--heatmap_cfg_path", default=None, help="heatmap config YAML (default configs/heatmap.yaml)")
    real.add_argument("--heatmap-set", action="append", metavar="KEY=VALUE",
                      help="override a heatmap config key, e.g. heatmap_generator_args.sigma=4.0")
    add_synth_flags(p.add_argument_group("synthetic data"))
    p.set_defaults(handler=run_pipeline_command)


def run_pipeline_command(args: argparse.Namespace) -> int:
    """Run the pipeline and print the table and where everything is."""
    from ray_gait.ray_layer.demo import DEMO_CONFIG
    from ray_gait.ray_layer.pipeline import PipelineInputs, run_pipeline
    synth = synth_config(args) if args.pose_data_path is None else None
    inputs = PipelineInputs(pose_data_path=args.pose_data_path, silhouette_data_path=args.silhouette_data_path,
                            dataset_partition=args.dataset_partition, dataset_protocol=args.dataset_protocol,
                            dataset_name=args.dataset_name, synth=synth, heatmap_cfg_path=args.heatmap_cfg_path,
                            heatmap_overrides=_overrides(args.heatmap_set))
    result = run_pipeline(args.out, args.cfgs or DEMO_CONFIG, inputs, _overrides(args.set), total_iter=args.iters)
    _print_run("pipeline", result)
    return 0


def add_export_parser(sub: argparse._SubParsersAction) -> None:
    """Flags of `ray-gait export-checkpoint`."""
    p = sub.add_parser("export-checkpoint", help="write a ray_gait checkpoint as an OpenGait checkpoint",
                       description="Convert a training checkpoint of ray_gait (a checkpoint folder or its "
                                   "state.pt) into OpenGait's format {'model', 'optimizer', 'scheduler', "
                                   "'iteration'}, which OpenGait loads with strict=True.",
                       epilog="example: ray-gait export-checkpoint --checkpoint runs/SkeletonGaitPP_synth/"
                              "checkpoint_2026-11-24_06-18-20.274008 --out SkeletonGaitPP-00600.pt")
    p.add_argument("--checkpoint", required=True, help="ray_gait checkpoint folder or state.pt")
    p.add_argument("--out", required=True, help="OpenGait checkpoint file to write (.pt)")
    p.set_defaults(handler=run_export)


def run_export(args: argparse.Namespace) -> int:
    """Export a checkpoint in OpenGait's format."""
    from ray_gait.models.weights import export_state_as_opengait
    saved = export_state_as_opengait(args.checkpoint, args.out)
    print(f"export-checkpoint: iteration {saved['iteration']} -> {args.out}")
    return 0


def add_export_model_parser(sub: argparse._SubParsersAction) -> None:
    """Flags of `ray-gait export`."""
    p = sub.add_parser("export", help="write the embedding network as TorchScript or ONNX",
                       description="Export the embedding network of --cfgs with the weights of --checkpoint "
                                   "(eval mode): input float x [n, s, C, 64, 44] (n and s dynamic; C = 2 heatmaps, "
                                   "or 2 heatmaps + 1 silhouette for SkeletonGait++), output the inference "
                                   "embeddings [n, E, p]. The file is checked against the eager model before it "
                                   "is written.",
                       epilog="example: ray-gait export --cfgs configs/skeletongait/skeletongait++_synth.yaml "
                              "--checkpoint demo/runs/SkeletonGaitPP_synth/checkpoint_2026-11-24_06-18-20.274008 "
                              "--format onnx --out skeletongait++.onnx")
    p.add_argument("--cfgs", required=True, help="config YAML (its model_cfg is built)")
    p.add_argument("--checkpoint", required=True, help="ray_gait checkpoint folder/state.pt or an OpenGait .pt")
    p.add_argument("--format", required=True, choices=["torchscript", "onnx"],
                   help="torchscript (load with torch.jit.load) or onnx (run with onnxruntime)")
    p.add_argument("--out", required=True, help="file to write (path or URI)")
    add_set_flag(p)
    p.set_defaults(handler=run_export_model)


def run_export_model(args: argparse.Namespace) -> int:
    """Export the embedding network and print what was written."""
    from ray_gait.models.export import export_embedder, load_embedder
    _, cfg = _train_config(args)
    result = export_embedder(load_embedder(cfg.model_cfg, args.checkpoint), args.format, args.out)
    checked = "not checked" if result.max_abs_diff is None else f"max |diff| vs eager {result.max_abs_diff:.1e}"
    print(f"export: {result.format}, x [n, s, {result.in_channels}, 64, 44] -> [n, {result.embed_dim}, "
          f"{result.parts}], {result.size_bytes / 1e6:.1f} MB, {checked} -> {result.uri}")
    return 0


PARSERS: list[Callable[[argparse._SubParsersAction], None]] = [add_synth_parser, add_heatmap_parser, add_link_parser,
                                                               add_train_parser, add_test_parser, add_export_parser,
                                                               add_demo_parser, add_ingest_parser, add_tune_parser,
                                                               add_pipeline_parser, add_export_model_parser,
                                                               add_embed_parser, add_search_parser]


def add_output_flags(parser: argparse.ArgumentParser, default: Any = False) -> None:
    """-q/--quiet and -v/--verbose (what the console shows), before or after the subcommand."""
    output = parser.add_mutually_exclusive_group()
    output.add_argument("-q", "--quiet", action="store_true", default=default, help="only warnings, errors and "
                        "the final summary (no progress bars or log lines)")
    output.add_argument("-v", "--verbose", action="store_true", default=default, help="also show Ray's own "
                        "output: its log lines, deprecation warnings, and what its workers print (Ray Train's "
                        "reports among them)")


def build_parser() -> argparse.ArgumentParser:
    """The `ray-gait` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="ray-gait", description="SkeletonGait and SkeletonGait++ on Ray: "
                                     "pose files -> skeleton maps -> training -> evaluation.")
    add_output_flags(parser)
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND")
    sub.required = True
    for add in PARSERS:
        add(sub)
    for command in sub.choices.values():
        add_output_flags(command, default=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `ray-gait` and of the scripts in jobs/."""
    parser = build_parser()
    args = parser.parse_args(argv)
    console.configure(quiet=args.quiet, verbose=args.verbose)
    try:
        return int(args.handler(args) or 0)
    except (CommandError, ConfigError, ValueError, FileNotFoundError, RuntimeError) as exc:
        reason = " ".join(str(exc).split())
        print(f"ray-gait {args.command}: error: {reason}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"ray-gait {args.command}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
