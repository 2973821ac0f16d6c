"""Where the sequences of a split are: built on the driver from file metadata, never from the arrays.

A data set root is one of:
- ``maps``: a step-1 data set (Parquet parts with a ``heatmap`` column);
- ``paired``: a step-2 data set (``heatmap`` and ``silhouette`` columns);
- ``pose``: a pose data set written by ``ray-gait ingest`` (Parquet, ``pose`` column) or OpenGait's pose
  pkl tree ``<id>/<type>/<view>/<seq>.pkl``; maps are then rendered on the fly, and silhouettes (for
  SkeletonGait++) come from a silhouette tree paired per ``(id, type, view)`` as step 2 pairs them.

The index holds one small `SequenceRef` per sequence (a Parquet part, row group and row, or a file),
so its size grows with the number of sequences, not with their frames.  Workers read the arrays
themselves, when the sampler needs them (`ray_gait.data.reader`).  A Parquet row whose shape columns
cannot be a sequence (0 frames, a dimension of 0 or less) is refused here with its reason
(`SplitIndex.refused`), so that it reaches neither training nor evaluation.
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import pyarrow.parquet as pq

from ray_gait.io import fs
from ray_gait.io.dataset import parquet_files
from ray_gait.pairing.plan import index_silhouettes, plan_pairs
from ray_gait.pose.io import is_pose_dataset, list_pose_files, sequence_key

log = logging.getLogger(__name__)

KINDS = ("maps", "paired", "pose")
INDEX_THREADS = 16
# Shape columns of the data set schemas: a row declaring one of them 0 or less is refused when indexed.
SHAPE_COLUMNS = ("frames", "height", "width", "joints", "sil_frames", "sil_height", "sil_width")


@dataclass(frozen=True)
class SequenceRef:
    """One sequence: its key and where its arrays are (row group -1: a whole pkl file)."""

    id: str
    type: str
    view: str
    seq: str
    file: str
    row_group: int = -1
    row: int = 0
    sil: str = ""

    @property
    def key(self) -> tuple[str, str, str]:
        """(id, type, view): the folder step 2 pairs by."""
        return (self.id, self.type, self.view)

    @property
    def full_key(self) -> tuple[str, str, str, str]:
        """(id, type, view, seq)."""
        return (self.id, self.type, self.view, self.seq)


@dataclass(frozen=True)
class SplitIndex:
    """The sequences of one split, sorted by key, and those left out, each with a reason.

    `unpaired`: what could not be paired (poses + silhouettes); `refused`: rows whose shape columns
    cannot be a sequence (0 frames, a dimension of 0 or less).
    """

    kind: str
    root: str
    refs: tuple[SequenceRef, ...]
    dataset_name: str = ""
    unpaired: tuple[dict, ...] = field(default_factory=tuple)
    refused: tuple[dict, ...] = field(default_factory=tuple)

    def __len__(self) -> int:
        return len(self.refs)

    @property
    def labels(self) -> list[str]:
        """The identity of every sequence."""
        return [ref.id for ref in self.refs]

    @property
    def keys(self) -> list[tuple[str, str, str, str]]:
        """(id, type, view, seq) of every sequence."""
        return [ref.full_key for ref in self.refs]

    @property
    def renders_maps(self) -> bool:
        """True when maps are drawn from poses on the fly."""
        return self.kind == "pose"


def dataset_kind(root: str) -> str:
    """`maps`, `paired` or `pose` for a data set root (path or URI); FileNotFoundError when it is none."""
    loc = fs.resolve(root)
    if not fs.is_dir(loc):
        raise FileNotFoundError(f"data_cfg.dataset_root {root} is not a folder")
    if is_pose_dataset(root):
        return "pose"
    parts = parquet_files(root)
    if parts:
        names = set(pq.read_schema(loc.join(parts[0]).path, filesystem=loc.fs).names)
        if "pose" in names:
            return "pose"
        if "heatmap" in names:
            return "paired" if "silhouette" in names else "maps"
        raise ValueError(f"{root}: Parquet parts without a heatmap or pose column")
    if fs.list_files(loc, depth=4, pattern="*.pkl"):
        return "pose"
    raise FileNotFoundError(f"data_cfg.dataset_root {root} holds no ray_gait data set (Parquet parts) "
                            "and no pose pkl tree (<id>/<type>/<view>/<seq>.pkl)")


def shape_problem(row: dict) -> str | None:
    """Why a row's declared shape columns cannot be a sequence (0 frames, a dimension <= 0), or None."""
    if row.get("frames") == 0 or row.get("sil_frames") == 0:
        return "empty sequence (0 frames)"
    for name in SHAPE_COLUMNS:
        value = row.get(name, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            return f"{name} must be a positive integer, got {value!r}"
    return None


def _part_refs(root: fs.Location, name: str) -> tuple[list[SequenceRef], list[tuple[SequenceRef, str]]]:
    """The sequences of one Parquet part (key and shape columns, row-group positions), and those refused, why."""
    part = root.join(name)
    handle = pq.ParquetFile(part.path, filesystem=root.fs)
    shapes = [column for column in SHAPE_COLUMNS if column in handle.schema_arrow.names]
    cols = handle.read(columns=["id", "type", "view", "seq", *shapes]).to_pydict()
    refs, refused, start = [], [], 0
    for group in range(handle.metadata.num_row_groups):
        rows = handle.metadata.row_group(group).num_rows
        for row in range(rows):
            i = start + row
            ref = SequenceRef(str(cols["id"][i]), str(cols["type"][i]), str(cols["view"][i]),
                              str(cols["seq"][i]), part.uri, group, row)
            problem = shape_problem({column: cols[column][i] for column in shapes})
            if problem is None:
                refs.append(ref)
            else:
                refused.append((ref, f"{part.uri} (row group {group}, row {row}): {problem}"))
        start += rows
    return refs, refused


def _parquet_refs(root: str) -> tuple[list[SequenceRef], list[tuple[SequenceRef, str]]]:
    loc = fs.resolve(root)
    names = parquet_files(root)
    with ThreadPoolExecutor(max_workers=min(INDEX_THREADS, max(1, len(names)))) as pool:
        found = list(pool.map(lambda n: _part_refs(loc, n), names))
    return [ref for refs, _ in found for ref in refs], [item for _, refused in found for item in refused]


def _pkl_refs(root: str, dataset_name: str) -> list[SequenceRef]:
    loc = fs.resolve(root)
    refs = []
    for rel in list_pose_files(root, dataset_name):
        key = sequence_key(rel)
        refs.append(SequenceRef(key.id, key.type, key.view, key.seq, loc.join(rel).uri))
    return refs


def _pair_with_silhouettes(refs: list[SequenceRef], silhouette_root: str,
                           ids: set[str]) -> tuple[list[SequenceRef], list[dict]]:
    """Each (id, type, view)'s first pose sequence with its first silhouette file, as step 2 pairs maps."""
    silhouettes = {key: files for key, files in index_silhouettes(silhouette_root).items() if key[0] in ids}
    plan = plan_pairs(refs, silhouettes)
    return [replace(ref, sil=sil) for ref, sil in plan.pairs], plan.unmatched


def build_index(root: str, ids: set[str] | list[str] | None, *, dataset_name: str = "", silhouette_root: str = "",
                needs_silhouettes: bool = False) -> SplitIndex:
    """The index of the sequences of `root` whose identity is in `ids`, every one when None (see the module docstring)."""
    kind = dataset_kind(root)
    bad: list[tuple[SequenceRef, str]] = []
    if kind == "pose" and not is_pose_dataset(root) and not parquet_files(root):
        refs = _pkl_refs(root, dataset_name)
    else:
        refs, bad = _parquet_refs(root)
    wanted = {str(i) for i in ids} if ids is not None else {ref.id for ref, _ in bad} | {ref.id for ref in refs}
    refs = [ref for ref in refs if ref.id in wanted]
    refused = [{"key": "/".join(ref.full_key), "source": ref.file, "reason": reason}
               for ref, reason in bad if ref.id in wanted]
    for item in refused[:5]:
        log.warning("refused %s: %s", item["key"], item["reason"])
    if refused:
        log.warning("%d sequence(s) of %s refused: their shape columns cannot be a sequence", len(refused), root)
    unpaired: list[dict] = []
    if needs_silhouettes:
        if kind == "maps":
            raise ValueError(f"{root} holds maps without silhouettes: pair it with silhouettes first "
                             "(ray-gait link), or train from poses with data_cfg.silhouette_root")
        if kind == "pose":
            if not silhouette_root:
                raise ValueError(f"{root} holds poses: SkeletonGait++ needs data_cfg.silhouette_root "
                                 "(OpenGait's silhouette tree) to pair them with")
            refs, unpaired = _pair_with_silhouettes(refs, silhouette_root, wanted)
            for item in unpaired[:5]:
                log.warning("not paired: %s (%s)", item["key"], item["reason"])
            if unpaired:
                log.warning("%d sequence folder(s) of %s could not be paired with silhouettes", len(unpaired), root)
    refs.sort(key=lambda r: r.full_key)
    return SplitIndex(kind, root, tuple(refs), dataset_name, tuple(unpaired), tuple(refused))
