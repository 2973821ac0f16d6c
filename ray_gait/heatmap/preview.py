"""PNG sheets of skeleton maps for a person to look at."""
from __future__ import annotations

import cv2
import numpy as np

from ray_gait.io import fs

PREVIEW_FRAMES = 8
SCALE = 2


def preview_sheet(heatmap: np.ndarray, frames: int = PREVIEW_FRAMES, scale: int = SCALE) -> np.ndarray:
    """A (2 rows: limbs, joints) x `frames` sheet of evenly spaced frames of (T, 2, H, W) uint8."""
    picks = np.linspace(0, heatmap.shape[0] - 1, num=min(frames, heatmap.shape[0])).round().astype(int)
    rows = []
    for channel in range(heatmap.shape[1]):
        tiles = [np.pad(heatmap[t, channel], 1, constant_values=80) for t in picks]
        rows.append(np.concatenate(tiles, axis=1))
    sheet = np.concatenate(rows, axis=0)
    return cv2.resize(sheet, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)


def write_png(loc: fs.Location, image: np.ndarray) -> None:
    """Encode an image as PNG and write it atomically."""
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise ValueError(f"could not encode {loc.uri} as PNG")
    fs.write_bytes_atomic(loc, encoded.tobytes())
