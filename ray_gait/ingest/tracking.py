"""Which person of each frame is the walking subject, when a frame holds several.

The subject is the track whose skeleton continues from frame to frame: the cost of going from
person a (previous frame with anybody) to person b is the jump of the hip centre in units of the
person's size, per frame of gap, plus the change of size (|log ratio|); a small prominence cost
prefers, among equally continuous people, the larger and more confident one.  The whole track is
chosen at once (Viterbi over the candidates), so a crowded first frame is decided by the frames
after it, and a distractor listed first is never taken just for being first.  Frames with a
forced choice (OU-MVLP's `pose_selection_idx.pkl`) keep it, and the track continues from there.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Hip joints per layout (for the centre only): COCO-17 left/right hip, OpenPose COCO-18 r/l hip,
# BODY-25 r/l hip.
HIP_JOINTS: dict[int, tuple[int, int]] = {17: (11, 12), 18: (8, 11), 25: (9, 12)}
MIN_SIZE = 1.0


@dataclass(frozen=True)
class TrackingConfig:
    """Weights of the track cost (config keys `tracking.*` of `ray-gait ingest --set`)."""

    jump: float = 1.0
    scale: float = 1.0
    prominence: float = 0.25


@dataclass(frozen=True)
class Steps:
    """The frames with somebody, padded to K candidates each (S steps): where they are and who they are.

    `frame` (S,) frame numbers; `index`, `size`, `score`, `valid` (S, K); `centre` (S, K, 2).
    Padding slots have `valid` False, size 1 and centre 0.
    """

    frame: np.ndarray
    index: np.ndarray
    centre: np.ndarray
    size: np.ndarray
    score: np.ndarray
    valid: np.ndarray


def describe(people: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(detected, centre, size, score) of people (N, V, 3); the centre is the hip midpoint when seen."""
    seen = (people[..., 0] != 0) | (people[..., 1] != 0)
    detected = seen.any(axis=1)
    xy = people[..., :2].astype(np.float64)
    weight = seen.astype(np.float64)
    hips = list(HIP_JOINTS.get(people.shape[1], ()))
    hip_weight = np.zeros_like(weight)
    hip_weight[:, hips] = weight[:, hips]
    use = np.where(hip_weight.sum(axis=1, keepdims=True) > 0, hip_weight, weight)
    centre = (xy * use[..., None]).sum(axis=1) / np.maximum(use.sum(axis=1), 1)[:, None]
    high = np.where(seen[..., None], xy, -np.inf).max(axis=1)
    low = np.where(seen[..., None], xy, np.inf).min(axis=1)
    size = np.where(detected, np.maximum((high - low).max(axis=1), MIN_SIZE), MIN_SIZE)
    score = (people[..., 2] * weight).sum(axis=1) / np.maximum(weight.sum(axis=1), 1)
    return detected, centre, size, score


def _steps(frames: list[list[np.ndarray | None]], forced: dict[int, int]) -> Steps | None:
    """The candidates of every frame with somebody (only the forced person where a choice is imposed)."""
    where = [(t, i) for t, people in enumerate(frames) for i, p in enumerate(people) if p is not None]
    if not where:
        return None
    joints = {frames[t][i].shape for t, i in where}
    if len(joints) > 1:
        raise ValueError(f"people of one sequence must share a joint layout, found {sorted(joints)}")
    detected, centre, size, score = describe(np.stack([frames[t][i] for t, i in where]))
    frame_of = np.array([t for t, _ in where])
    index = np.array([i for _, i in where])
    imposed = np.full(len(frames), -1)
    for t, person in forced.items():
        imposed[t] = person
    keep = np.flatnonzero(detected & ((imposed[frame_of] < 0) | (index == imposed[frame_of])))
    if not len(keep):
        return None
    times, step = np.unique(frame_of[keep], return_inverse=True)
    slot = np.arange(len(keep)) - np.searchsorted(frame_of[keep], times)[step]
    shape = (len(times), int(slot.max()) + 1)
    out = Steps(times, np.zeros(shape, int), np.zeros(shape + (2,)), np.ones(shape), np.zeros(shape),
                np.zeros(shape, bool))
    out.index[step, slot] = index[keep]
    out.centre[step, slot] = centre[keep]
    out.size[step, slot] = size[keep]
    out.score[step, slot] = score[keep]
    out.valid[step, slot] = True
    return out


def _transitions(steps: Steps, cfg: TrackingConfig) -> np.ndarray:
    """Cost (S-1, K, K) of going from person a of each step to person b of the next one."""
    a_centre, b_centre = steps.centre[:-1, :, None, :], steps.centre[1:, None, :, :]
    a_size, b_size = steps.size[:-1, :, None], steps.size[1:, None, :]
    gap = np.maximum(np.diff(steps.frame), 1)[:, None, None]
    jump = np.linalg.norm(b_centre - a_centre, axis=-1) / (0.5 * (a_size + b_size) * gap)
    return cfg.jump * jump + cfg.scale * np.abs(np.log(b_size / a_size))


def _prominence(steps: Steps, cfg: TrackingConfig) -> np.ndarray:
    """(S, K): a small cost for the smaller and less confident people of a frame; inf for padding."""
    largest = np.where(steps.valid, steps.size, 0).max(axis=1, keepdims=True)
    best = np.where(steps.valid, steps.score, -np.inf).max(axis=1, keepdims=True)
    cost = cfg.prominence * (np.log(largest / steps.size) + (best - steps.score))
    return np.where(steps.valid, cost, np.inf)


def select_track(frames: list[list[np.ndarray | None]], forced: dict[int, int] | None = None,
                 cfg: TrackingConfig | None = None) -> list[int | None]:
    """Per frame, the index (in that frame's list) of the subject, or None when the frame has nobody.

    `frames[t]` lists the people of frame t as (V, 3) arrays of one layout (None for a listed person
    without keypoints); `forced[t]` imposes a person for frame t.
    """
    cfg = cfg or TrackingConfig()
    forced = forced or {}
    present = [[i for i, p in enumerate(people) if p is not None and np.any(p[:, :2])] for people in frames]
    if not forced and all(len(found) <= 1 for found in present):
        return [found[0] if found else None for found in present]     # nobody to choose between
    chosen: list[int | None] = [None] * len(frames)
    steps = _steps(frames, forced)
    if steps is None:
        return chosen
    unary, moves = _prominence(steps, cfg), _transitions(steps, cfg)
    cost = unary[0]
    back = np.zeros(moves.shape[:2], dtype=int)
    for s in range(len(moves)):
        total = cost[:, None] + moves[s]
        back[s] = total.argmin(axis=0)
        cost = total.min(axis=0) + unary[s + 1]
    state = int(cost.argmin())
    for s in range(len(steps.frame) - 1, -1, -1):
        chosen[int(steps.frame[s])] = int(steps.index[s, state])
        if s:
            state = int(back[s - 1, state])
    return chosen
