"""3D forward kinematics of a walking person over the gait cycle.

Frames: the *heading frame* has x along the walking direction, y to the walker's left, z up, and
its origin on the ground; :func:`simulate_walk` turns it about z by the heading angle and moves it
to the start point to give world coordinates (ground plane z = 0).
The left leg's phase is 0 at left heel strike; the right leg runs half a cycle later. Normative
joint-angle curves (thigh, knee, foot pitch over the cycle) follow the usual sagittal gait
kinematics; each identity scales, shifts and reshapes them (see :class:`~ray_gait.synth.body.GaitStyle`).
The forward speed matches the stride on average but is not solved per frame, so a stance foot
may slide a few centimetres; hip-centred poses and cropped silhouettes do not see it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ray_gait.pose.skeleton import COCO17_JOINTS, COCO17_LEFT, COCO17_RIGHT
from ray_gait.synth.body import BodyShape, GaitStyle

__all__ = [
    "COCO17",
    "LEFT",
    "RIGHT",
    "Body3D",
    "gait_curves",
    "simulate_walk",
    "walking_speed",
]

COCO17 = COCO17_JOINTS
LEFT = COCO17_LEFT
RIGHT = COCO17_RIGHT

# Phase of toe-off: the stance phase is [0, STANCE) of the cycle.
STANCE = 0.6
# Relative modulation of the forward speed at twice the cycle frequency.
SPEED_RIPPLE = 0.05
# Gain on the normative thigh excursion (its knots are conservative).
THIGH_GAIN = 1.2

# (phase, degrees) knots of the normative curves; thigh angle is from the vertical, forward > 0.
_THIGH_KNOTS = (
    (0.0, 20), (0.1, 17), (0.2, 9), (0.3, 0), (0.4, -9), (0.5, -17), (0.55, -19), (0.6, -14),
    (0.7, 0), (0.8, 14), (0.87, 20), (0.93, 21),
)
_KNEE_KNOTS = (
    (0.0, 4), (0.05, 10), (0.13, 17), (0.25, 11), (0.4, 4), (0.5, 7), (0.6, 35), (0.7, 60),
    (0.75, 58), (0.8, 48), (0.9, 20), (0.96, 6),
)
_FOOT_KNOTS = (
    (0.0, 18), (0.06, 5), (0.1, 0), (0.4, 0), (0.5, -8), (0.6, -30), (0.65, -36), (0.7, -25),
    (0.8, -8), (0.9, 8), (0.96, 15),
)
_N_FIT = 6


def _fourier_fit(knots: tuple[tuple[float, float], ...]) -> np.ndarray:
    """Smooth periodic fit of a knot table: ``(_N_FIT + 1, 2)`` cosine/sine coefficients."""
    xp = np.array([k[0] for k in knots] + [1.0])
    fp = np.array([k[1] for k in knots] + [knots[0][1]], dtype=np.float64)
    grid = np.arange(512) / 512
    spectrum = np.fft.rfft(np.interp(grid, xp, fp)) / 512
    coef = np.zeros((_N_FIT + 1, 2))
    coef[0, 0] = spectrum[0].real
    coef[1:, 0] = 2 * spectrum[1:_N_FIT + 1].real
    coef[1:, 1] = -2 * spectrum[1:_N_FIT + 1].imag
    return coef


_THIGH = _fourier_fit(_THIGH_KNOTS)
_KNEE = _fourier_fit(_KNEE_KNOTS)
_FOOT = _fourier_fit(_FOOT_KNOTS)


def _fourier(coef: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """Evaluate a Fourier series (row k = harmonic k, [cos, sin]) at phases; shape of ``phase``."""
    k = np.arange(coef.shape[0])
    angle = 2 * np.pi * np.multiply.outer(phase, k)
    return np.cos(angle) @ coef[:, 0] + np.sin(angle) @ coef[:, 1]


def _bump(phase: np.ndarray, centre: float, width: float) -> np.ndarray:
    """Periodic Gaussian bump on the unit cycle."""
    d = (phase - centre + 0.5) % 1.0 - 0.5
    return np.exp(-0.5 * (d / width) ** 2)


def gait_curves(
    style: GaitStyle, phase: np.ndarray, side: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thigh, knee and foot-pitch angles (degrees) of one leg at ``phase`` (its own phase).

    ``side`` is +1 for left, -1 for right; the style's asymmetry splits between the two legs.
    """
    hip_gain = 1.0 - side * style.asym_hip / 2
    knee_gain = 1.0 - side * style.asym_knee / 2
    thigh_mean = _THIGH[0, 0]
    thigh = (_fourier(_THIGH, phase) - thigh_mean) * THIGH_GAIN * style.hip_scale * hip_gain
    thigh += thigh_mean + style.hip_mean + _fourier(np.vstack([[0, 0], style.hip_harmonics]), phase)
    knee_phase = phase - style.knee_timing
    stance_weight = _bump(knee_phase, 0.15, 0.09)
    gain = style.knee_swing_scale + (style.knee_stance_scale - style.knee_swing_scale) * stance_weight
    knee = _fourier(_KNEE, knee_phase) * gain * knee_gain
    knee += _fourier(np.vstack([[0, 0], style.knee_harmonics]), phase) * (0.3 + 0.7 * (1 - stance_weight))
    knee = np.maximum(knee, 0.0)
    foot = _fourier(_FOOT, phase) * style.foot_scale
    return thigh, knee, foot


def _rot_x(a: np.ndarray) -> np.ndarray:
    """Rotations about x, ``(T, 3, 3)`` from angles in radians ``(T,)``."""
    c, s, o, z = np.cos(a), np.sin(a), np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([o, z, z], -1), np.stack([z, c, -s], -1), np.stack([z, s, c], -1)], -2)


def _rot_y(a: np.ndarray) -> np.ndarray:
    """Rotations about y (positive tips +z towards +x), ``(T, 3, 3)``."""
    c, s, o, z = np.cos(a), np.sin(a), np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([c, z, s], -1), np.stack([z, o, z], -1), np.stack([-s, z, c], -1)], -2)


def _rot_z(a: np.ndarray) -> np.ndarray:
    """Rotations about z (positive turns +x towards +y), ``(T, 3, 3)``."""
    c, s, o, z = np.cos(a), np.sin(a), np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([c, -s, z], -1), np.stack([s, c, z], -1), np.stack([z, z, o], -1)], -2)


def _apply(rot: np.ndarray, vec: np.ndarray) -> np.ndarray:
    """Rotate ``(T, 3)`` or ``(3,)`` vectors by ``(T, 3, 3)`` matrices."""
    return np.einsum("tij,...tj->...ti", rot, np.broadcast_to(vec, rot.shape[:-1]))


def _sagittal(angle_deg: np.ndarray, abduction_deg: float, side: int) -> np.ndarray:
    """Unit vectors hanging down, swung forward by ``angle`` and outwards by ``abduction``."""
    a = np.radians(angle_deg)
    b = np.radians(abduction_deg)
    return np.stack([np.sin(a) * np.cos(b), np.full_like(a, side * np.sin(b)), -np.cos(a) * np.cos(b)], -1)


@dataclass(frozen=True)
class _Legs:
    """Leg points in the heading frame relative to the pelvis centre, index 0 left, 1 right."""

    hip: np.ndarray  # (T, 2, 3)
    knee: np.ndarray
    ankle: np.ndarray
    heel: np.ndarray
    toe: np.ndarray


def _legs(shape: BodyShape, style: GaitStyle, phase_left: np.ndarray) -> _Legs:
    """Forward kinematics of both legs relative to the pelvis centre."""
    yaw = np.radians(style.pelvis_yaw) * np.cos(2 * np.pi * phase_left)
    roll = np.radians(style.obliquity) * np.sin(2 * np.pi * phase_left)
    pelvis_rot = _rot_z(-yaw) @ _rot_x(roll)
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("hip", "knee", "ankle", "heel", "toe")}
    for side, phase in ((1, phase_left), (-1, phase_left + 0.5 + style.asym_phase)):
        thigh, knee, foot = gait_curves(style, phase % 1.0, side)
        hip = _apply(pelvis_rot, np.array([0.0, side * shape.hip_width / 2, 0.0]))
        knee_pt = hip + shape.thigh * _sagittal(thigh, style.step_abduction, side)
        ankle = knee_pt + shape.shank * _sagittal(thigh - knee, style.step_abduction, side)
        p = np.radians(foot)
        tau = np.radians(style.toe_out)
        fwd = np.stack([np.cos(p) * np.cos(tau), side * np.cos(p) * np.sin(tau), np.sin(p)], -1)
        down = np.stack([np.sin(p), np.zeros_like(p), -np.cos(p)], -1)
        base = ankle + shape.ankle_height * down
        out["hip"].append(hip)
        out["knee"].append(knee_pt)
        out["ankle"].append(ankle)
        out["heel"].append(base - shape.heel_back * fwd)
        out["toe"].append(base + (shape.foot_length - shape.heel_back) * fwd)
    return _Legs(**{k: np.stack(v, axis=1) for k, v in out.items()})


def walking_speed(shape: BodyShape, style: GaitStyle) -> float:
    """Walking speed (m/s) matching the stride: ankle travel from heel strike to toe-off per stance time."""
    grid = np.linspace(0.0, 1.0, 200, endpoint=False)
    ankle_x = _legs(shape, style, grid).ankle[:, 0, 0]
    excursion = float(np.interp(0.0, grid, ankle_x) - np.interp(STANCE, grid, ankle_x))
    return max(excursion, 0.2) * (style.cadence / 120.0) / STANCE


@dataclass(frozen=True)
class Body3D:
    """World coordinates (m) of one walk, ``T`` frames.

    ``joints`` are the COCO-17 keypoints; the rest are what the silhouette renderer needs.
    Index 0 of the paired arrays is left, 1 right.
    """

    joints: np.ndarray  # (T, 17, 3)
    head_center: np.ndarray  # (T, 3)
    neck_base: np.ndarray  # (T, 3)
    pelvis: np.ndarray  # (T, 3)
    heel: np.ndarray  # (T, 2, 3)
    toe: np.ndarray  # (T, 2, 3)
    hand: np.ndarray  # (T, 2, 3) tip of the hand
    thorax_rot: np.ndarray  # (T, 3, 3) thorax axes in the world
    pelvis_rot: np.ndarray  # (T, 3, 3) pelvis axes in the world
    heading: np.ndarray  # (3,) unit walking direction in the world


def _arms(shape: BodyShape, style: GaitStyle, phase_left: np.ndarray, shoulder: np.ndarray, arm_yaw: np.ndarray,
          arm_gain: tuple[float, float]) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """(elbows, wrists, hand tips), each [left, right] of (T, 3): the arms swing in antiphase with the legs, from
    the shoulders (T, 2, 3), turned with the thorax (`arm_yaw`), each swing scaled by its `arm_gain`."""
    elbows, wrists, hands = [], [], []
    for i, (side, phase) in enumerate(((1, phase_left), (-1, phase_left + 0.5 + style.asym_phase))):
        swing = np.cos(2 * np.pi * (phase - style.arm_lag))
        amp = style.arm_amplitude * (1.0 - side * style.asym_arm / 2) * arm_gain[i]
        flex = style.arm_offset - amp * swing
        elbow_flex = style.elbow_base + style.elbow_amplitude * arm_gain[i] * (0.5 - 0.5 * swing)
        upper = _apply(arm_yaw, _sagittal(flex, style.arm_abduction, side))
        lower = _apply(arm_yaw, _sagittal(flex + elbow_flex, 0.5 * style.arm_abduction, side))
        elbow = shoulder[:, i] + shape.upper_arm * upper
        wrist = elbow + shape.forearm * lower
        elbows.append(elbow)
        wrists.append(wrist)
        hands.append(wrist + shape.hand * lower)
    return elbows, wrists, hands


def simulate_walk(
    shape: BodyShape,
    style: GaitStyle,
    phase_left: np.ndarray,
    times: np.ndarray,
    heading_deg: float,
    centre: tuple[float, float],
    arm_gain: tuple[float, float] = (1.0, 1.0),
    extra_lean: float = 0.0,
) -> Body3D:
    """Pose a walker at each frame: ``phase_left`` (T,) cycle phase, ``times`` (T,) seconds.

    The pelvis advances along ``heading_deg`` (world angle of the walking direction from +x
    towards +y) at :func:`walking_speed`, a little faster at double support, riding at the
    height that puts the lowest heel or toe on the ground (z = 0); its mean position over the
    frames is ``centre`` (x, y). ``arm_gain`` scales the (left, right) arm
    swing (bags).
    """
    legs = _legs(shape, style, phase_left)
    n = phase_left.shape[0]
    c = 2 * np.pi * phase_left
    lowest = np.minimum(legs.heel[..., 2].min(axis=1), legs.toe[..., 2].min(axis=1))
    speed = walking_speed(shape, style)
    velocity = speed * (1.0 + SPEED_RIPPLE * np.cos(2 * c))
    dt = np.diff(times)
    forward = np.concatenate([[0.0], np.cumsum(0.5 * (velocity[1:] + velocity[:-1]) * dt)])
    pelvis = np.stack([forward - forward.mean(), style.sway * np.sin(c), -lowest], -1)

    thorax_yaw = np.radians(style.thorax_yaw) * np.cos(c)
    lean = np.radians(style.lean + extra_lean + style.lean_oscillation * np.cos(2 * c))
    trunk_roll = -0.5 * np.radians(style.obliquity) * np.sin(c)
    thorax_rot = _rot_z(thorax_yaw) @ _rot_y(lean) @ _rot_x(trunk_roll)
    neck_base = pelvis + _apply(thorax_rot, np.array([0.0, 0.0, shape.spine]))
    shoulder = np.stack(
        [pelvis + _apply(thorax_rot, np.array([0.0, s * shape.shoulder_width / 2, shape.spine - shape.shoulder_drop]))
         for s in (1, -1)], axis=1)
    head_rot = _rot_z(0.3 * thorax_yaw) @ _rot_y(np.full(n, np.radians(style.head_pitch)))
    r = shape.head_radius
    head_center = neck_base + _apply(head_rot, np.array([0.0, 0.0, shape.neck + r]))

    def head_point(x: float, y: float, z: float) -> np.ndarray:
        """A point on the head, in head radii from its centre (x forward, y left, z up)."""
        return head_center + _apply(head_rot, np.array([x * r, y * r, z * r]))

    elbows, wrists, hands = _arms(shape, style, phase_left, shoulder, _rot_z(thorax_yaw), arm_gain)
    hips = pelvis[:, None] + legs.hip
    joints = np.stack(
        [head_point(0.95, 0.0, -0.15),
         head_point(0.78, 0.33, 0.12), head_point(0.78, -0.33, 0.12),
         head_point(-0.1, 0.93, 0.0), head_point(-0.1, -0.93, 0.0),
         shoulder[:, 0], shoulder[:, 1], elbows[0], elbows[1], wrists[0], wrists[1],
         hips[:, 0], hips[:, 1],
         pelvis + legs.knee[:, 0], pelvis + legs.knee[:, 1],
         pelvis + legs.ankle[:, 0], pelvis + legs.ankle[:, 1]], axis=1)

    yaw = np.radians(heading_deg)
    world = _rot_z(np.array([yaw]))[0]
    offset = np.array([centre[0], centre[1], 0.0])

    def to_world(p: np.ndarray) -> np.ndarray:
        """Heading-frame points to world coordinates."""
        return p @ world.T + offset

    pelvis_rot = _rot_z(-np.radians(style.pelvis_yaw) * np.cos(c))
    return Body3D(
        joints=to_world(joints),
        head_center=to_world(head_center),
        neck_base=to_world(neck_base),
        pelvis=to_world(pelvis),
        heel=to_world(pelvis[:, None] + legs.heel),
        toe=to_world(pelvis[:, None] + legs.toe),
        hand=to_world(np.stack(hands, axis=1)),
        thorax_rot=world @ thorax_rot,
        pelvis_rot=world @ pelvis_rot,
        heading=world[:, 0].copy(),
    )
