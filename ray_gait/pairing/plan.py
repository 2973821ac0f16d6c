"""Step 2 planning: which heatmap goes with which silhouette file, per (id, type, view).

Plain Python (no Ray).  Heatmaps come from a ray_gait data set (Parquet) or OpenGait's pkl tree;
silhouettes from OpenGait's tree `<id>/<type>/<view>/<name><ext>` (the first file of a folder, as
OpenGait's ln_sil_heatmap.py takes it).  Anything that cannot be paired is reported with a reason.
"""
from __future__ import annotations

import posixpath
from collections import defaultdict
from dataclasses import dataclass, field

import pyarrow.parquet as pq

from ray_gait.io import fs
from ray_gait.io.dataset import MANIFEST, parquet_files
from ray_gait.pose.io import sequence_key

Key = tuple[str, str, str]


@dataclass(frozen=True)
class HeatmapEntry:
    """One heatmap sequence: where it is (a Parquet part and row, or a pkl file)."""

    key: Key
    seq: str
    frames: int | None
    parquet: str | None = None
    row: int | None = None
    pkl: str | None = None


@dataclass
class PairPlan:
    """Pairs to make and the inputs that cannot be paired."""

    pairs: list[tuple[HeatmapEntry, str]] = field(default_factory=list)
    unmatched: list[dict[str, str]] = field(default_factory=list)


def _key_text(key: Key) -> str:
    return "/".join(key)


def index_heatmaps(root: str, prefer_pkl: bool = False) -> tuple[str, list[HeatmapEntry]]:
    """('parquet' | 'pkl', entries) for a heatmap data set or pkl tree (its `pkl/` tree if preferred)."""
    loc = fs.resolve(root)
    if not fs.is_dir(loc):
        raise FileNotFoundError(f"heatmap data path {root} is not a folder")
    has_parquet = fs.exists(loc.join(MANIFEST)) or bool(parquet_files(root))
    if has_parquet and not (prefer_pkl and fs.is_dir(loc.join("pkl"))):
        entries = []
        for name in parquet_files(root):
            table = pq.read_table(loc.join(name).path, filesystem=loc.fs, columns=["id", "type", "view", "seq", "frames"])
            for i, row in enumerate(table.to_pylist()):
                entries.append(HeatmapEntry((row["id"], row["type"], row["view"]), row["seq"], row["frames"],
                                            parquet=name, row=i))
        return "parquet", entries
    tree = loc.join("pkl") if fs.is_dir(loc.join("pkl")) else loc
    entries = []
    for rel in fs.list_files(tree, depth=4, pattern="*.pkl"):
        key = sequence_key(rel)
        entries.append(HeatmapEntry((key.id, key.type, key.view), key.seq, None, pkl=tree.join(rel).uri))
    return "pkl", entries


def index_silhouettes(root: str, ext: str = ".pkl") -> dict[Key, list[str]]:
    """Silhouette files per (id, type, view), sorted, as URIs."""
    loc = fs.resolve(root)
    if not fs.is_dir(loc):
        raise FileNotFoundError(f"silhouette data path {root} is not a folder")
    found: dict[Key, list[str]] = defaultdict(list)
    for rel in fs.list_files(loc, depth=4, pattern=f"*{ext}"):
        parts = rel.split("/")
        found[(parts[0], parts[1], parts[2])].append(loc.join(rel).uri)
    return found


def declared_frames_problem(entry: HeatmapEntry) -> str | None:
    """Why an entry whose frame count is known (a Parquet row) cannot be paired (0 frames, ...), or None."""
    frames = getattr(entry, "frames", None)
    if frames is None:
        return None
    if frames == 0:
        return "empty sequence (0 frames)"
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 0:
        return f"frames must be a positive integer, got {frames!r}"
    return None


def _origin(entry: HeatmapEntry) -> str:
    """The file an entry came from: a HeatmapEntry's Parquet part or pkl, or a SequenceRef's file (data.index)."""
    return (getattr(entry, "parquet", None) or getattr(entry, "pkl", None) or getattr(entry, "file", None)
            or "the heatmaps")


def _where(entry: HeatmapEntry) -> str:
    place = f"{entry.parquet}, row {entry.row}" if getattr(entry, "parquet", None) else getattr(entry, "pkl", None)
    return f"heatmap {entry.seq}" + (f" ({place})" if place else "")


def plan_pairs(heatmaps: list[HeatmapEntry], silhouettes: dict[Key, list[str]]) -> PairPlan:
    """Pair each (id, type, view) folder's first heatmap with its first silhouette file.

    A heatmap whose declared frame count is 0 (or not a positive integer) is reported and not paired.
    """
    plan = PairPlan()
    by_key: dict[Key, list[HeatmapEntry]] = defaultdict(list)
    refused: set[Key] = set()
    for entry in heatmaps:
        problem = declared_frames_problem(entry)
        if problem is not None:
            plan.unmatched.append({"key": _key_text(entry.key), "reason": f"{_where(entry)}: {problem}"})
            refused.add(entry.key)
            continue
        by_key[entry.key].append(entry)
    for key in sorted(by_key):
        entries = sorted(by_key[key], key=lambda e: e.seq)
        try:
            for part, what in zip(key, ("id", "type", "view")):
                fs.safe_component(part, f"{what} from {_origin(entries[0])}")
        except ValueError as exc:
            plan.unmatched.append({"key": _key_text(key), "reason": str(exc)})
            continue
        if key not in silhouettes:
            plan.unmatched.append({"key": _key_text(key), "reason": "heatmap without silhouette"})
            continue
        plan.pairs.append((entries[0], silhouettes[key][0]))
        for extra in entries[1:]:
            plan.unmatched.append({"key": _key_text(key), "reason": f"extra heatmap {extra.seq} in the same folder"})
    for key in sorted(set(silhouettes) - set(by_key) - refused):
        name = posixpath.basename(silhouettes[key][0])
        plan.unmatched.append({"key": _key_text(key), "reason": f"silhouette without heatmap ({name})"})
    return plan
