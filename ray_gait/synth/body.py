"""Identity parameters of the synthetic walkers: body proportions, girth and walking style.

Everything a person keeps from one sequence to the next lives here. An :class:`Identity` is drawn
from a generator seeded by (seed, subject) alone, so any worker can rebuild it; the per-sequence
variation (speed, small style noise) is applied by :func:`vary_style`.
Lengths are in metres, angles in degrees, timings in fractions of a gait cycle.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

__all__ = ["BodyShape", "GaitStyle", "Carry", "Coat", "Identity", "draw_identity", "vary_style"]

# Number of Fourier harmonics used to perturb the normative joint-angle curves.
N_HARMONICS = 3


@dataclass(frozen=True)
class BodyShape:
    """Segment lengths (m) and girths (radii, m) of one person."""

    height: float
    thigh: float
    shank: float
    ankle_height: float
    foot_length: float
    heel_back: float
    hip_width: float
    spine: float
    shoulder_width: float
    shoulder_drop: float
    upper_arm: float
    forearm: float
    hand: float
    neck: float
    head_radius: float
    chest_half_width: float
    chest_half_depth: float
    pelvis_half_width: float
    pelvis_half_depth: float
    thigh_radius: float
    calf_radius: float
    upper_arm_radius: float
    forearm_radius: float
    neck_radius: float


@dataclass(frozen=True)
class GaitStyle:
    """Walking style: cadence, joint-angle curve shapes, arm swing, trunk motion, asymmetry.

    Harmonic arrays have shape ``(N_HARMONICS, 2)`` (cosine, sine coefficients in degrees) and are
    added to the normative curves of :mod:`ray_gait.synth.kinematics`.
    """

    cadence: float
    hip_mean: float
    hip_scale: float
    knee_swing_scale: float
    knee_stance_scale: float
    knee_timing: float
    foot_scale: float
    hip_harmonics: np.ndarray
    knee_harmonics: np.ndarray
    arm_amplitude: float
    arm_offset: float
    arm_lag: float
    arm_abduction: float
    elbow_base: float
    elbow_amplitude: float
    lean: float
    lean_oscillation: float
    sway: float
    pelvis_yaw: float
    thorax_yaw: float
    obliquity: float
    step_abduction: float
    toe_out: float
    head_pitch: float
    asym_hip: float
    asym_knee: float
    asym_arm: float
    asym_phase: float


@dataclass(frozen=True)
class Carry:
    """The bag a person carries in the ``bg`` condition."""

    kind: str  # "shoulder", "hand" or "backpack"
    side: int  # +1 left, -1 right (body side the bag hangs on)
    size: tuple[float, float, float]  # length (forward), width (lateral), height, m


@dataclass(frozen=True)
class Coat:
    """The coat worn in the ``cl`` condition: widening of the torso and a hem below the hips."""

    widen: float  # multiplier on torso girth
    hem: float  # hem position along the thigh, 0 = hip, 1 = knee
    flare: float  # extra half-width at the hem, m
    sleeve: float  # multiplier on arm radii


@dataclass(frozen=True)
class Identity:
    """All persistent parameters of one synthetic subject."""

    subject: int
    shape: BodyShape
    style: GaitStyle
    carry: Carry
    coat: Coat
    clothing: float  # everyday girth multiplier of clothes (trousers, shirt)


def _lognormal(rng: np.random.Generator, sigma: float) -> float:
    """A multiplicative factor around 1 with relative spread ``sigma``."""
    return float(np.exp(rng.normal(0.0, sigma)))


def _draw_shape(rng: np.random.Generator) -> BodyShape:
    """Draw anthropometric proportions (ratios after Winter's segment table) and girth."""
    height = float(np.clip(rng.normal(1.72, 0.09), 1.50, 1.98))
    leg = _lognormal(rng, 0.03)
    arm = _lognormal(rng, 0.03)
    trunk = _lognormal(rng, 0.03)
    build = float(np.clip(rng.normal(0.0, 1.0), -2.2, 2.2))
    bulk = 1.0 + 0.08 * build

    def r(ratio: float, sigma: float = 0.03) -> float:
        """A length of ``ratio`` times the height with individual spread ``sigma``."""
        return ratio * height * _lognormal(rng, sigma)

    return BodyShape(
        height=height,
        thigh=r(0.245, 0.02) * leg,
        shank=r(0.246, 0.02) * leg,
        ankle_height=r(0.039),
        foot_length=r(0.152),
        heel_back=r(0.038),
        hip_width=r(0.115, 0.05),
        spine=r(0.290, 0.02) * trunk,
        shoulder_width=r(0.215, 0.05),
        shoulder_drop=r(0.012, 0.3),
        upper_arm=r(0.186, 0.02) * arm,
        forearm=r(0.146, 0.02) * arm,
        hand=r(0.100),
        neck=r(0.052, 0.08),
        head_radius=r(0.064, 0.04),
        chest_half_width=r(0.092, 0.05) * bulk,
        chest_half_depth=r(0.060, 0.06) * bulk,
        pelvis_half_width=r(0.095, 0.05) * bulk,
        pelvis_half_depth=r(0.066, 0.06) * bulk,
        thigh_radius=r(0.043, 0.06) * bulk,
        calf_radius=r(0.030, 0.06) * bulk,
        upper_arm_radius=r(0.025, 0.06) * bulk,
        forearm_radius=r(0.020, 0.06) * bulk,
        neck_radius=r(0.030, 0.06) * bulk,
    )


def _draw_style(rng: np.random.Generator, shape: BodyShape) -> GaitStyle:
    """Draw a walking style; taller people step a little slower."""
    cadence = float(np.clip(rng.normal(112.0, 7.0) - 25.0 * (shape.height - 1.72), 92.0, 134.0))
    return GaitStyle(
        cadence=cadence,
        hip_mean=float(rng.normal(0.0, 2.0)),
        hip_scale=float(np.clip(rng.normal(1.0, 0.09), 0.78, 1.25)),
        knee_swing_scale=float(np.clip(rng.normal(1.0, 0.10), 0.75, 1.25)),
        knee_stance_scale=float(np.clip(rng.normal(1.0, 0.35), 0.2, 1.9)),
        knee_timing=float(rng.normal(0.0, 0.015)),
        foot_scale=float(np.clip(rng.normal(1.0, 0.15), 0.6, 1.4)),
        hip_harmonics=rng.normal(0.0, 2.0, size=(N_HARMONICS, 2)),
        knee_harmonics=rng.normal(0.0, 3.0, size=(N_HARMONICS, 2)),
        arm_amplitude=float(np.clip(rng.normal(17.0, 6.0), 4.0, 34.0)),
        arm_offset=float(rng.normal(-3.0, 4.0)),
        arm_lag=float(rng.normal(0.03, 0.02)),
        arm_abduction=float(np.clip(rng.normal(7.0, 3.0), 1.0, 16.0)),
        elbow_base=float(np.clip(rng.normal(14.0, 6.0), 2.0, 35.0)),
        elbow_amplitude=float(np.clip(rng.normal(16.0, 7.0), 0.0, 40.0)),
        lean=float(rng.normal(4.0, 3.0)),
        lean_oscillation=float(np.clip(rng.normal(1.5, 0.7), 0.0, 4.0)),
        sway=float(np.clip(rng.normal(0.025, 0.009), 0.005, 0.055)),
        pelvis_yaw=float(np.clip(rng.normal(5.0, 2.0), 0.0, 11.0)),
        thorax_yaw=float(np.clip(rng.normal(4.0, 1.8), 0.0, 10.0)),
        obliquity=float(np.clip(rng.normal(4.0, 1.5), 0.0, 8.0)),
        step_abduction=float(np.clip(rng.normal(2.0, 1.2), -1.0, 5.0)),
        toe_out=float(np.clip(rng.normal(8.0, 5.0), -5.0, 22.0)),
        head_pitch=float(rng.normal(4.0, 5.0)),
        asym_hip=float(rng.normal(0.0, 0.05)),
        asym_knee=float(rng.normal(0.0, 0.06)),
        asym_arm=float(rng.normal(0.0, 0.15)),
        asym_phase=float(rng.normal(0.0, 0.012)),
    )


def _draw_carry(rng: np.random.Generator) -> Carry:
    """Draw the bag used in the ``bg`` sequences of one person."""
    kind = str(rng.choice(["shoulder", "hand", "backpack"], p=[0.45, 0.2, 0.35]))
    side = int(rng.choice([-1, 1]))
    if kind == "backpack":
        size = (rng.uniform(0.14, 0.22), rng.uniform(0.26, 0.34), rng.uniform(0.36, 0.48))
    elif kind == "hand":
        size = (rng.uniform(0.25, 0.40), rng.uniform(0.08, 0.14), rng.uniform(0.22, 0.32))
    else:
        size = (rng.uniform(0.25, 0.38), rng.uniform(0.08, 0.14), rng.uniform(0.22, 0.34))
    return Carry(kind=kind, side=side, size=tuple(float(s) for s in size))


def _draw_coat(rng: np.random.Generator) -> Coat:
    """Draw the coat used in the ``cl`` sequences of one person."""
    return Coat(
        widen=float(rng.uniform(1.15, 1.4)),
        hem=float(rng.uniform(0.35, 0.95)),
        flare=float(rng.uniform(0.03, 0.10)),
        sleeve=float(rng.uniform(1.3, 1.7)),
    )


def draw_identity(rng: np.random.Generator, subject: int) -> Identity:
    """Draw the persistent parameters of one subject from ``rng`` (seeded by seed and subject)."""
    shape = _draw_shape(rng)
    style = _draw_style(rng, shape)
    return Identity(
        subject=subject,
        shape=shape,
        style=style,
        carry=_draw_carry(rng),
        coat=_draw_coat(rng),
        clothing=float(np.clip(rng.normal(1.05, 0.05), 0.95, 1.2)),
    )


def vary_style(style: GaitStyle, rng: np.random.Generator, speed: float) -> GaitStyle:
    """Return the style of one sequence: scaled for walking ``speed`` (1 = usual) plus small noise."""

    def jitter(value: float, rel: float) -> float:
        """``value`` times a random factor of relative spread ``rel``."""
        return value * float(np.exp(rng.normal(0.0, rel)))

    return dataclasses.replace(
        style,
        cadence=jitter(style.cadence * speed**0.45, 0.015),
        hip_mean=style.hip_mean + float(rng.normal(0.0, 0.8)),
        hip_scale=jitter(style.hip_scale * speed**0.5, 0.03),
        knee_swing_scale=jitter(style.knee_swing_scale * speed**0.25, 0.03),
        knee_stance_scale=jitter(style.knee_stance_scale * speed**0.5, 0.08),
        hip_harmonics=style.hip_harmonics + rng.normal(0.0, 0.4, size=style.hip_harmonics.shape),
        knee_harmonics=style.knee_harmonics + rng.normal(0.0, 0.6, size=style.knee_harmonics.shape),
        arm_amplitude=jitter(style.arm_amplitude * speed**0.8, 0.08),
        arm_offset=style.arm_offset + float(rng.normal(0.0, 1.0)),
        elbow_base=style.elbow_base + float(rng.normal(0.0, 1.5)),
        lean=style.lean + float(rng.normal(0.0, 0.8)) + 2.0 * (speed - 1.0),
        sway=jitter(style.sway, 0.08),
        pelvis_yaw=jitter(style.pelvis_yaw, 0.08),
        head_pitch=style.head_pitch + float(rng.normal(0.0, 2.0)),
    )
