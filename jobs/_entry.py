"""Shared start of the job scripts: make the project importable from `ray job submit --working-dir .`."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def run(subcommand: str) -> None:
    """Run `ray-gait SUBCOMMAND` with this script's arguments and exit with its status."""
    from ray_gait.cli import main
    sys.exit(main([subcommand, *sys.argv[1:]]))
