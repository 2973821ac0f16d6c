"""The precision a model runs in: the autocast dtype of OpenGait's `enable_float16` on a device."""
from __future__ import annotations

import torch


def autocast_dtype(enable_float16: bool | str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype: `enable_float16` true -> bf16 where the device has it, else fp16 on CUDA.

    `"bf16"` / `"fp16"` force one; false -> full precision.  On CPU, true means bf16 (2-3x faster
    than fp32 on recent CPUs).
    """
    if enable_float16 in (False, None, "false", "fp32"):
        return None
    if enable_float16 == "fp16":
        return torch.float16 if device.type == "cuda" else torch.bfloat16
    if enable_float16 in (True, "bf16", "true"):
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16
    raise ValueError(f"enable_float16 must be true, false, 'bf16' or 'fp16', got {enable_float16!r}")
