"""Binary silhouettes of the 3D walker, cropped and resized like OpenGait's pretreatment.

The body is a set of 3D primitives: tapered limbs as capsules, the head as a sphere, the trunk as
the convex hull of elliptical rings (shoulders, chest, waist, pelvis, crotch). A coat widens the
rings, thickens the sleeves and adds a hem around the thighs; a bag is a box (shoulder bag at the
hip with a strap, hand bag under the wrist, backpack behind the chest). The primitives are
projected with the sequence's camera and drawn with cv2 on a canvas where the person is about
128 px tall; each frame is then cropped to its rows with foreground, resized to height 64 with
cubic interpolation and cut to 64 columns around the horizontal centre of mass
(``datasets/pretreatment.py`` of OpenGait).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ray_gait.synth.body import BodyShape, Carry, Coat
from ray_gait.synth.camera import Camera
from ray_gait.synth.kinematics import Body3D

__all__ = ["Capsules", "Outfit", "body_capsules", "pretreat", "render_silhouettes"]

_CANVAS_HEIGHT = 128.0
_PAD = 4
_SHIFT = 3
_ONE = 1 << _SHIFT
_RING = np.stack([np.cos(np.arange(8) * np.pi / 4), np.sin(np.arange(8) * np.pi / 4)], -1)


@dataclass(frozen=True)
class Capsules:
    """Capsules ``start``/``end`` ``(T, C, 3)`` with radii ``(C,)`` and the joints each contains."""

    start: np.ndarray
    end: np.ndarray
    radius: np.ndarray
    joints: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class Outfit:
    """What a sequence wears: a girth factor for everyday clothes, an optional coat and bag."""

    clothing: float = 1.0
    coat: Coat | None = None
    carry: Carry | None = None


def _lerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """Point at fraction ``t`` from ``a`` to ``b``."""
    return a + t * (b - a)


def body_capsules(body: Body3D, shape: BodyShape) -> Capsules:
    """Coarse body parts used as occluders of the pose estimator's joints."""
    j = body.joints
    parts = [
        (body.head_center, body.head_center, shape.head_radius, ()),
        (body.neck_base, body.head_center, shape.neck_radius, ()),
        (body.pelvis, body.neck_base, 0.5 * (shape.chest_half_width + shape.chest_half_depth), ()),
        (j[:, 5], j[:, 11], 0.7 * shape.chest_half_depth, (5, 11)),
        (j[:, 6], j[:, 12], 0.7 * shape.chest_half_depth, (6, 12)),
        (j[:, 11], j[:, 13], shape.thigh_radius, (11, 13)),
        (j[:, 12], j[:, 14], shape.thigh_radius, (12, 14)),
        (j[:, 13], j[:, 15], shape.calf_radius, (13, 15)),
        (j[:, 14], j[:, 16], shape.calf_radius, (14, 16)),
        (j[:, 5], j[:, 7], shape.upper_arm_radius, (5, 7)),
        (j[:, 6], j[:, 8], shape.upper_arm_radius, (6, 8)),
        (j[:, 7], j[:, 9], shape.forearm_radius, (7, 9)),
        (j[:, 8], j[:, 10], shape.forearm_radius, (8, 10)),
    ]
    return Capsules(
        start=np.stack([p[0] for p in parts], axis=1),
        end=np.stack([p[1] for p in parts], axis=1),
        radius=np.array([p[2] for p in parts]),
        joints=tuple(p[3] for p in parts),
    )


def _limb_capsules(body: Body3D, shape: BodyShape, outfit: Outfit) -> tuple[list, list, list]:
    """Drawing capsules (start, end, radius m) of limbs, neck, feet and hands, clothes included."""
    j = body.joints
    c = outfit.clothing
    sleeve = c * (outfit.coat.sleeve if outfit.coat is not None else 1.0)
    starts, ends, radii = [], [], []

    def add(a: np.ndarray, b: np.ndarray, r: float) -> None:
        """Append one capsule."""
        starts.append(a)
        ends.append(b)
        radii.append(r)

    for side in (0, 1):
        hip, knee, ankle = j[:, 11 + side], j[:, 13 + side], j[:, 15 + side]
        shoulder, elbow, wrist = j[:, 5 + side], j[:, 7 + side], j[:, 9 + side]
        heel, toe = body.heel[:, side], body.toe[:, side]
        add(hip, _lerp(hip, knee, 0.5), shape.thigh_radius * c)
        add(_lerp(hip, knee, 0.5), knee, 0.78 * shape.thigh_radius * c)
        add(knee, _lerp(knee, ankle, 0.45), 1.05 * shape.calf_radius * c)
        add(_lerp(knee, ankle, 0.45), ankle, 0.72 * shape.calf_radius * c)
        add(ankle, _lerp(heel, toe, 0.4), 0.6 * shape.calf_radius)
        add(heel, toe, 0.45 * shape.ankle_height)
        add(shoulder, elbow, shape.upper_arm_radius * sleeve)
        add(elbow, wrist, shape.forearm_radius * sleeve)
        add(wrist, body.hand[:, side], 0.9 * shape.forearm_radius)
    add(body.neck_base, body.head_center, shape.neck_radius)
    return starts, ends, radii


def _rings(centre: np.ndarray, rot: np.ndarray, specs: list[tuple[float, float, float]]) -> np.ndarray:
    """Points ``(T, 8 * len(specs), 3)`` of horizontal ellipses (height, half width, half depth)."""
    local = np.concatenate(
        [np.stack([hd * _RING[:, 0], hw * _RING[:, 1], np.full(8, z)], -1) for z, hw, hd in specs])
    return centre[:, None] + np.einsum("tij,kj->tki", rot, local)


def _trunk_points(body: Body3D, shape: BodyShape, outfit: Outfit) -> np.ndarray:
    """Hull points of the trunk (and coat), ``(T, N, 3)``."""
    w = outfit.coat.widen if outfit.coat is not None else 1.0
    c = outfit.clothing * w
    s = shape
    thorax = _rings(body.pelvis, body.thorax_rot, [
        (s.spine - s.shoulder_drop, s.shoulder_width / 2 + 0.5 * s.upper_arm_radius * w, 0.75 * s.chest_half_depth * c),
        (0.72 * s.spine, s.chest_half_width * c, s.chest_half_depth * c),
        (0.38 * s.spine, 0.46 * (s.chest_half_width + s.pelvis_half_width) * c, 0.9 * s.chest_half_depth * c),
    ])
    pelvis = _rings(body.pelvis, body.pelvis_rot, [
        (0.0, s.pelvis_half_width * c, s.pelvis_half_depth * c),
        (-0.055 * s.height, 0.8 * s.pelvis_half_width * c, 0.85 * s.pelvis_half_depth * c),
    ])
    points = [thorax, pelvis]
    if outfit.coat is not None:
        coat = outfit.coat
        for side in (0, 1):
            hip, knee = body.joints[:, 11 + side], body.joints[:, 13 + side]
            radius = shape.thigh_radius * outfit.clothing * (1.0 - 0.2 * coat.hem) + coat.flare
            points.append(_rings(_lerp(hip, knee, coat.hem), body.pelvis_rot, [(0.0, radius, radius)]))
    return np.concatenate(points, axis=1)


def _box(centre: np.ndarray, rot: np.ndarray, size: tuple[float, float, float]) -> np.ndarray:
    """Corners ``(T, 8, 3)`` of boxes of ``size`` (x, y, z extent) around ``centre`` with axes ``rot``."""
    signs = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=np.float64)
    return centre[:, None] + np.einsum("tij,kj->tki", rot, signs * np.asarray(size) / 2)


def _bag(body: Body3D, shape: BodyShape, carry: Carry) -> tuple[np.ndarray, list]:
    """Hull points of the bag ``(T, 8, 3)`` and its strap capsules."""
    length, width, height = carry.size
    side = 0 if carry.side > 0 else 1
    if carry.kind == "backpack":
        centre = body.pelvis + np.einsum(
            "tij,j->ti", body.thorax_rot,
            np.array([-(shape.chest_half_depth + length / 2), 0.0, 0.6 * shape.spine]))
        return _box(centre, body.thorax_rot, carry.size), []
    if carry.kind == "hand":
        centre = body.hand[:, side] - np.array([0.0, 0.0, height / 2 - 0.02])
        return _box(centre, body.pelvis_rot, carry.size), []
    offset = np.array([-0.02, carry.side * (shape.pelvis_half_width + width / 2 + 0.01), 0.04])
    centre = body.pelvis + np.einsum("tij,j->ti", body.pelvis_rot, offset)
    top = centre + np.array([0.0, 0.0, height / 2])
    strap = [(top, body.joints[:, 6 - side], 0.015)]
    return _box(centre, body.pelvis_rot, carry.size), strap


def pretreat(img: np.ndarray, size: int = 64) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """OpenGait's silhouette pretreatment of one frame and its pixel map.

    Crops to the rows with foreground, resizes to height ``size`` (cubic), cuts ``size`` columns
    centred on the column where the cumulative mass passes half. Returns the uint8 image and
    ``(kx, ky, dx, dy)``: a canvas point (x, y) lands at ``(x * kx + dx, y * ky + dy)``.
    """
    rows = np.flatnonzero(img.any(axis=1))
    if rows.size == 0:
        return np.zeros((size, size), np.uint8), (0.0, 0.0, 0.0, 0.0)
    top, bottom = int(rows[0]), int(rows[-1])
    crop = img[top:bottom + 1]
    new_w = max(int(size * crop.shape[1] / crop.shape[0]), 1)
    resized = cv2.resize(crop, (new_w, size), interpolation=cv2.INTER_CUBIC)
    mass = resized.sum(axis=0, dtype=np.int64).cumsum()
    centre = int(np.searchsorted(mass, mass[-1] / 2, side="right"))
    half = size // 2
    left, right = centre - half, centre + half
    if left <= 0 or right >= new_w:
        out = np.zeros((size, size), np.uint8)
        lo, hi = max(left, 0), min(right, new_w)
        out[:, lo - left:hi - left] = resized[:, lo:hi]
    else:
        out = resized[:, left:right]
    kx = new_w / crop.shape[1]
    ky = size / crop.shape[0]
    return out, (kx, ky, 0.5 * kx - 0.5 - left, (0.5 - top) * ky - 0.5)


def render_silhouettes(
    body: Body3D,
    shape: BodyShape,
    camera: Camera,
    outfit: Outfit,
    rng: np.random.Generator,
    size: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """Render ``(T, size, size)`` uint8 silhouettes and the per-frame map from image pixels.

    The map ``(T, 4)`` holds ``(sx, sy, tx, ty)``: image pixel (u, v) lands at
    ``(u * sx + tx, v * sy + ty)`` in the silhouette (used to draw skeletons over silhouettes).
    """
    starts, ends, radii = _limb_capsules(body, shape, outfit)
    hulls = [_trunk_points(body, shape, outfit)]
    if outfit.carry is not None:
        box, straps = _bag(body, shape, outfit.carry)
        hulls.append(box)
        for a, b, r in straps:
            starts.append(a)
            ends.append(b)
            radii.append(r)
    if rng.random() < 0.25:
        feet = np.concatenate([body.heel, body.toe], axis=1).mean(axis=1) * np.array([1.0, 1.0, 0.0])
        angle = rng.uniform(0, 2 * np.pi)
        direction = np.array([np.cos(angle), np.sin(angle), 0.0])
        length = rng.uniform(0.3, 0.7)
        ring = np.stack([0.15 * np.cos(np.arange(8) * np.pi / 4), 0.15 * np.sin(np.arange(8) * np.pi / 4)], -1)
        ground = np.concatenate([ring, np.zeros((8, 1))], -1)
        hulls.append(np.concatenate([feet[:, None] + ground, feet[:, None] + ground + length * direction], axis=1))

    n = body.joints.shape[0]
    cap = np.stack([np.stack(starts, 1), np.stack(ends, 1)], 2)  # (T, C, 2, 3)
    cap_uv, cap_depth = camera.project(cap)
    cap_px = camera.focal * np.asarray(radii)[None] / cap_depth.mean(axis=-1)  # (T, C)
    head_uv, head_depth = camera.project(body.head_center)
    head_px = camera.focal * 1.08 * shape.head_radius / head_depth
    hull_uv = [camera.project(h)[0] for h in hulls]

    lo = np.minimum((cap_uv - cap_px[..., None, None]).min(axis=(1, 2)), head_uv - head_px[:, None])
    hi = np.maximum((cap_uv + cap_px[..., None, None]).max(axis=(1, 2)), head_uv + head_px[:, None])
    for h in hull_uv:
        lo = np.minimum(lo, h.min(axis=1))
        hi = np.maximum(hi, h.max(axis=1))
    scale = _CANVAS_HEIGHT / float(np.median(hi[:, 1] - lo[:, 1]))
    origin = lo - _PAD / scale  # canvas (x, y) = (uv - origin) * scale
    dims = np.ceil((hi - lo) * scale).astype(int) + 2 * _PAD + 1

    def canvas(points: np.ndarray) -> np.ndarray:
        """Image pixels ``(T, ..., 2)`` to fixed-point canvas coordinates."""
        shape_ = (n,) + (1,) * (points.ndim - 2) + (2,)
        return np.round((points - origin.reshape(shape_)) * scale * _ONE).astype(np.int32)

    cap_c = canvas(cap_uv).tolist()
    thick = np.maximum(np.round(2 * cap_px * scale), 1).astype(int).tolist()
    head_c = canvas(head_uv).tolist()
    head_r = np.round(head_px * scale * _ONE).astype(int).tolist()
    hull_c = [canvas(h) for h in hull_uv]
    pelvis_c = canvas(camera.project(body.pelvis)[0])
    holes = rng.random(n) < 0.04
    hole_xy = (pelvis_c + rng.normal(0.0, 10.0 * _ONE, size=(n, 2))).astype(int).tolist()
    hole_r = (rng.uniform(2.0, 5.0, size=n) * _ONE).astype(int).tolist()

    sil = np.empty((n, size, size), np.uint8)
    pixel_map = np.empty((n, 4))
    dims_l = dims.tolist()
    for t in range(n):
        img = np.zeros((dims_l[t][1], dims_l[t][0]), np.uint8)
        for h in hull_c:
            cv2.fillConvexPoly(img, cv2.convexHull(h[t]), 255, cv2.LINE_8, _SHIFT)
        for (a, b), k in zip(cap_c[t], thick[t]):
            cv2.line(img, a, b, 255, k, cv2.LINE_8, _SHIFT)
        cv2.circle(img, head_c[t], head_r[t], 255, -1, cv2.LINE_8, _SHIFT)
        if holes[t]:
            cv2.circle(img, hole_xy[t], hole_r[t], 0, -1, cv2.LINE_8, _SHIFT)
        sil[t], (kx, ky, dx, dy) = pretreat(img, size)
        pixel_map[t] = (scale * kx, scale * ky, dx - origin[t, 0] * scale * kx, dy - origin[t, 1] * scale * ky)
    return sil, pixel_map
