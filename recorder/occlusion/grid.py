"""The occluder grid: square positions, occluded copies of images, and pixel maps.

    grid = OcclusionGrid.of(64, 64, patch=8, stride=4)     # grid.shape == (15, 15)
    occluded = grid.occlude(images, image_index, cells, fill="mean")   # (P, C, H, W)
    pixels = pixel_map(D, (64, 64), patch=8, stride=4)    # D (N, K, gh, gw) -> (N, K, H, W)

Top-left corners lie at rows and columns `0, s, 2s, ... < H - p + s`, so the last
square may be cut by the border and every pixel is covered (Captum's grid):
`gh = ceil((H - p) / s) + 1`. Cells are numbered row-major, `cell = i * gw + j`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

FILLS = ("zero", "mean", "noise")
MEASURES = ("mean", "max", "peak")


def check_options(fill: str, measure: str | tuple[str, ...]) -> None:
    """Raise a ValueError naming a fill or measure that is not known."""
    if fill not in FILLS:
        raise ValueError(f"occlusion fill given an invalid value: {fill!r}; valid fills are {list(FILLS)}")
    for m in (measure,) if isinstance(measure, str) else measure:
        if m not in MEASURES:
            raise ValueError(f"occlusion measure given an invalid value: {m!r}; valid measures are {list(MEASURES)}")


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"occlusion {name} given an invalid value: {value!r}; expected a positive integer")
    return value


def grid_shape(height: int, width: int, patch: int, stride: int) -> tuple[int, int]:
    """`(gh, gw)` of the occluder grid; a ValueError names a bad patch or stride."""
    patch, stride = _positive_int("patch", patch), _positive_int("stride", stride)
    if patch > min(height, width):
        raise ValueError(f"occlusion patch given an invalid value: {patch!r}; it must not exceed the image "
                         f"size {height}x{width}")
    return math.ceil((height - patch) / stride) + 1, math.ceil((width - patch) / stride) + 1


def _cover(size: int, patch: int, stride: int, n: int, device) -> torch.Tensor:
    """`(n, size)` bool: which pixels of one axis square i covers (cut at the border)."""
    pixel = torch.arange(size, device=device)
    start = torch.arange(n, device=device)[:, None] * stride
    return (pixel >= start) & (pixel < start + patch)


@dataclass(frozen=True)
class OcclusionGrid:
    """Occluder squares on an `height x width` image, with the fills that cover them.

        grid = OcclusionGrid.of(32, 32, patch=5, stride=3)
        x_occ = grid.occlude(x, torch.tensor([0, 0]), torch.tensor([0, 7]), fill="zero")
    """

    height: int
    width: int
    patch: int
    stride: int

    @classmethod
    def of(cls, height: int, width: int, patch: int, stride: int) -> OcclusionGrid:
        grid_shape(height, width, patch, stride)  # validates
        return cls(height, width, patch, stride)

    @property
    def shape(self) -> tuple[int, int]:
        return grid_shape(self.height, self.width, self.patch, self.stride)

    @property
    def cells(self) -> int:
        gh, gw = self.shape
        return gh * gw

    def covers(self, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Row cover `(gh, H)` and column cover `(gw, W)`, bool."""
        gh, gw = self.shape
        return (_cover(self.height, self.patch, self.stride, gh, device),
                _cover(self.width, self.patch, self.stride, gw, device))

    def masks(self, cells: torch.Tensor) -> torch.Tensor:
        """`(P, H, W)` bool: the square of each cell index in `cells` (P,)."""
        rows, cols = self.covers(cells.device)
        gw = self.shape[1]
        return rows[cells // gw][:, :, None] & cols[cells % gw][:, None, :]

    def occlude(self, images: torch.Tensor, image_index: torch.Tensor, cells: torch.Tensor, fill: str,
                noise: torch.Tensor | None = None) -> torch.Tensor:
        """Copies of `images[image_index]` (P, C, H, W), each occluded at its cell in `cells` (P,).

        `fill`: "zero" writes 0, "mean" the square's own per-channel mean in that image,
        "noise" the values of `noise` (C, H, W) under the square.
        """
        x = images[image_index]  # (P, C, H, W)
        mask = self.masks(cells)[:, None]  # (P, 1, H, W)
        if fill == "zero":
            return x.masked_fill(mask, 0.0)
        if fill == "mean":
            weight = mask.to(x.dtype)
            mean = (x * weight).sum((2, 3), keepdim=True) / weight.sum((2, 3), keepdim=True)  # (P, C, 1, 1)
            return torch.where(mask, mean, x)
        if fill == "noise":
            if noise is None:
                raise ValueError("fill 'noise' needs the noise image (C, H, W)")
            return torch.where(mask, noise.to(x.dtype)[None], x)
        check_options(fill, "mean")
        raise AssertionError(fill)

    def square_means(self, images: torch.Tensor) -> torch.Tensor:
        """`(N, gh * gw, C)`: each square's per-channel mean in each image (fill "mean")."""
        rows, cols = (cover.to(images.dtype) for cover in self.covers(images.device))  # (gh, H), (gw, W)
        sums = torch.einsum("nchw,ih,jw->nijc", images, rows, cols)  # (N, gh, gw, C)
        counts = rows.sum(1)[:, None] * cols.sum(1)[None, :]  # (gh, gw)
        return (sums / counts[..., None]).flatten(1, 2)

    def occlude_crops(self, images: torch.Tensor, image_index: torch.Tensor, cells: torch.Tensor,
                      top: torch.Tensor, left: torch.Tensor, size: tuple[int, int], fill: str,
                      noise: torch.Tensor | None = None, means: torch.Tensor | None = None) -> torch.Tensor:
        """Crops `(P, C, h, w)`: rows `top:top + h`, cols `left:left + w` of `images[image_index]`,
        each occluded at its cell in `cells` (P,) as `occlude` would, the square cut by the crop.

        `means` (N, gh * gw, C) from `square_means` for fill "mean" (a square's mean is over
        the whole square, also where the crop cuts it); `noise` (C, H, W) for fill "noise".
        """
        height, width = size
        rows = top[:, None] + torch.arange(height, device=top.device)  # (P, h)
        cols = left[:, None] + torch.arange(width, device=left.device)  # (P, w)
        x = images[image_index[:, None, None], :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
        gw = self.shape[1]
        first_row, first_col = (cells // gw * self.stride)[:, None], (cells % gw * self.stride)[:, None]
        inside_rows = (rows >= first_row) & (rows < first_row + self.patch)  # (P, h)
        inside_cols = (cols >= first_col) & (cols < first_col + self.patch)  # (P, w)
        mask = (inside_rows[:, :, None] & inside_cols[:, None, :])[:, None]  # (P, 1, h, w)
        if fill == "zero":
            return x.masked_fill(mask, 0.0).contiguous()
        if fill == "mean":
            if means is None:
                raise ValueError("fill 'mean' needs the squares' means (square_means)")
            return torch.where(mask, means[image_index, cells][:, :, None, None].to(x.dtype), x).contiguous()
        if fill == "noise":
            if noise is None:
                raise ValueError("fill 'noise' needs the noise image (C, H, W)")
            under = noise.to(x.dtype)[:, rows[:, :, None], cols[:, None, :]].transpose(0, 1)  # (P, C, h, w)
            return torch.where(mask, under, x).contiguous()
        check_options(fill, "mean")
        raise AssertionError(fill)


def noise_image(channels: int, height: int, width: int, seed: int, device=None) -> torch.Tensor:
    """Seeded standard Gaussian noise `(C, H, W)`, drawn from its own generator: the
    occluder of fill "noise" shows it under the square, the same for every image."""
    generator = torch.Generator().manual_seed(int(seed))
    return torch.randn(channels, height, width, generator=generator).to(device)


def pixel_map(discrepancy: torch.Tensor, image_size: tuple[int, int], patch: int, stride: int) -> torch.Tensor:
    """Spread each `D[..., i, j]` over its square, averaged where squares overlap.

        pixels = pixel_map(D, (64, 64), patch=8, stride=4)   # (N, K, 15, 15) -> (N, K, 64, 64)

    For constant fills this equals Captum's `Occlusion.attribute` with the same
    window and strides.
    """
    height, width = image_size
    grid = OcclusionGrid.of(height, width, patch, stride)
    if tuple(discrepancy.shape[-2:]) != grid.shape:
        raise ValueError(f"discrepancy maps are {tuple(discrepancy.shape[-2:])} cells but patch {patch} and "
                         f"stride {stride} on a {height}x{width} image give a {grid.shape} grid")
    rows, cols = grid.covers(discrepancy.device)
    rows, cols = rows.to(discrepancy.dtype), cols.to(discrepancy.dtype)  # (gh, H), (gw, W)
    spread = torch.einsum("...ij,ih,jw->...hw", discrepancy, rows, cols)  # (..., H, W)
    return spread / (rows.sum(0)[:, None] * cols.sum(0)[None, :])
