"""Alignment on the renderer's device: the crop and INTER_AREA resize of align.py as batched matmuls.

Each image's crop (rows r0..r1, columns c0..c1, from the same `crop_bounds` as the OpenCV path)
becomes a pair of weight matrices placed at the crop's offset, Wy (S, H) and Wx (S, W), so that
the resized crop is Wy @ (image / 255) @ Wx.T in float64: every image of a batch in one product,
no per-image Python on the GPU.  Same output as align.py up to the order of the float64 sums.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from ray_gait.heatmap.align import crop_bounds
from ray_gait.heatmap.resize import weight_tables

# Images per batched product: the (N, S, H) and (N, S, W) weights and the float64 images, ~40 MB
# per 256 images of 128 x 128.
CHUNK_IMAGES = 4096


@lru_cache(maxsize=8)
def _tables(max_src: int, dst: int, device: str) -> torch.Tensor:
    return torch.as_tensor(weight_tables(max_src, dst), device=device)


def content_rows_torch(flat: torch.Tensor) -> torch.Tensor:
    """First and last row with a non-zero pixel of each image (N, H, W) -> (N, 2); (-1, -1) if blank."""
    used = (flat != 0).any(dim=2)
    height = flat.shape[1]
    top = used.to(torch.uint8).argmax(dim=1)
    bottom = height - 1 - used.flip(1).to(torch.uint8).argmax(dim=1)
    blank = ~used.any(dim=1)
    return torch.stack([torch.where(blank, -1, top), torch.where(blank, -1, bottom)], dim=1)


def _placed(tables: torch.Tensor, mode: torch.Tensor, start: torch.Tensor, size: torch.Tensor,
            length: int) -> torch.Tensor:
    """(N, S, length) weights of each image's crop [start, start + size) placed on the full axis."""
    chosen = tables[mode, size]                                     # (N, S, max_src)
    axis = torch.arange(length, device=tables.device)
    offset = axis[None, :] - start[:, None]                         # (N, length)
    inside = (offset >= 0) & (offset < size[:, None])
    index = offset.clamp(0, tables.shape[-1] - 1)[:, None, :].expand(-1, chosen.shape[1], -1)
    return torch.gather(chosen, 2, index) * inside[:, None, :]


def _block_means(unit: torch.Tensor, r0: torch.Tensor, c0: torch.Tensor, block_y: int, block_x: int,
                 size: int) -> torch.Tensor:
    """OpenCV's integer-scale area path: block sums in its order (row-major, groups of 4), times 1/area."""
    rows = r0[:, None] + torch.arange(block_y * size, device=unit.device)
    cols = c0[:, None] + torch.arange(block_x * size, device=unit.device)
    images = torch.arange(unit.shape[0], device=unit.device)
    crops = unit[images[:, None, None], rows[:, :, None], cols[:, None, :]]
    blocks = crops.reshape(-1, size, block_y, size, block_x)
    terms = [blocks[:, :, y, :, x] for y in range(block_y) for x in range(block_x)]
    total = None
    for first in range(0, len(terms) - len(terms) % 4, 4):
        group = ((terms[first] + terms[first + 1]) + terms[first + 2]) + terms[first + 3]
        total = group if total is None else total + group
    for term in terms[len(terms) - len(terms) % 4:]:
        total = term if total is None else total + term
    return total * float(np.float32(1.0 / (block_y * block_x)))


def align_maps_torch(maps: torch.Tensor, final_size: int, offset: int, centre: int,
                     align: bool = True) -> torch.Tensor:
    """(T, C, H, W) uint8 maps on any device -> (T, C, S, S) uint8 on that device (see align.py)."""
    n_frames, n_channels, height, width = maps.shape
    flat = maps.reshape(n_frames * n_channels, height, width)
    if align:
        rows = content_rows_torch(flat).cpu().numpy()
        bounds = crop_bounds(rows, height, width, offset, centre)
    else:
        bounds = np.tile(np.array([0, height, 0, width], dtype=np.int64), (flat.shape[0], 1))
    heights, widths = bounds[:, 1] - bounds[:, 0], bounds[:, 3] - bounds[:, 2]
    # OpenCV takes a separate path when both scales are whole numbers (128 -> 64: every full-height crop).
    whole = (heights % final_size == 0) & (widths % final_size == 0)
    bounds_t = torch.as_tensor(bounds, device=maps.device)
    tables = _tables(max(height, width), final_size, str(maps.device))
    out = torch.empty((flat.shape[0], final_size, final_size), dtype=torch.uint8, device=maps.device)
    for first in range(0, flat.shape[0], CHUNK_IMAGES):
        part = slice(first, first + CHUNK_IMAGES)
        unit = flat[part].to(torch.float64) / 255.0
        r0, c0 = bounds_t[part, 0], bounds_t[part, 2]
        rows_n, cols_n = bounds_t[part, 1] - r0, bounds_t[part, 3] - c0
        mode = ((rows_n < final_size) | (cols_n < final_size)).long()     # 0: area mean, 1: interpolation
        wy = _placed(tables, mode, r0, rows_n, height)
        wx = _placed(tables, mode, c0, cols_n, width)
        resized = torch.bmm(wy, torch.bmm(unit, wx.transpose(1, 2)))
        chunk_whole = whole[part]
        for block_y, block_x in {(int(h) // final_size, int(w) // final_size)
                                 for h, w in zip(heights[part][chunk_whole], widths[part][chunk_whole])}:
            pick = np.flatnonzero(chunk_whole & (heights[part] == block_y * final_size)
                                  & (widths[part] == block_x * final_size))
            index = torch.as_tensor(pick, device=maps.device)
            resized[index] = _block_means(unit[index], r0[index], c0[index], block_y, block_x, final_size)
        out[part] = (resized * 255).to(torch.uint8)
    return out.reshape(n_frames, n_channels, final_size, final_size)
