"""Grouping raw pose files into sequences `<id>/<type>/<view>`, as OpenGait's pretreatment names them.

Layouts understood (paths relative to `--input_path`; deeper roots are fine, the last levels count):

- generic, and every data set once OpenGait's rearrange scripts ran: `<id>/<type>/<view>/<frame file>`
  (Gait3D ships this: `2D_Poses/<id>/<camid_videoid>/<seq>/human_crop_f<N>.txt`);
- OU-MVLP as downloaded: `<id>/<view>_<seq>/<frame>.json` (folder `000_00`) -> `<id>/<seq>/<view>`;
- GREW as downloaded: `train/<id>/<seq>/<N>_2d_pose.txt` -> `<id>train/00/<seq>`,
  `test/gallery/<id>/<seq>/...` -> `<id>/<01, 02, ... by sorted seq>/<seq>`, `test/probe/<seq>/...` ->
  `probe/03/<seq>`;
- `pkl`: one file per sequence, `<id>/<type>/<view>/<seq>.pkl`.

The sequence name `seq` is the view, as OpenGait writes `<id>/<type>/<view>/<view>.pkl`.  Frames are
ordered by file name with numbers compared as numbers (`f9.txt` before `f10.txt`).
"""
from __future__ import annotations

import posixpath
import re
from collections import defaultdict
from dataclasses import dataclass

from ray_gait.ingest.formats import GREW, PKL
from ray_gait.io import fs

_OUMVLP_FOLDER = re.compile(r"^(\d{3})_(\d{2})$")
_NUMBER = re.compile(r"(\d+)")
GREW_TRAIN, GREW_GALLERY, GREW_PROBE = "train", "gallery", "probe"
GREW_TRAIN_TYPE, GREW_PROBE_TYPE = "00", "03"


@dataclass(frozen=True)
class RawSequence:
    """One sequence to build: its key, the folder (or file) it came from, its frame files in order."""

    id: str
    type: str
    view: str
    seq: str
    source: str
    files: tuple[str, ...]

    @property
    def key(self) -> str:
        """`<id>/<type>/<view>/<seq>`."""
        return f"{self.id}/{self.type}/{self.view}/{self.seq}"


def check_key(seq: RawSequence) -> RawSequence:
    """The sequence, or ValueError when its id / type / view / seq cannot name output folders and files."""
    for name in ("id", "type", "view", "seq"):
        fs.safe_component(getattr(seq, name), f"{name} of {seq.source}")
    return seq


def _safe_only(sequences: list[RawSequence], errors: list[dict[str, str]]) -> list[RawSequence]:
    """The sequences whose keys are safe file names; an error for each of the others."""
    kept = []
    for seq in sequences:
        try:
            kept.append(check_key(seq))
        except ValueError as exc:
            errors.append({"source": seq.source, "reason": str(exc)})
    return kept


def natural_key(name: str) -> tuple:
    """Sort key comparing the digit runs of a name as numbers."""
    return tuple(int(part) if part.isdigit() else part for part in _NUMBER.split(name))


def _folder_key(parts: list[str], fmt: str) -> tuple[str, str, str] | None:
    """(id, type, view) of a frame file from its path, or None when no layout fits."""
    folders = parts[:-1]
    if fmt == GREW:
        if len(folders) >= 3 and folders[-3] == GREW_TRAIN:
            return folders[-2] + GREW_TRAIN, GREW_TRAIN_TYPE, folders[-1]
        if len(folders) >= 2 and folders[-2] == GREW_PROBE:
            return GREW_PROBE, GREW_PROBE_TYPE, folders[-1]
        if len(folders) >= 3 and folders[-3] == GREW_GALLERY:
            return folders[-2], "", folders[-1]      # type numbered once all gallery folders are known
    if folders:
        match = _OUMVLP_FOLDER.match(folders[-1])
        if match and len(folders) >= 2:
            return folders[-2], match.group(2), match.group(1)
    if len(folders) >= 3:
        return folders[-3], folders[-2], folders[-1]
    return None


def _number_gallery(groups: dict[tuple[str, str, str], list[str]]) -> dict[tuple[str, str, str], list[str]]:
    """GREW gallery: each identity's sequences get types 01, 02, ... in sorted folder order."""
    per_id: dict[str, list[str]] = defaultdict(list)
    for (sid, typ, view) in groups:
        if typ == "":
            per_id[sid].append(view)
    renamed = {}
    for (sid, typ, view), files in groups.items():
        if typ == "":
            typ = f"{sorted(per_id[sid], key=natural_key).index(view) + 1:02d}"
        renamed[(sid, typ, view)] = files
    return renamed


def group_sequences(files: list[str], fmt: str) -> tuple[list[RawSequence], list[dict[str, str]]]:
    """Sequences (sorted by key) of a format's files, and an error per file or folder no layout fits."""
    errors: list[dict[str, str]] = []
    if fmt == PKL:
        return _safe_only(_pkl_sequences(files, errors), errors), errors
    groups: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for name in files:
        key = _folder_key(name.split("/"), fmt)
        if key is None:
            errors.append({"source": name, "reason": "not in a <id>/<type>/<view>/ folder (see ray-gait ingest "
                                                     "--help for the layouts understood)"})
            continue
        groups[key].append(name)
    if fmt == GREW:
        groups = _number_gallery(groups)
    sequences = []
    for (sid, typ, view), names in groups.items():
        folders = {posixpath.dirname(n) for n in names}
        if len(folders) > 1:
            errors.append({"source": ", ".join(sorted(folders)),
                           "reason": f"several folders map to the same sequence {sid}/{typ}/{view}"})
            continue
        ordered = tuple(sorted(names, key=lambda n: natural_key(posixpath.basename(n))))
        sequences.append(RawSequence(sid, typ, view, view, folders.pop(), ordered))
    return sorted(_safe_only(sequences, errors), key=lambda s: s.key), errors


def _pkl_sequences(files: list[str], errors: list[dict[str, str]]) -> list[RawSequence]:
    sequences, seen = [], {}
    for name in files:
        parts = name.split("/")
        if len(parts) < 4:
            errors.append({"source": name, "reason": "not in <id>/<type>/<view>/<seq>.pkl"})
            continue
        sid, typ, view, base = parts[-4:]
        seq = RawSequence(sid, typ, view, posixpath.splitext(base)[0], name, (name,))
        if seq.key in seen:
            errors.append({"source": name, "reason": f"same sequence {seq.key} as {seen[seq.key]}"})
            continue
        seen[seq.key] = name
        sequences.append(seq)
    return sorted(sequences, key=lambda s: s.key)
