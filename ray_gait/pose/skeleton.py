"""Joint layouts: COCO-17, COCO-18 (OpenPose), BODY-25, and the limbs drawn in skeleton maps."""
from __future__ import annotations

import numpy as np

COCO17_JOINTS: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)

# Left and right joints of COCO-17 (pairs at the same position).
COCO17_LEFT: tuple[int, ...] = (1, 3, 5, 7, 9, 11, 13, 15)
COCO17_RIGHT: tuple[int, ...] = (2, 4, 6, 8, 10, 12, 14, 16)

# The 17 limbs of the COCO-17 skeleton map (the order of the reference generator's limb channels).
COCO17_LIMBS: tuple[tuple[int, int], ...] = (
    (0, 1), (0, 2), (1, 3), (2, 4), (0, 5), (5, 7), (7, 9), (0, 6), (6, 8), (8, 10),
    (5, 11), (11, 13), (13, 15), (6, 12), (12, 14), (14, 16), (11, 12),
)

# OpenPose COCO-18 order: nose, neck, r-shoulder, r-elbow, r-wrist, l-shoulder, l-elbow, l-wrist,
# r-hip, r-knee, r-ankle, l-hip, l-knee, l-ankle, r-eye, l-eye, r-ear, l-ear.
# COCO18_TO_COCO17[i] is the COCO-18 index of COCO-17 joint i (the neck is dropped).
COCO18_TO_COCO17: tuple[int, ...] = (0, 15, 14, 17, 16, 5, 2, 6, 3, 7, 4, 11, 8, 12, 9, 13, 10)

# Joints whose midpoint is the hip centre, per `norm_args.pose_format`.  For `openpose-*` the
# reference takes joints 9 and 12 whatever the layout: the right and left hip in BODY-25, but the
# right and left knee when the sequence is COCO-18 (or COCO-17 after conversion).
HIP_JOINTS: dict[str, tuple[int, int]] = {
    "coco": (11, 12),
    "openpose-18": (9, 12),
    "openpose-25": (9, 12),
}

LIMB_INDEX = np.asarray(COCO17_LIMBS, dtype=np.int64)


def coco18_to_coco17(pose: np.ndarray) -> np.ndarray:
    """Reorder a COCO-18 (OpenPose) sequence (T, 18, C) into COCO-17 (T, 17, C), dropping the neck."""
    if pose.ndim != 3 or pose.shape[1] != 18:
        raise ValueError(f"COCO-18 input must be (T, 18, C), got {pose.shape}")
    return pose[:, list(COCO18_TO_COCO17), :].astype(np.float64)
