"""What a person sees: progress stages (bars on a terminal, log lines in a pipe, nothing with -q), Ray's chatter
kept out, and the matplotlib plots (labelled axes, PNGs that decode)."""
from __future__ import annotations

import errno
import fcntl
import io
import logging
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from ray_gait import console
from ray_gait.evaluation import plots

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# What Ray printed on the console of `ray-gait demo` before it was quieted: none of it may appear without --verbose.
CHATTER = ("TrainingReport", "core_worker.cc", "Progress bars disabled", "Token authentication", "dashboard",
           "Deprecat", "streaming_executor", "Started a local Ray instance", "Connecting to existing Ray cluster",
           "(raylet)", "pid=")
BAR = re.compile(r"synth: +100%\|.*\| 64/64 \[\d\d:\d\d<\d\d:\d\d, +[\d.]+(seq/s|s/seq)")


class _Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def restore_console():
    saved = console.settings()
    yield
    console._settings = saved


def test_mode_follows_quiet_and_the_terminal():
    assert console.choose_mode(True, _Terminal()) == "quiet"
    assert console.choose_mode(False, _Terminal()) == "bar"
    assert console.choose_mode(False, io.StringIO()) == "log"


def test_bar_mode_draws_one_bar_with_counts_rate_and_info(restore_console):
    screen = _Terminal()
    console.configure(stream=screen)
    with console.stage("heatmap", total=10, unit="seq") as progress:
        for _ in range(10):
            progress.update(1, frames=123)
    text = screen.getvalue()
    assert "\r" in text
    last = text.rstrip("\n").split("\r")[-1]
    assert re.search(r"heatmap: 100%\|.*\| 10/10 \[\d\d:\d\d<\d\d:\d\d, +[\d.]+seq/s, frames 123\]", last), last


def test_log_mode_writes_plain_lines_with_counts_rate_and_eta(restore_console, caplog):
    console.configure(stream=io.StringIO())
    caplog.set_level(logging.INFO, logger="ray_gait.progress")
    with console.stage("ingest", total=20, unit="seq") as progress:
        for _ in range(20):
            progress.update(1)
    lines = [r.getMessage() for r in caplog.records if r.name == "ray_gait.progress"]
    assert 2 <= len(lines) <= 12, lines                         # a tenth at a time, not one per tick
    assert re.fullmatch(r"ingest: 1/20 seqs, [\d.e+]+ seqs/s, ETA \d+:\d\d", lines[0]), lines[0]
    assert re.fullmatch(r"ingest: 20/20 seqs, [\d.e+]+ seqs/s, in \d+:\d\d", lines[-1]), lines[-1]


def test_quiet_mode_shows_no_stage(restore_console, caplog):
    screen = _Terminal()
    console.configure(quiet=True, stream=screen)
    caplog.set_level(logging.INFO, logger="ray_gait.progress")
    with console.stage("link", total=3) as progress:
        progress.update(3)
    assert screen.getvalue() == "" and not [r for r in caplog.records if r.name == "ray_gait.progress"]


def test_track_counts_items_and_initial_work_is_not_rate(restore_console):
    console.configure(stream=io.StringIO())
    assert list(console.track(iter([[1, 2], [3]]), "test", total=3, unit="seq", size=len)) == [[1, 2], [3]]
    progress = console.Stage("train", total=100, unit="iter", initial=90)
    time.sleep(0.05)
    progress.advance_to(95, loss=0.5)
    assert progress.rate < 5 / 0.05                                   # the 90 resumed iterations are not counted
    assert re.fullmatch(r"train: 95/100 iters, [\d.]+ iters/s, ETA \d+:\d\d, loss 0\.5", progress.line())


def test_rejected_inputs_are_one_warning(caplog):
    errors = [{"source": f"{i:03d}/nm-01/000/s.pkl", "reason": "bad pickle\n  opcode"} for i in range(5)]
    console.warn_rejected(errors, "out/errors.jsonl")
    (record,) = [r for r in caplog.records if r.name == "ray_gait.progress"]
    assert record.levelno == logging.WARNING
    assert record.getMessage() == ("5 input(s) rejected: 000/nm-01/000/s.pkl: bad pickle opcode; 001/nm-01/000/s.pkl: "
                                   "bad pickle opcode; 002/nm-01/000/s.pkl: bad pickle opcode (and 2 more); all in "
                                   "out/errors.jsonl")


NATIVE = r"""
import os, sys, time
from ray_gait import console
from ray_gait.ray_layer.session import RAY_NATIVE_LOG_LINE
assert console.drop_native_lines(RAY_NATIVE_LOG_LINE)
sys.stderr.write("\rbar 1/2"); sys.stderr.flush(); time.sleep(0.1)
os.write(2, b"[2026-11-30 09:13:02,246 E 21597 21597] core_worker.cc:2465: Actor ... constructor arguments\n")
sys.stderr.write("\rbar 2/2\n"); sys.stderr.flush()
os.write(2, b"[2026-11-30 09:13:02,246 F 1 2] logging.cc:1: a fatal line stays\n")
print("a Python line", file=sys.stderr)
os.write(2, b"[no newline at exit")
"""


def test_native_ray_log_lines_are_dropped_from_fd_2():
    done = subprocess.run([sys.executable, "-c", NATIVE], capture_output=True, timeout=60, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 0, done.stderr
    assert done.stderr == (b"\rbar 1/2\rbar 2/2\n[2026-11-30 09:13:02,246 F 1 2] logging.cc:1: a fatal line stays\n"
                           b"a Python line\n[no newline at exit")


def _run_in_pty(args: list[str], env: dict[str, str], timeout: float = 180) -> str:
    """Run a command on a pseudo-terminal (120 columns) and return all it wrote."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    process = subprocess.Popen(args, stdin=terminal, stdout=terminal, stderr=terminal, env=env, cwd=ROOT,
                               start_new_session=True)
    os.close(terminal)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                data = os.read(controller, 65536)
            except OSError as exc:
                if exc.errno == errno.EIO:                      # every writer has closed the terminal
                    break
                raise
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(controller)
        if process.poll() is None:
            process.kill()
        process.wait(30)
    assert process.returncode == 0, b"".join(chunks).decode(errors="replace")
    return b"".join(chunks).decode(errors="replace")


def _synth(out: Path, *flags: str) -> list[str]:
    return [str(BIN / "ray-gait"), "synth", "--out", str(out), "--ids", "4", "--views", "0,90", "--frames", "12:14",
            "--no-preview", *flags]


@pytest.fixture
def driver_env(ray_session) -> dict[str, str]:
    """A driver process's environment: the session's Ray in RAY_ADDRESS, nothing of pytest's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(RAY_ADDRESS=ray_session, PYTHONPATH=str(ROOT), TERM="xterm")
    env.pop("RAY_DATA_DISABLE_PROGRESS_BARS", None)
    return env


def test_terminal_shows_a_bar_and_no_ray_chatter(driver_env, tmp_path):
    text = _run_in_pty(_synth(tmp_path / "synth"), driver_env)
    assert "\r" in text and BAR.search(text), text
    assert "synth: 64 sequences (64 written, 0 already there)" in text
    assert not [word for word in CHATTER if word in text], text


def test_pipe_gets_plain_log_lines_and_quiet_only_the_summary(driver_env, tmp_path):
    done = subprocess.run(_synth(tmp_path / "piped"), env=driver_env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr and "|" not in done.stderr
    assert re.search(r"INFO ray_gait\.progress: synth: 64/64 seqs, [\d.]+ seqs/s, in \d+:\d\d, written 64",
                     done.stderr), done.stderr
    assert not [word for word in CHATTER if word in done.stderr + done.stdout], done.stderr
    assert done.stdout.startswith("synth: 64 sequences (64 written")
    quiet = subprocess.run(_synth(tmp_path / "quiet", "-q"), env=driver_env, capture_output=True, text=True,
                           timeout=180)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""
    assert re.fullmatch(r"synth: 64 sequences \(64 written, 0 already there\), [\d.]+ s -> \S+\n", quiet.stdout)


def _labels(figure) -> list[tuple[str, str]]:
    return [(axes.get_xlabel(), axes.get_ylabel()) for axes in figure.axes]


def test_plot_functions_label_their_axes():
    cmc = plots.cmc_figure({"NM": [60.0, 80.0, 90.0], "CL": [20.0, 40.0, 55.0]}, "CMC")
    assert _labels(cmc) == [("rank", "identification rate (%)")]
    legend = [t.get_text() for t in cmc.axes[0].get_legend().get_texts()]
    assert legend == ["NM (Rank-1 60.0%)", "CL (Rank-1 20.0%)"]
    views = plots.view_matrix_figure([[np.nan, 80.0], [75.0, np.nan]], ["0", "90"], ["0", "90"], "NM")
    assert _labels(views)[0] == ("gallery view", "probe view")
    assert sorted(t.get_text() for t in views.axes[0].texts) == ["-", "-", "75", "80"]
    assert views.axes[1].get_ylabel() == "Rank-1 (%)"                     # the colour bar
    scalars = {"train/loss": [(10, 3.0), (20, 2.5)], "triplet/loss": [(10, 0.5), (20, 0.4)],
               "val/rank1": [(20, 40.0)], "lr": [(10, 0.1)]}
    curves = plots.training_curves_figure(scalars, "run")
    assert _labels(curves) == [("iteration", "loss"), ("iteration", "Rank-1 (%)")]
    assert [line.get_label() for line in curves.axes[0].lines] == ["train/loss", "triplet/loss"]
    assert plots.training_curves_figure({"val/rank1": [(20, 40.0)]}, "run") is None
    from ray_gait.tuning.report import TrialRow, rank1_figure
    rows = [TrialRow("a", {"optimizer_cfg.lr": 1e-3, "heatmap_generator_args.sigma": 4.0}, 6, 50.0, 55.0, "completed"),
            TrialRow("b", {"optimizer_cfg.lr": 1e-2, "heatmap_generator_args.sigma": 8.0}, 6, 20.0, 25.0, "completed")]
    sweep = rank1_figure(rows, ["optimizer_cfg.lr"], ["heatmap_generator_args.sigma"], "val/rank1")
    assert _labels(sweep) == [("lr (log scale)", "best val/rank1 (%)")] and sweep.axes[0].get_xscale() == "log"
    assert [line.get_label() for line in sweep.axes[0].lines] == ["sigma 4", "sigma 8"]


@pytest.mark.parametrize("name, size", [("cmc", (480, 640)), ("views", (360, 640)), ("curves", (400, 960))])
def test_plots_are_pngs_that_decode(tmp_path, name, size):
    figure = {"cmc": lambda: plots.cmc_figure({"NM": list(np.linspace(40, 100, 20))}, "CMC"),
              "views": lambda: plots.view_matrix_figure([[np.nan, 80.0], [75.0, np.nan]], ["0", "90"], ["0", "90"],
                                                         "NM"),
              "curves": lambda: plots.training_curves_figure({"train/loss": [(1, 3.0), (2, 2.0)]}, "run")}[name]()
    path = plots.write_figure(str(tmp_path / f"{name}.png"), figure)
    image = cv2.imread(path)
    assert image is not None and image.shape == (*size, 3)
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 20 and image.std() > 10        # drawn, not blank


def test_training_curves_come_from_the_runs_tensorboard_events(tmp_path):
    from tensorboardX import SummaryWriter
    from ray_gait.ray_layer.trainer import CURVES, write_training_curves
    from ray_gait.training.events import run_scalars
    run = tmp_path / "run"
    writer = SummaryWriter(str(run / "tensorboard"))
    for step in (10, 20, 30):
        writer.add_scalar("train/loss", 3.0 / step, step)
        writer.add_scalar("val/rank1", float(step), step)
    writer.close()
    assert run_scalars(str(run / "tensorboard"))["val/rank1"] == [(10, 10.0), (20, 20.0), (30, 30.0)]
    assert run_scalars(str(tmp_path / "nothing")) == {}
    assert write_training_curves(str(run)) == str(run / CURVES)
    assert cv2.imread(str(run / CURVES)).shape == (400, 960, 3)


def test_scalar_events_are_in_the_file_when_add_returns(tmp_path):
    """A training worker publishes its event file right after each report, and may be killed right after: what
    ScalarEvents adds is in the file before close (tensorboardX's SummaryWriter writes from a thread, and its flush
    does not wait for it), and reads back like SummaryWriter's closed file of the same scalars, purge marker included."""
    from tensorboardX import SummaryWriter
    from tensorboardX.proto import event_pb2
    from ray_gait.training.events import ScalarEvents, _records, series_from_events
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    ours.mkdir()
    events = ScalarEvents(str(ours), purge_step=7)
    reference = SummaryWriter(str(theirs), purge_step=7)
    for step in (8, 9):
        scalars = {"train/loss": 3.0 / step, "val/rank1": float(step)}
        events.add(scalars, step)
        for tag, value in scalars.items():
            reference.add_scalar(tag, value, step)
        (path,) = ours.glob("events.out.tfevents.*")
        assert series_from_events([path.read_bytes()])["train/loss"][-1] == (step, pytest.approx(3.0 / step))
    reference.close()
    (their_path,) = theirs.glob("events.out.tfevents.*")
    assert series_from_events([path.read_bytes()]) == series_from_events([their_path.read_bytes()])
    marks = [[(e.step, e.session_log.status) for e in map(event_pb2.Event.FromString, _records(p.read_bytes()))
              if e.HasField("session_log")] for p in (path, their_path)]
    assert marks[0] == marks[1] == [(7, event_pb2.SessionLog.START)]
    events.close()


def test_training_curves_of_a_run_in_a_bucket(s3_bucket, tmp_path):
    from tensorboardX import SummaryWriter
    from ray_gait.io import fs
    from ray_gait.ray_layer.trainer import write_training_curves
    s3, bucket = s3_bucket
    writer = SummaryWriter(str(tmp_path / "tensorboard"))
    writer.add_scalar("train/loss", 1.0, 5)
    writer.close()
    fs.copy_tree(fs.resolve(str(tmp_path / "tensorboard")), fs.resolve(f"s3://{bucket}/run/tensorboard"))
    assert write_training_curves(f"s3://{bucket}/run") == f"s3://{bucket}/run/train_curves.png"
    data = s3.open_input_stream(f"{bucket}/run/train_curves.png").read()
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape == (400, 960, 3)


def test_training_reports_move_the_stage_and_warn_of_left_out_sequences(restore_console, caplog):
    from ray_gait.ray_layer.trainer import show_report
    console.configure(stream=io.StringIO())
    progress = console.Stage("train", total=40, unit="iter")
    show_report(progress, {"iteration": 20, "loss": 1.25, "val/rank1": 55.0, "val/NM/rank1": 60.0,
                           "val/unreadable": 2.0, "lr": 0.1})
    assert progress.done == 20 and progress.info == {"loss": 1.25, "val/rank1": 55.0}
    assert "2 val sequence(s) left out of the evaluation" in caplog.text


@pytest.mark.parametrize("argv, quiet, verbose", [([], False, False), (["-q"], True, False), (["-v"], False, True)])
def test_output_flags_go_either_side_of_the_subcommand(argv, quiet, verbose):
    from ray_gait.cli import build_parser
    for args in (argv + ["synth", "--out", "x"], ["synth", "--out", "x"] + argv):
        parsed = build_parser().parse_args(args)
        assert (parsed.quiet, parsed.verbose) == (quiet, verbose), args


def test_finished_trials_tick_the_sweep_stage_with_the_best_metric(restore_console):
    import pickle
    from types import SimpleNamespace
    from ray_gait.ray_layer import tune_job
    from ray_gait.tuning.space import trial_count
    console.configure(stream=io.StringIO())
    assert trial_count(SimpleNamespace(num_samples=2, space={"optimizer_cfg.lr": {"loguniform": [1e-4, 1e-2]},
                                                                       "sigma": {"grid_search": [4.0, 8.0, 16.0]}})) == 6
    done = pickle.loads(pickle.dumps(tune_job._TrialsDone("val/rank1", "max")))
    progress = console.Stage("tune", total=3, unit="trial")
    tune_job._open_sweep.append(progress)
    try:
        for result in ({"val/rank1": 40.0}, {"val/rank1": 55.0}, {}):
            done.on_trial_complete(0, [], SimpleNamespace(last_result=result))
    finally:
        tune_job._open_sweep.remove(progress)
    assert progress.done == 3 and progress.info == {"best val/rank1": 55.0}
