"""A PNG sheet to eyeball the synthetic data: skeletons over silhouettes.

Each row is one sequence: first a thumbnail of the whole camera frame (skeleton of the middle
frame, path of the hip centre, person's scale and position), then frames spread over about one
gait cycle, each the 64x64 silhouette enlarged with the estimated skeleton mapped onto it.
Colours: left side orange, right side blue, face and trunk green; missing joints are not drawn.
"""
from __future__ import annotations

import logging
import os
from typing import Sequence

import cv2
import numpy as np

from ray_gait.io import fs
from ray_gait.synth.dataset import SequenceSpec, SynthConfig, read_array, read_config, simulate_sequence
from ray_gait.synth.kinematics import LEFT, RIGHT

__all__ = ["SKELETON", "default_rows", "render_preview", "write_preview"]

log = logging.getLogger(__name__)

# COCO-17 limbs (joint pairs).
SKELETON = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
    (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)
_LEFT_BGR = (0, 140, 255)
_RIGHT_BGR = (255, 150, 0)
_MID_BGR = (60, 200, 60)
_CELL = 128
_THUMB_W = 228


def _colour(a: int, b: int) -> tuple[int, int, int]:
    """Colour of a joint or limb by body side."""
    if a in LEFT and (b in LEFT or b == a):
        return _LEFT_BGR
    if a in RIGHT and (b in RIGHT or b == a):
        return _RIGHT_BGR
    return _MID_BGR


def _draw_skeleton(img: np.ndarray, xy: np.ndarray, valid: np.ndarray, radius: int, width: int) -> None:
    """Draw limbs and joints of one frame (pixel positions ``xy (17, 2)``) onto ``img``."""
    pts = np.round(xy).astype(int).tolist()
    for a, b in SKELETON:
        if valid[a] and valid[b]:
            cv2.line(img, tuple(pts[a]), tuple(pts[b]), _colour(a, b), width, cv2.LINE_AA)
    for j in range(17):
        if valid[j]:
            cv2.circle(img, tuple(pts[j]), radius, _colour(j, j), -1, cv2.LINE_AA)


def default_rows(cfg: SynthConfig) -> list[SequenceSpec]:
    """Rows of the default sheet: 3 ids x 3 views of the first gallery type, then bag and coat."""
    views = sorted({cfg.views[0], cfg.views[len(cfg.views) // 2], cfg.views[-1]})
    ids = list(range(1, min(cfg.ids, 3) + 1))
    rows = [(s, cfg.gallery[0], v) for s in ids for v in views]
    middle = cfg.views[len(cfg.views) // 2]
    for prefix in ("bg", "cl"):
        extra = [t for t in cfg.types if t.startswith(prefix + "-")]
        if extra:
            rows.append((1, extra[0], middle))
    return [
        SequenceSpec(id=f"{s:05d}", type=t, view=f"{v:03d}", seq=f"{v:03d}", subject=s, view_deg=v,
                     condition=t.split("-")[0], seed=cfg.seed)
        for s, t, v in rows
    ]


def render_preview(cfg: SynthConfig, rows: Sequence[SequenceSpec] | None = None, frames: int = 8) -> np.ndarray:
    """The preview sheet as a BGR uint8 image, one row per sequence in ``rows``."""
    rows = list(rows) if rows is not None else default_rows(cfg)
    width, height = cfg.image_size
    thumb_h = _CELL
    thumb_scale = min(_THUMB_W / width, thumb_h / height)
    header = 24
    sheet = np.full((header + len(rows) * _CELL, _THUMB_W + frames * _CELL, 3), 255, np.uint8)
    cv2.putText(sheet, "left = orange, right = blue; frames ~ one gait cycle", (6, 17),
                cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    for r, spec in enumerate(rows):
        render = simulate_sequence(spec, cfg)
        y0 = header + r * _CELL
        pose = render.pose
        valid = pose[..., 2] > 0
        n = pose.shape[0]
        cycle = max(int(round(cfg.fps * 120.0 / 110.0)), frames)
        picks = np.linspace(0, min(cycle, n - 1), frames).round().astype(int)

        thumb = np.full((thumb_h, _THUMB_W, 3), 235, np.uint8)
        tw, th = int(width * thumb_scale), int(height * thumb_scale)
        cv2.rectangle(thumb, (0, 0), (tw - 1, th - 1), (120, 120, 120), 1)
        hips = render.true_uv[:, 11:13].mean(axis=1) * thumb_scale
        cv2.polylines(thumb, [np.round(hips).astype(np.int32)], False, (150, 150, 150), 1, cv2.LINE_AA)
        mid = n // 2
        _draw_skeleton(thumb, pose[mid, :, :2] * thumb_scale, valid[mid], 1, 1)
        label = f"{spec.id} {spec.type} {spec.view}"
        cv2.putText(thumb, label, (4, thumb_h - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        sheet[y0:y0 + thumb_h, :_THUMB_W] = thumb

        zoom = _CELL / cfg.sil_size
        for c, t in enumerate(picks.tolist()):
            sil = cv2.resize(render.sil[t], (_CELL, _CELL), interpolation=cv2.INTER_NEAREST)
            cell = cv2.cvtColor((sil // 2 + 40).astype(np.uint8), cv2.COLOR_GRAY2BGR)
            sx, sy, tx, ty = render.sil_map[t]
            xy = np.stack([pose[t, :, 0] * sx + tx, pose[t, :, 1] * sy + ty], -1)
            _draw_skeleton(cell, (xy + 0.5) * zoom - 0.5, valid[t], 3, 2)
            cv2.putText(cell, str(t), (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1, cv2.LINE_AA)
            x0 = _THUMB_W + c * _CELL
            sheet[y0:y0 + _CELL, x0:x0 + _CELL] = cell
    return sheet


def _check_against_disk(root: fs.Location, rows: Sequence[SequenceSpec], cfg: SynthConfig) -> None:
    """Warn when a stored pose differs from its regeneration (wrong seed or edited data)."""
    for spec in rows:
        loc = root.join("pose", spec.relpath)
        if not fs.exists(loc):
            continue
        stored = read_array(loc.uri)
        if not np.array_equal(stored, simulate_sequence(spec, cfg).pose):
            log.warning("preview: %s differs from its regeneration with seed %d", loc.uri, cfg.seed)


def write_preview(
    source: SynthConfig | str | os.PathLike,
    png_path: str | os.PathLike,
    rows: Sequence[SequenceSpec] | None = None,
    frames: int = 8,
) -> str:
    """Write the preview PNG (a path or URI) of a config, or of a generated data set folder (its ``synth.json``)."""
    if isinstance(source, SynthConfig):
        cfg = source
    else:
        cfg = read_config(source)
    rows = list(rows) if rows is not None else default_rows(cfg)
    if not isinstance(source, SynthConfig):
        _check_against_disk(fs.resolve(str(source)), rows, cfg)
    sheet = render_preview(cfg, rows, frames)
    out = fs.resolve(str(png_path))
    encoded, png = cv2.imencode(".png", sheet)
    if not encoded:
        raise OSError(f"cannot encode preview {out.uri}")
    fs.write_bytes_atomic(out, png.tobytes())
    log.info("preview: %d rows -> %s", len(rows), out.uri)
    return out.uri
