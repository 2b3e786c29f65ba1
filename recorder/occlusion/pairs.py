"""Occlusion-pair trials (Zimmermann et al. 2021): which of two occluded images drives the unit more?

    pair = occlusion_pair(model, "conv3", unit=5, image=query)     # query (C, H, W)
    high, low = pair.images(query)     # the occluded image leaving the activation highest, lowest
    pair.high_value, pair.low_value    # the unit's activation on each

Every occluder position is tried: a square of 40 % of the image side by default,
stride 2, fill "mean", measure "mean" (DESIGN.md "Occlusion-pair trial"). Showing the
two in random left/right order, and choosing query images below the unit's top
images, is the study's part.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from recorder.occlusion.discrepancy import occluded_responses
from recorder.occlusion.grid import OcclusionGrid, noise_image


@dataclass(frozen=True)
class OcclusionPair:
    """The two occluder cells of a trial and the unit's activation with each.

        pair = occlusion_pair(model, "conv3", 5, query)
        pair.high, pair.high_value     # (row, col) of the cell, activation with it occluded
    """

    high: tuple[int, int]
    low: tuple[int, int]
    high_value: float
    low_value: float
    clean_value: float  # the activation on the unoccluded image
    patch: int
    stride: int
    fill: str
    seed: int = 0

    def images(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The occluded copies of `image` (C, H, W) of this trial: (high, low)."""
        grid = OcclusionGrid.of(image.shape[-2], image.shape[-1], self.patch, self.stride)
        gw = grid.shape[1]
        cells = torch.tensor([self.high[0] * gw + self.high[1], self.low[0] * gw + self.low[1]], device=image.device)
        noise = noise_image(image.shape[0], grid.height, grid.width, self.seed, image.device) \
            if self.fill == "noise" else None
        high, low = grid.occlude(image[None], torch.zeros(2, dtype=torch.int64, device=image.device), cells,
                                 self.fill, noise)
        return high, low


def default_patch(height: int, width: int, share: float = 0.4) -> int:
    """The occluder side: `share` of the image's shorter side, at least one pixel."""
    return max(1, round(share * min(height, width)))


def occlusion_pair(model: nn.Module, layer: str, unit: int, image: torch.Tensor, *, patch: int | None = None,
                   stride: int = 2, fill: str = "mean", measure: str = "mean", seed: int = 0,
                   batch_size: int = 256) -> OcclusionPair:
    """The occluder positions that leave `unit`'s activation on `image` (C, H, W) highest and lowest.

        pair = occlusion_pair(model, "conv3", unit=5, image=query, patch=None, stride=2)

    `patch=None` takes 40 % of the image side. Ties go to the first cell in row-major order.
    """
    if not torch.is_tensor(image) or image.dim() != 3:
        shape = tuple(image.shape) if torch.is_tensor(image) else type(image).__name__
        raise ValueError(f"image given an invalid value of shape {shape}; expected one image [C, H, W]")
    if isinstance(unit, bool) or not isinstance(unit, int):
        raise ValueError(f"unit given an invalid value: {unit!r}; expected a unit index (int)")
    patch = default_patch(*image.shape[1:]) if patch is None else patch
    clean, occluded = occluded_responses(model, layer, image[None], patch, stride, fill, measure, units=[unit],
                                         batch_size=batch_size, seed=seed)
    values = occluded[0, 0]  # (gh, gw)
    gw = values.shape[1]
    high, low = int(values.flatten().argmax()), int(values.flatten().argmin())
    return OcclusionPair((high // gw, high % gw), (low // gw, low % gw), float(values.flatten()[high]),
                         float(values.flatten()[low]), float(clean[0, 0]), patch, stride, fill, seed)
