"""What a person sees while a long command runs: one progress bar per stage, or plain log lines.

`configure()` (called once by the command line) picks the mode: `bar` (a tqdm bar per stage with
counts, rate and ETA, when stderr is a terminal), `log` (a plain log line every tenth of the stage
or every LOG_EVERY_S seconds, and one at its end: pipes, files, `ray job submit`) or `quiet` (`-q`:
no stage output, only warnings, errors and the summary).  Drivers wrap the loop of each stage in
`stage(name, total)` and tick it as work finishes:

    with stage("embed", total=len(rows), unit="seq") as progress:
        for batch in batches:
            progress.update(len(batch["id"]), parts=parts)

Library use without configure() gets `log` and leaves Ray's own console output as Ray makes it
(`settings().verbose`).  Nothing here imports Ray: ray_layer/session.py reads `settings()` to keep
Ray's chatter off the console.
"""
from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, TextIO, TypeVar

LOG_EVERY_S = 30.0
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

log = logging.getLogger("ray_gait.progress")
T = TypeVar("T")


@dataclass
class Settings:
    """How stages are shown, and whether Ray's own output reaches the console."""

    mode: str = "log"
    verbose: bool = True
    stream: TextIO | None = None


_settings = Settings()


def settings() -> Settings:
    """The current console settings."""
    return _settings


def choose_mode(quiet: bool, stream: TextIO) -> str:
    """`quiet` with -q, `bar` when `stream` is a terminal, else `log`."""
    if quiet:
        return "quiet"
    isatty = getattr(stream, "isatty", None)
    return "bar" if isatty is not None and isatty() else "log"


class _BarFormatter(logging.Formatter):
    """Terminal log lines: the message alone for INFO, `LEVEL: message` above it."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one short line (exceptions appended as usual)."""
        text = super().format(record)
        return text if record.levelno <= logging.INFO else f"{record.levelname}: {text}"


class _BarSafeHandler(logging.StreamHandler):
    """Writes log lines above the progress bars (tqdm.write) instead of through them."""

    def emit(self, record: logging.LogRecord) -> None:
        """Write one record, the open bars redrawn below it."""
        from tqdm import tqdm
        try:
            tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except Exception:  # noqa: BLE001 - logging must never raise (logging.Handler.handleError's contract)
            self.handleError(record)


def configure(quiet: bool = False, verbose: bool = False, stream: TextIO | None = None) -> Settings:
    """Set the mode from -q and the terminal, and the root logger (level, one handler on `stream`), unless
    someone else's handlers are on it already (a test runner's: then, as logging.basicConfig, it is left alone)."""
    global _settings
    stream = stream or sys.stderr
    _settings = Settings(mode=choose_mode(quiet, stream), verbose=verbose, stream=stream)
    root = logging.getLogger()
    ours = [h for h in root.handlers if getattr(h, "_ray_gait_console", False)]
    if len(ours) < len(root.handlers):
        return _settings
    for handler in ours:
        root.removeHandler(handler)
    if _settings.mode == "bar":
        handler: logging.Handler = _BarSafeHandler(stream)
        handler.setFormatter(_BarFormatter("%(message)s"))
    else:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler._ray_gait_console = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.WARNING if quiet else logging.INFO)
    return _settings


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


def _info_text(info: dict[str, Any]) -> str:
    return ", ".join(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"
                     for key, value in info.items())


class Stage:
    """One stage in progress: how much of `total` is done, its rate and ETA, shown as the mode says."""

    def __init__(self, name: str, total: int | None, unit: str = "shard", initial: int = 0) -> None:
        self.name, self.total, self.unit = name, total, unit
        self.initial = self.done = initial
        self.info: dict[str, Any] = {}
        self.settings = _settings
        self.started = self.last_log = time.monotonic()
        self.logged_tenth = -1
        self.bar = None
        if self.settings.mode == "bar":
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=initial, desc=name, unit=unit, file=self.settings.stream,
                            dynamic_ncols=True, smoothing=0.1, mininterval=0.2, leave=True)

    @property
    def rate(self) -> float:
        """Units done per second since the stage began (work done before it, `initial`, left out)."""
        return (self.done - self.initial) / max(time.monotonic() - self.started, 1e-9)

    def line(self) -> str:
        """The stage as one plain line: name, count of total, rate, ETA or time taken, and its info."""
        count = f"{self.done}/{self.total}" if self.total is not None else str(self.done)
        parts = [f"{self.name}: {count} {self.unit}s", f"{self.rate:.3g} {self.unit}s/s"]
        if self.total is not None and self.done >= self.total:
            parts.append(f"in {_duration(time.monotonic() - self.started)}")
        elif self.total is not None and self.rate > 0:
            parts.append(f"ETA {_duration((self.total - self.done) / self.rate)}")
        if self.info:
            parts.append(_info_text(self.info))
        return ", ".join(parts)

    def update(self, n: int = 1, **info: Any) -> None:
        """Count `n` more units done; `info` (e.g. frames=1200, loss=0.31) is shown beside the count."""
        self.advance_to(self.done + n, **info)

    def advance_to(self, done: int, **info: Any) -> None:
        """Set the units done (e.g. the training iteration reached), with optional info."""
        step, self.done = done - self.done, done
        self.info.update(info)
        if self.bar is not None:
            if info:
                self.bar.set_postfix_str(_info_text(self.info), refresh=False)
            self.bar.update(step)
        elif self.settings.mode == "log":
            self._maybe_log()

    def _maybe_log(self) -> None:
        now = time.monotonic()
        tenth = int(10 * self.done / self.total) if self.total else -1
        if (tenth > self.logged_tenth and self.total is not None and self.done < self.total) or \
                now - self.last_log >= LOG_EVERY_S:
            self.logged_tenth, self.last_log = max(tenth, self.logged_tenth), now
            log.info("%s", self.line())

    def close(self) -> None:
        """End the stage: the bar stays on screen with its final counts; log mode writes the last line."""
        if self.bar is not None:
            self.bar.close()
        elif self.settings.mode == "log":
            log.info("%s", self.line())


@contextlib.contextmanager
def stage(name: str, total: int | None = None, unit: str = "shard", initial: int = 0) -> Iterator[Stage]:
    """A progress bar (or plain log lines) for one stage of a command, closed when the block ends."""
    progress = Stage(name, total, unit=unit, initial=initial)
    try:
        yield progress
    finally:
        progress.close()


_FILTER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "stderr_filter.py")

_native_filter: subprocess.Popen | None = None


def drop_native_lines(pattern: str) -> bool:
    """Route this process's fd 2 through a child process that drops the lines matching `pattern` (what native
    code writes there directly, below Python's logging and warnings); the rest passes through as it comes.

    Only when fd 2 is sys.stderr's own (not under a test runner's capture), once per process; returns whether
    the filter is in place.  The child reads until every writer has closed fd 2, so nothing is lost at exit.
    """
    global _native_filter
    if _native_filter is not None:
        return True
    try:
        if sys.stderr.fileno() != 2:
            return False
    except (AttributeError, OSError, ValueError):
        return False
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    try:
        _native_filter = subprocess.Popen([sys.executable, "-S", _FILTER_SCRIPT, pattern], stdin=read_end, stdout=2,
                                          stderr=2, close_fds=True, start_new_session=True)
        os.dup2(write_end, 2)
    finally:
        os.close(read_end)
        os.close(write_end)
    return True


def warn_rejected(errors: list[dict[str, Any]], report: str, shown: int = 3) -> None:
    """One warning for the inputs a stage's workers rejected ({"source", "reason"} each): how many, the first
    few, and the file that lists them all (what workers log about them stays off the console)."""
    if not errors:
        return
    examples = "; ".join(f"{err.get('source', '?')}: {' '.join(str(err.get('reason', '')).split())[:200]}"
                         for err in errors[:shown])
    more = f" (and {len(errors) - shown} more)" if len(errors) > shown else ""
    log.warning("%d input(s) rejected: %s%s; all in %s", len(errors), examples, more, report)


def track(items: Iterable[T], name: str, total: int | None = None, unit: str = "shard",
          size: Callable[[T], int] | None = None) -> Iterator[T]:
    """Yield `items`, each counted (as `size(item)` units, else 1) in a stage of its own as it arrives."""
    with stage(name, total, unit=unit) as progress:
        for item in items:
            progress.update(size(item) if size is not None else 1)
            yield item
