"""The synthetic gait data set: its plan, one sequence, and the files in OpenGait's layout.

Layout under ``out_root`` (docs/formats.md, "Inputs")::

    pose/<id>/<type>/<view>/<view>.pkl   float32 (T, 17, 3): x, y (pixels of a 1280x720 camera), conf
    sil/<id>/<type>/<view>/<view>.pkl    uint8 (T, 64, 64) silhouettes of the same frames
    partition.json                       {"TRAIN_SET": [ids], "TEST_SET": [ids]}
    protocol.json                        gallery types, probe conditions, views
    synth.json                           the generator's config and conventions

ids are 5-digit strings ("00001"), types CASIA-B style (``nm-01`` normal, ``bg-01`` carrying a
bag, ``cl-01`` wearing a coat), views 3-digit walking angles against the camera ("000" towards
it, "090" crossing left to right, "180" away). The file stem is the view, as OpenGait's
pretreatment names its pkl files. Pose and silhouette have the same frames: a frame the pose
estimator dropped is all zeros in the pose and still has its silhouette.

Every sequence is generated from (seed, id, type, view) alone: identity parameters come from a
generator seeded with (seed, id), the sequence's variation from (seed, id, type, view), so shards
can be generated independently, in any order, on any worker.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import pickle
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ray_gait.io import fs
from ray_gait.io.safe_pickle import loads_arrays

from ray_gait.synth.body import Identity, draw_identity, vary_style
from ray_gait.synth.camera import Camera, draw_camera, heading_for_view
from ray_gait.synth.estimator import EstimatorModel, estimate_pose, occlusion
from ray_gait.synth.kinematics import COCO17, Body3D, simulate_walk
from ray_gait.synth.silhouette import Outfit, body_capsules, render_silhouettes

__all__ = [
    "CONDITIONS",
    "SynthConfig",
    "SequenceSpec",
    "SequenceRender",
    "identity_for",
    "plan_sequences",
    "simulate_sequence",
    "generate_sequence",
    "write_sequence",
    "write_metadata",
    "protocol_for",
    "generate_dataset",
    "read_config",
    "read_array",
]

log = logging.getLogger(__name__)

# Type prefix -> (probe condition name in protocol.json, meaning).
CONDITIONS = {"nm": ("NM", "normal walking"), "bg": ("BG", "carrying a bag"), "cl": ("CL", "wearing a coat")}
FORMAT_VERSION = 1
_IDENTITY_TAG = 0x1D
_SEQUENCE_TAG = 0x5E9


@dataclass(frozen=True)
class SynthConfig:
    """What ``ray-gait synth`` generates; the defaults give 60 ids x 5 views x 8 sequences."""

    ids: int = 60
    train_ids: int = 30
    views: tuple[int, ...] = (0, 45, 90, 135, 180)
    types: tuple[str, ...] = ("nm-01", "nm-02", "nm-03", "nm-04", "bg-01", "bg-02", "cl-01", "cl-02")
    gallery: tuple[str, ...] = ("nm-01", "nm-02")
    frames: tuple[int, int] = (40, 60)
    seed: int = 0
    image_size: tuple[int, int] = (1280, 720)
    fps: float = 25.0
    sil_size: int = 64
    distance: tuple[float, float] = (6.5, 10.0)
    estimator: EstimatorModel = field(default_factory=EstimatorModel)

    def __post_init__(self) -> None:
        """Coerce sequences to tuples, validate the fields; raise ValueError naming the bad one."""
        for key in ("views", "types", "gallery", "frames", "image_size", "distance"):
            object.__setattr__(self, key, tuple(getattr(self, key)))
        object.__setattr__(self, "views", tuple(int(v) for v in self.views))
        if self.ids < 2 or self.ids > 99999:
            raise ValueError(f"ids must be in [2, 99999], got {self.ids}")
        if not 0 < self.train_ids < self.ids:
            raise ValueError(f"train_ids must be in [1, ids - 1], got {self.train_ids} for {self.ids} ids")
        if not self.views or len(set(self.views)) != len(self.views):
            raise ValueError(f"views must be distinct and non-empty, got {self.views}")
        if any(not 0 <= v < 360 for v in self.views):
            raise ValueError(f"views must be angles in [0, 360), got {self.views}")
        if len(set(self.types)) != len(self.types):
            raise ValueError(f"types must be distinct, got {self.types}")
        for t in self.types:
            if t.split("-")[0] not in CONDITIONS:
                raise ValueError(f"type {t!r} must start with one of {sorted(CONDITIONS)} and a dash")
        if not self.gallery or not set(self.gallery) <= set(self.types):
            raise ValueError(f"gallery {self.gallery} must be a non-empty subset of types {self.types}")
        lo, hi = self.frames
        if not 8 <= lo <= hi:
            raise ValueError(f"frames must be MIN:MAX with 8 <= MIN <= MAX, got {lo}:{hi}")
        if self.image_size[0] < 320 or self.image_size[1] < 240:
            raise ValueError(f"image_size must be at least 320x240, got {self.image_size}")
        if not 0 < self.distance[0] <= self.distance[1]:
            raise ValueError(f"distance must be MIN:MAX metres with 0 < MIN <= MAX, got {self.distance}")
        if self.fps <= 0:
            raise ValueError(f"fps must be positive, got {self.fps}")
        if self.sil_size < 16 or self.sil_size % 2:
            raise ValueError(f"sil_size must be even and >= 16, got {self.sil_size}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the config."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SynthConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown synth config keys: {sorted(unknown)}")
        kwargs = dict(data)
        if isinstance(kwargs.get("estimator"), dict):
            kwargs["estimator"] = EstimatorModel(**kwargs["estimator"])
        return cls(**kwargs)


@dataclass(frozen=True)
class SequenceSpec:
    """One sequence to generate: where it goes and what seeds it.

    ``condition`` ("nm", "bg", "cl") decides the outfit and is normally the type's prefix;
    the random streams depend only on (seed, subject, type, view).
    """

    id: str
    type: str
    view: str
    seq: str
    subject: int
    view_deg: int
    condition: str
    seed: int

    @property
    def relpath(self) -> str:
        """``<id>/<type>/<view>/<seq>.pkl``, the path under ``pose/`` and ``sil/``."""
        return f"{self.id}/{self.type}/{self.view}/{self.seq}.pkl"


@dataclass(frozen=True)
class SequenceRender:
    """Everything :func:`simulate_sequence` produces (the arrays written plus ground truth)."""

    pose: np.ndarray  # (T, 17, 3) float32, estimator output
    sil: np.ndarray  # (T, S, S) uint8
    true_uv: np.ndarray  # (T, 17, 2) true joint pixels
    hidden: np.ndarray  # (T, 17) occlusion degree
    sil_map: np.ndarray  # (T, 4) image pixel -> silhouette pixel (sx, sy, tx, ty)
    camera: Camera
    body: Body3D


def plan_sequences(cfg: SynthConfig) -> list[SequenceSpec]:
    """All sequences of the data set, ordered by id, type, view."""
    return [
        SequenceSpec(
            id=f"{subject:05d}", type=t, view=f"{view:03d}", seq=f"{view:03d}", subject=subject,
            view_deg=int(view), condition=t.split("-")[0], seed=cfg.seed,
        )
        for subject in range(1, cfg.ids + 1)
        for t in cfg.types
        for view in cfg.views
    ]


@functools.lru_cache(maxsize=256)
def identity_for(seed: int, subject: int) -> Identity:
    """The persistent parameters of ``subject``, from a generator seeded by (seed, subject)."""
    rng = np.random.default_rng(np.random.SeedSequence([_IDENTITY_TAG, seed, subject]))
    return draw_identity(rng, subject)


def _streams(spec: SequenceSpec) -> list[np.random.Generator]:
    """Independent generators (motion, camera, estimator, appearance) of one sequence."""
    key = [_SEQUENCE_TAG, spec.seed, spec.subject, zlib.crc32(spec.type.encode()), spec.view_deg]
    return [np.random.default_rng(s) for s in np.random.SeedSequence(key).spawn(4)]


def simulate_sequence(spec: SequenceSpec, cfg: SynthConfig) -> SequenceRender:
    """Generate one sequence with its ground truth (see :func:`generate_sequence`)."""
    if spec.condition not in CONDITIONS:
        raise ValueError(f"unknown condition {spec.condition!r} for {spec.relpath}")
    person = identity_for(spec.seed, spec.subject)
    motion, cam_rng, est_rng, look_rng = _streams(spec)

    n = int(motion.integers(cfg.frames[0], cfg.frames[1] + 1))
    speed = float(np.clip(motion.normal(1.0, 0.06), 0.85, 1.15))
    style = vary_style(person.style, motion, speed)
    times = np.arange(n) / cfg.fps
    phase = motion.uniform() + style.cadence / 120.0 * times + np.cumsum(motion.normal(0.0, 0.002, n))
    heading = heading_for_view(spec.view_deg) + float(motion.normal(0.0, 3.0))
    camera = draw_camera(cam_rng, *cfg.image_size)
    depth = float(cam_rng.uniform(*cfg.distance))
    lateral = float(cam_rng.uniform(-0.12, 0.12)) * depth

    arm_gain, extra_lean, carry = (1.0, 1.0), 0.0, None
    if spec.condition == "bg":
        carry = person.carry
        gain = {"shoulder": 0.5, "hand": 0.2, "backpack": 0.9}[carry.kind]
        arm_gain = (gain, 1.0) if carry.side > 0 else (1.0, gain)
        extra_lean = 3.0 if carry.kind == "backpack" else 0.0
    body = simulate_walk(person.shape, style, phase, times, heading, (lateral, depth),
                         arm_gain=arm_gain, extra_lean=extra_lean)

    uv, joint_depth = camera.project(body.joints)
    caps = body_capsules(body, person.shape)
    cap_uv, cap_depth = camera.project(np.stack([caps.start, caps.end], axis=2))
    cap_px = camera.focal * caps.radius[None] / cap_depth.mean(axis=-1)
    incident = np.zeros((len(COCO17), len(caps.joints)), dtype=bool)
    for c, joints in enumerate(caps.joints):
        incident[list(joints), c] = True
    hidden = occlusion(uv, joint_depth, cap_uv, cap_depth, cap_px, caps.radius, incident)
    person_px = float(np.median(uv[..., 1].max(axis=1) - uv[..., 1].min(axis=1)))
    side_view = abs(float(np.sin(np.radians(spec.view_deg))))
    pose = estimate_pose(est_rng, uv, hidden, person_px, cfg.image_size, side_view, cfg.estimator)

    outfit = Outfit(
        clothing=person.clothing * float(np.exp(look_rng.normal(0.0, 0.03))),
        coat=person.coat if spec.condition == "cl" else None,
        carry=carry,
    )
    sil, sil_map = render_silhouettes(body, person.shape, camera, outfit, look_rng, cfg.sil_size)
    return SequenceRender(pose=pose, sil=sil, true_uv=uv, hidden=hidden, sil_map=sil_map, camera=camera, body=body)


def generate_sequence(spec: SequenceSpec, cfg: SynthConfig) -> tuple[np.ndarray, np.ndarray]:
    """Pose float32 ``(T, 17, 3)`` and silhouettes uint8 ``(T, S, S)`` of one sequence.

    Same T for both; a frame dropped by the pose estimator is all zeros in the pose only.
    """
    render = simulate_sequence(spec, cfg)
    return render.pose, render.sil


def _atomic_pickle(loc: fs.Location, array: np.ndarray) -> None:
    """Pickle ``array`` to a location atomically (a local temporary name then a rename, or one upload)."""
    fs.write_bytes_atomic(loc, pickle.dumps(array, protocol=4))


def read_array(path: str | os.PathLike) -> np.ndarray:
    """Load one pickled numpy array written by :func:`write_sequence` (restricted unpickler; a path or a URI)."""
    try:
        obj = loads_arrays(fs.read_bytes(fs.resolve(str(path))))
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot load {path}: {exc}") from exc
    if not isinstance(obj, np.ndarray):
        raise ValueError(f"{path} holds {type(obj).__name__}, not a numpy array")
    return obj


def _atomic_json(loc: fs.Location, data: Any) -> None:
    """Write JSON atomically."""
    fs.write_bytes_atomic(loc, (json.dumps(data, indent=2) + "\n").encode("utf-8"))


def write_sequence(
    out_root: str | os.PathLike, spec: SequenceSpec, pose: np.ndarray, sil: np.ndarray
) -> tuple[str, str]:
    """Write ``pose/<relpath>`` and ``sil/<relpath>`` (pickled arrays, atomically) below a folder or URI;
    return both paths."""
    if pose.ndim != 3 or pose.shape[1:] != (17, 3) or pose.dtype != np.float32:
        raise ValueError(f"pose of {spec.relpath} must be float32 (T, 17, 3), got {pose.dtype} {pose.shape}")
    if sil.ndim != 3 or sil.dtype != np.uint8 or sil.shape[0] != pose.shape[0]:
        raise ValueError(
            f"sil of {spec.relpath} must be uint8 (T, H, W) with T = {pose.shape[0]}, got {sil.dtype} {sil.shape}")
    root = fs.resolve(str(out_root))
    pose_loc, sil_loc = root.join("pose", spec.relpath), root.join("sil", spec.relpath)
    _atomic_pickle(pose_loc, np.ascontiguousarray(pose))
    _atomic_pickle(sil_loc, np.ascontiguousarray(sil))
    return pose_loc.uri, sil_loc.uri


def protocol_for(cfg: SynthConfig) -> dict[str, Any]:
    """The evaluation protocol (docs/formats.md, "Inputs") of a config."""
    probes: dict[str, list[str]] = {}
    for prefix, (name, _) in CONDITIONS.items():
        types = [t for t in cfg.types if t.startswith(prefix + "-") and t not in cfg.gallery]
        if types:
            probes[name] = types
    return {
        "gallery": list(cfg.gallery),
        "probes": probes,
        "views": [f"{v:03d}" for v in cfg.views],
        "exclude_identical_view": True,
        "dataset": "ray_gait-synth",
        "subset": "TEST_SET",
        "conditions": {CONDITIONS[p][0]: CONDITIONS[p][1] for p in CONDITIONS},
        "note": "Rank-1 of a condition = mean over probe views of the mean over the other gallery views.",
    }


def write_metadata(out_root: str | os.PathLike, cfg: SynthConfig) -> None:
    """Write ``partition.json``, ``protocol.json`` and ``synth.json`` under ``out_root`` (a folder or URI)."""
    root = fs.resolve(str(out_root))
    ids = [f"{s:05d}" for s in range(1, cfg.ids + 1)]
    _atomic_json(root.join("partition.json"), {"TRAIN_SET": ids[:cfg.train_ids], "TEST_SET": ids[cfg.train_ids:]})
    _atomic_json(root.join("protocol.json"), protocol_for(cfg))
    _atomic_json(root.join("synth.json"), {
        "format_version": FORMAT_VERSION,
        "config": cfg.to_dict(),
        "joints": list(COCO17),
        "layout": "{pose,sil}/<id>/<type>/<view>/<view>.pkl",
        "pose": "float32 (T, 17, 3): x, y in pixels, confidence; missing joint = (0, 0, 0); "
                "dropped frame = all zeros",
        "sil": f"uint8 (T, {cfg.sil_size}, {cfg.sil_size}), OpenGait pretreatment "
               f"(crop rows, height {cfg.sil_size}, centre)",
        "views": "walking direction against the camera in degrees: 0 towards, 90 left to right, 180 away",
        "conditions": {p: CONDITIONS[p][1] for p in CONDITIONS},
    })


def read_config(out_root: str | os.PathLike) -> SynthConfig:
    """The config stored in ``out_root/synth.json``."""
    loc = fs.resolve(str(out_root)).join("synth.json")
    try:
        data = json.loads(fs.read_bytes(loc))
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read synth config {loc.uri}: {exc}") from exc
    return SynthConfig.from_dict(data["config"])


def generate_dataset(out_root: str | os.PathLike, cfg: SynthConfig) -> dict[str, Any]:
    """Generate the whole data set serially under ``out_root``; return counts and seconds."""
    start = time.perf_counter()
    write_metadata(out_root, cfg)
    specs = plan_sequences(cfg)
    frames = 0
    for i, spec in enumerate(specs):
        pose, sil = generate_sequence(spec, cfg)
        write_sequence(out_root, spec, pose, sil)
        frames += pose.shape[0]
        if (i + 1) % 500 == 0:
            log.info("synth: %d/%d sequences", i + 1, len(specs))
    seconds = time.perf_counter() - start
    log.info("synth: %d sequences, %d frames in %.1f s -> %s", len(specs), frames, seconds, out_root)
    return {"sequences": len(specs), "frames": frames, "seconds": seconds}
