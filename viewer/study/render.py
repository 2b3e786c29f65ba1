"""Pictures of study items: model-input tensors back to display pixels, PNG bytes, occluder boxes.

    rgb = to_rgb(images, probe.mean, probe.std)     # (N, H, W, 3) uint8, as probe.pixels(rgb=True)
    data = png(rgb[0])                              # PNG bytes
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

__all__ = ["box_of", "png", "to_rgb"]


def to_rgb(images: torch.Tensor, mean, std) -> np.ndarray:
    """Model inputs (N, C, H, W), normalized with per-channel `mean`/`std`, as display pixels (N, H, W, 3)."""
    c = images.shape[1]
    m = torch.as_tensor(mean, dtype=torch.float32).reshape(1, c, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32).reshape(1, c, 1, 1)
    x = ((images.float() * s + m) * 255.0).round().clamp(0, 255).to(torch.uint8)
    if c == 1:
        x = x.expand(-1, 3, -1, -1)
    elif c != 3:
        x = x.float().mean(1, keepdim=True).round().to(torch.uint8).expand(-1, 3, -1, -1)
    return x.permute(0, 2, 3, 1).contiguous().numpy()


def png(rgb: np.ndarray) -> bytes:
    """PNG bytes of a (H, W, 3) uint8 image."""
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(out, format="PNG")
    return out.getvalue()


def box_of(cell, patch: int, stride: int, size) -> list[int]:
    """[top, left, bottom, right) in input pixels of occluder grid cell (i, j), cut by the border."""
    top, left = int(cell[0]) * stride, int(cell[1]) * stride
    return [top, left, min(top + patch, int(size[0])), min(left + patch, int(size[1]))]
