"""The obviously-correct occlusion of the tests: one full forward per occluder position.

    maps = brute_force(model, "conv3", image, patch=4, stride=3, fill="mean")   # measure -> (K, gh, gw)
"""

from __future__ import annotations

import torch
from torch import nn

MEASURES = ("mean", "max", "peak")


def layer_map(model: nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    """The full output of `layer` on a batch, from a plain forward."""
    kept = []
    handle = dict(model.named_modules())[layer].register_forward_hook(lambda m, i, o: kept.append(o.clone()))
    with torch.no_grad():
        model(x)
    handle.remove()
    return kept[0]


def brute_force(model, layer, image, patch, stride, fill, seed=0) -> dict[str, torch.Tensor]:
    """measure -> D (K, gh, gw) of one image (C, H, W): each square cut by slicing, the last ones by
    the border; fill "zero", "mean" (the square's own per-channel mean) or "noise" (seeded)."""
    channels, height, width = image.shape
    noise = torch.randn(channels, height, width, generator=torch.Generator().manual_seed(seed))
    clean = layer_map(model, layer, image[None])[0].flatten(1)  # (K, h*w)
    peak = clean.argmax(1)
    units = torch.arange(len(clean))
    rows, cols = range(0, height - patch + stride, stride), range(0, width - patch + stride, stride)
    out = {m: torch.zeros(len(clean), len(rows), len(cols)) for m in MEASURES}
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            x = image.clone()
            square = x[:, r:r + patch, c:c + patch]
            if fill == "zero":
                square[:] = 0
            elif fill == "mean":
                square[:] = square.mean((1, 2), keepdim=True).clone()
            else:
                square[:] = noise[:, r:r + patch, c:c + patch]
            occluded = layer_map(model, layer, x[None])[0].flatten(1)
            out["mean"][:, i, j] = clean.mean(1) - occluded.mean(1)
            out["max"][:, i, j] = clean.amax(1) - occluded.amax(1)
            out["peak"][:, i, j] = clean[units, peak] - occluded[units, peak]
    return out
