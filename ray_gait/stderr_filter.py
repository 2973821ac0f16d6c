"""The child process of `console.drop_native_lines`: `python -S stderr_filter.py PATTERN`.

Copies its stdin (what the parent writes to its fd 2) to its stdout (the parent's original stderr) as it comes,
less each line's text from a match of PATTERN on, its newline included.  A partial line that starts like one of
those ("[") waits for its end; any other (a progress bar's "\\r..." redraw) passes at once.  Standard library
only, and run without site-packages (-S): it starts in milliseconds and imports nothing of ray_gait.
"""
from __future__ import annotations

import os
import re
import signal
import sys


def _write(data: bytes) -> None:
    """Write all of `data` to fd 1."""
    while data:
        data = data[os.write(1, data):]


def _keep(drop: re.Pattern[bytes], line: bytes, end: bytes) -> bytes:
    """The line with its end, or its text before a match of `drop` (the rest and the end dropped)."""
    found = drop.search(line)
    return line + end if found is None else line[:found.start()]


def copy_filtered(drop: re.Pattern[bytes], read_fd: int = 0) -> None:
    """Copy `read_fd` to fd 1 until it closes, dropping what matches `drop` from each line."""
    pending = b""
    while True:
        chunk = os.read(read_fd, 65536)
        if not chunk:
            break
        *lines, pending = (pending + chunk).split(b"\n")
        _write(b"".join(_keep(drop, line, b"\n") for line in lines))
        if pending and not pending.startswith(b"["):
            _write(pending)
            pending = b""
    _write(_keep(drop, pending, b""))


def main() -> None:
    """Filter stdin to stdout with the pattern of argv[1]; Ctrl-C is the parent's to handle."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    copy_filtered(re.compile(sys.argv[1].encode()))


if __name__ == "__main__":
    main()
