"""Pinhole camera and the placement of a walk in front of it.

World: ground plane z = 0, the camera stands at ``(0, 0, elevation)`` and looks along +y, tilted
down by ``pitch_deg``; image x grows to the right (+x world), image y downwards.
A view angle ``v`` (degrees) is the walking direction against the camera: 0 walks towards the
camera, 90 crosses from image left to image right (the walker's right side faces the camera),
180 walks away.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Camera", "draw_camera", "heading_for_view"]


@dataclass(frozen=True)
class Camera:
    """Intrinsics (pixels) and pose of a camera of ``width`` x ``height`` pixels."""

    width: int
    height: int
    focal: float
    cx: float
    cy: float
    elevation: float
    pitch_deg: float

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        """World points ``(..., 3)`` -> camera coordinates (x right, y down, z forward)."""
        x = points[..., 0]
        y = -(points[..., 2] - self.elevation)
        z = points[..., 1]
        p = np.radians(self.pitch_deg)
        return np.stack([x, y * np.cos(p) - z * np.sin(p), y * np.sin(p) + z * np.cos(p)], -1)

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World points ``(..., 3)`` -> pixel coordinates ``(..., 2)`` and depth ``(...)`` (m)."""
        cam = self.to_camera(points)
        depth = cam[..., 2]
        uv = np.stack([self.focal * cam[..., 0] / depth + self.cx, self.focal * cam[..., 1] / depth + self.cy], -1)
        return uv, depth


def draw_camera(rng: np.random.Generator, width: int, height: int) -> Camera:
    """Draw a camera of the given image size: focal length, elevation and a slight downward pitch."""
    return Camera(
        width=width,
        height=height,
        focal=float(width * rng.uniform(0.74, 0.84)),
        cx=width / 2 + float(rng.normal(0.0, 4.0)),
        cy=height / 2 + float(rng.normal(0.0, 4.0)),
        elevation=float(rng.uniform(0.9, 1.5)),
        pitch_deg=float(rng.uniform(0.0, 6.0)),
    )


def heading_for_view(view_deg: float) -> float:
    """World heading angle (degrees from +x towards +y) of a walk seen at ``view_deg``."""
    return float(view_deg) - 90.0
