"""Raw pose formats: one parser per format, and detection of the format from the files themselves.

| format | files | one file holds |
| --- | --- | --- |
| `openpose-json` | `*.json` | one frame: `{"people": [{"pose_keypoints_2d": [x, y, c, ...]}]}`, COCO-18 or BODY-25 |
| `gait3d-txt` | `*.txt` | one frame: a line per person, `a, b, x, y, c, ...` (two leading values, then joints) |
| `grew` | `*_2d_pose.txt` | one frame: GREW's flat row `a, b, x, y, c, ...` (COCO-17); `*_3d_pose.txt` is ignored |
| `pkl` | `*.pkl` | one sequence as OpenGait stores it: `(T, V, 3)`, or GREW's `(T, 2 + V*3)` rows |

A frame parser returns the people of the frame in file order: a float32 `(V, 3)` array each, or
None for a person listed without keypoints (kept so that OU-MVLP's selection indices still point
at the right person).  Anything unusable raises `FrameError` with the reason.
"""
from __future__ import annotations

import json
import posixpath
import re
from collections import Counter
from typing import Any, Callable

import numpy as np

from ray_gait.io.safe_pickle import loads_arrays, loads_restricted
from ray_gait.pose.io import GREW_LEADING_COLUMNS, pose_from_object

OPENPOSE_JSON = "openpose-json"
GAIT3D_TXT = "gait3d-txt"
GREW = "grew"
PKL = "pkl"
FORMATS = (OPENPOSE_JSON, GAIT3D_TXT, GREW, PKL)
AUTO = "auto"

JOINT_COUNTS = frozenset({17, 18, 25})       # COCO-17, COCO-18 (OpenPose), BODY-25
SELECTION_INDEX = "pose_selection_idx.pkl"   # OU-MVLP's per-sequence {frame: person index}
GREW_POSE_SUFFIX = "_2d_pose.txt"
GREW_3D_SUFFIX = "_3d_pose.txt"
DETECTION_TRIES = 5

Person = np.ndarray | None


class FrameError(ValueError):
    """A raw pose file that cannot be used (the message says why)."""


def file_format(name: str) -> str | None:
    """The format a file name belongs to, or None for files that are not pose inputs."""
    base = posixpath.basename(name)
    if base.startswith(".") or base == SELECTION_INDEX:
        return None
    if base.endswith(GREW_POSE_SUFFIX):
        return GREW
    if base.endswith(GREW_3D_SUFFIX):
        return None
    extension = posixpath.splitext(base)[1].lower()
    return {".json": OPENPOSE_JSON, ".txt": GAIT3D_TXT, ".pkl": PKL}.get(extension)


def files_of_format(files: list[str], fmt: str) -> list[str]:
    """The files (relative paths) that are inputs of a format."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown input format {fmt!r}: use auto or one of {', '.join(FORMATS)}")
    return [name for name in files if file_format(name) == fmt]


def _people(values: list[Any], person: int) -> np.ndarray:
    try:
        flat = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise FrameError(f"person {person}: keypoints are not numbers") from None
    if flat.ndim != 1 or flat.size % 3:
        raise FrameError(f"person {person}: wrong joint count ({flat.size} values, not x, y, score triples)")
    joints = flat.size // 3
    if joints not in JOINT_COUNTS:
        raise FrameError(f"person {person}: wrong joint count {joints} (expected 17, 18 or 25)")
    if not np.isfinite(flat).all():
        raise FrameError(f"person {person}: non-finite value (NaN or inf)")
    return flat.reshape(joints, 3).astype(np.float32)


def parse_openpose_json(data: bytes) -> list[Person]:
    """People of an OpenPose JSON frame (`people[i].pose_keypoints_2d`)."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise FrameError(f"not valid JSON ({exc})") from None
    people = doc.get("people") if isinstance(doc, dict) else None
    if not isinstance(people, list):
        raise FrameError("no 'people' list (not an OpenPose JSON frame)")
    found: list[Person] = []
    for i, person in enumerate(people):
        values = person.get("pose_keypoints_2d") if isinstance(person, dict) else None
        if values is None or (isinstance(values, list) and not values):
            found.append(None)
            continue
        if not isinstance(values, list):
            raise FrameError(f"person {i}: pose_keypoints_2d is not a list")
        found.append(_people(values, i))
    return found


def parse_csv_rows(data: bytes) -> list[Person]:
    """People of a Gait3D / GREW text frame: one comma-separated line each, two leading values dropped."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FrameError(f"not a text file ({exc})") from None
    found: list[Person] = []
    for i, line in enumerate(ln for ln in text.splitlines() if ln.strip()):
        fields = [f.strip() for f in line.strip().rstrip(",").split(",")]
        try:
            values = [float(f) for f in fields]
        except ValueError:
            raise FrameError(f"line {i + 1}: not comma-separated numbers") from None
        if len(values) <= GREW_LEADING_COLUMNS:
            raise FrameError(f"line {i + 1}: {len(values)} values, no joints after the two leading ones")
        found.append(_people(values[GREW_LEADING_COLUMNS:], i))
    return found


FRAME_PARSERS: dict[str, Callable[[bytes], list[Person]]] = {
    OPENPOSE_JSON: parse_openpose_json,
    GAIT3D_TXT: parse_csv_rows,
    GREW: parse_csv_rows,
}


def parse_frame(fmt: str, data: bytes) -> list[Person]:
    """People of one raw frame file of a per-frame format."""
    if fmt not in FRAME_PARSERS:
        raise ValueError(f"{fmt!r} is not a per-frame format")
    return FRAME_PARSERS[fmt](data)


def load_sequence_pkl(data: bytes) -> np.ndarray:
    """An OpenGait pose pickle as float32 (T, V, 3): (T, V, 3) as is, GREW's (T, 2 + V*3) rows reshaped."""
    try:
        obj = loads_arrays(data)
        grew_rows = (isinstance(obj, np.ndarray) and obj.ndim == 2 and obj.shape[1] > GREW_LEADING_COLUMNS
                     and (obj.shape[1] - GREW_LEADING_COLUMNS) % 3 == 0)
        pose = pose_from_object(obj, "grew" if grew_rows else "")
    except ValueError as exc:
        raise FrameError(str(exc)) from None
    if pose.shape[2] != 3:
        raise FrameError(f"expected x, y, score per joint, got shape {pose.shape}")
    if pose.shape[1] not in JOINT_COUNTS:
        raise FrameError(f"wrong joint count {pose.shape[1]} (expected 17, 18 or 25)")
    if pose.shape[0] == 0:
        raise FrameError("empty sequence (0 frames)")
    if not np.isfinite(pose).all():
        raise FrameError("non-finite value (NaN or inf)")
    return pose.astype(np.float32)


def _plain_int(value: Any) -> int | None:
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, np.integer)) and int(value) >= 0:
        return int(value)
    return None


def load_selection_index(data: bytes) -> dict[str, int]:
    """OU-MVLP's `pose_selection_idx.pkl`, `{frame number (str): person index}`, with the restricted unpickler."""
    obj = loads_restricted(data)
    if not isinstance(obj, dict):
        raise ValueError(f"expected a dict {{frame: person index}}, found {type(obj).__name__}")
    index = {}
    for key, value in obj.items():
        person = _plain_int(value)
        if not isinstance(key, (str, int)) or person is None:
            raise ValueError(f"entry {key!r}: {value!r} is not a frame name with a person index")
        index[str(key)] = person
    return index


_DIGITS_BEFORE_EXTENSION = re.compile(r"(\d+)\.json$")
_FOUR_DIGITS = re.compile(r"\d{4}")


def frame_key(name: str) -> str | None:
    """The frame number OU-MVLP's selection index uses for a JSON file (`0001.json`, `0001_keypoints.json`)."""
    base = posixpath.basename(name)
    match = _DIGITS_BEFORE_EXTENSION.search(base) or _FOUR_DIGITS.search(base)
    if match is None:
        return None
    return match.group(1) if match.groups() else match.group(0)


def _try_parse(fmt: str, data: bytes) -> None:
    if fmt == PKL:
        load_sequence_pkl(data)
    else:
        parse_frame(fmt, data)


def detect_format(files: list[str], read: Callable[[str], bytes], where: str = "") -> str:
    """The one pose format of the files, from their names and checked by parsing a few of them."""
    counts = Counter(fmt for fmt in map(file_format, files) if fmt is not None)
    place = f" below {where}" if where else ""
    if not counts:
        raise ValueError(f"no pose files (*.json, *.txt, *_2d_pose.txt, *.pkl){place}")
    if len(counts) > 1:
        found = ", ".join(f"{n} {fmt}" for fmt, n in counts.most_common())
        raise ValueError(f"pose files of several formats{place} ({found}); choose one with --format")
    fmt = next(iter(counts))
    reasons = []
    for name in files_of_format(files, fmt)[:DETECTION_TRIES]:
        try:
            _try_parse(fmt, read(name))
            return fmt
        except (FrameError, OSError) as exc:
            reasons.append(f"{name}: {exc}")
    raise ValueError(f"the files{place} are named like {fmt} but none of the first {len(reasons)} parse "
                     f"({'; '.join(reasons)})")
