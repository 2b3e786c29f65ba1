"""Occluded maps of a plain chain of modules, computed stage by stage only where each map changes.

    regions = StagedRegions(window.chain, grid, images, units, "zero")   # runs the clean stages
    D = region_maps(regions, grid, images, regions.maps, ("mean", "peak"))    # cropped.py

A stage is one conv or pool with the pointwise modules after it. An occluder changes
stage 1's map only at the positions whose window meets its square; those are computed
from an aligned crop of the occluded image (window.py says why a crop is exact). Stage
l + 1 then changes only where its window meets stage l's changed positions: its input
crop is the clean map of stage l with the changed positions written in. So every stage
runs only on the few positions near the occluder instead of on the union of the
layer's receptive fields (what `CropRegions` runs), exactly.
"""

from __future__ import annotations

import torch
from torch import nn

from recorder.occlusion.grid import OcclusionGrid


def _geometry(module: nn.Module | None) -> tuple[tuple[int, int, int], ...]:
    """Per axis (effective kernel, stride, padding before) of a stage's conv or pool; identity for None."""
    if module is None:
        return ((1, 1, 0), (1, 1, 0))
    pair = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v, v)  # noqa: E731
    kernel, stride = pair(module.kernel_size), pair(module.stride or module.kernel_size)
    dilation, padding = pair(getattr(module, "dilation", 1)), module.padding
    if isinstance(padding, str):  # Conv2d "valid" or "same"
        padding = tuple(0 if padding == "valid" else d * (k - 1) // 2 for k, d in zip(kernel, dilation))
    padding = pair(padding)
    return tuple((dilation[a] * (kernel[a] - 1) + 1, stride[a], padding[a]) for a in range(2))


def _stages(chain) -> list[tuple[nn.Module | None, list[nn.Module]]]:
    stages: list = []
    for module in chain:
        if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            stages.append((module, []))
        elif stages:
            stages[-1][1].append(module)
        else:
            stages.append((None, [module]))
    return stages


class StagedRegions:
    """Changed regions of the layer's map for cells of the occluder grid, stage by stage.

        regions = StagedRegions(window.chain, grid, images, units, "zero")
        key, low, count, starts = regions.plan(0, i)       # rows of grid row i (None: nothing changes)
        new = regions(image, cell, key_rows, key_cols, starts_rows, starts_cols)   # (P, K, rows, cols)
    """

    def __init__(self, chain, grid: OcclusionGrid, images: torch.Tensor, units: torch.Tensor | None, fill: str,
                 noise: torch.Tensor | None = None, batch_size: int = 256):
        self.stages = _stages(chain)
        self.geometry = [_geometry(module) for module, _ in self.stages]
        self.grid, self.images, self.units, self.fill, self.noise = grid, images, units, fill, noise
        self.means = grid.square_means(images) if fill == "mean" else None
        outputs = [[] for _ in self.stages]
        for first in range(0, len(images), batch_size):
            x = images[first:first + batch_size]
            for s in range(len(self.stages)):
                x = self._stage(s, x)
                outputs[s].append(x)
        self.outputs = [torch.cat(out) for out in outputs]  # stage s: (n, C_s, h_s, w_s)
        last = self.outputs[-1]
        self.maps = (last if units is None else last[:, units.to(last.device)]).float()  # (n, K, h, w)
        self.sizes = [tuple(images.shape[2:])] + [tuple(out.shape[2:]) for out in self.outputs]

    def _stage(self, s: int, x: torch.Tensor) -> torch.Tensor:
        """Stage s on a batch; `forward` directly, so that no hook (the layer's own included) sees crops."""
        module, pointwise = self.stages[s]
        x = x if module is None else module.forward(x)
        for m in pointwise:
            x = m.forward(x)
        return x

    def plan(self, axis: int, index: int):
        """`(key, first changed position, count, crop starts per stage)` of grid index `index` along
        `axis` (0 rows, 1 cols); None when the square changes nothing in the layer's map."""
        first = index * self.grid.stride
        low, high = first, min(first + self.grid.patch, self.sizes[0][axis])
        key, starts = [], []
        for s, geometry in enumerate(self.geometry):
            kernel, stride, pad = geometry[axis]
            n_in, n_out = self.sizes[s][axis], self.sizes[s + 1][axis]
            out_low = max(0, (low + pad - kernel) // stride + 1)
            out_high = min(n_out, (high - 1 + pad) // stride + 1)
            if out_high <= out_low:
                return None
            c0 = max(0, out_low * stride - pad) // stride * stride
            c1 = min(n_in, (out_high - 1) * stride - pad + kernel)
            put0, put1 = max(low, c0), min(high, c1)  # changed inputs inside the crop
            key.append((c1 - c0, put0 - c0, put1 - c0, put0 - low, put1 - low, out_low - c0 // stride,
                        out_high - out_low))
            starts.append(c0)
            low, high = out_low, out_high
        return tuple(key), low, high - low, tuple(starts)

    def size(self, key_rows, key_cols) -> tuple[int, int]:
        """The first stage's input crop of the pairs of these keys (the largest one)."""
        return key_rows[0][0], key_cols[0][0]

    def __call__(self, image, cell, key_rows, key_cols, starts_rows, starts_cols) -> torch.Tensor:
        """New values `(P, K, rows, cols)` of the changed region of each (image, cell) pair; all pairs
        share `key_rows`, `key_cols`; `starts_*` (P, stages) the crops' first positions."""
        changed = None
        for s, ((hc, pr0, pr1, vr0, vr1, orow, nrow), (wc, pc0, pc1, vc0, vc1, ocol, ncol)) in enumerate(
                zip(key_rows, key_cols)):
            if s == 0:
                x = self.grid.occlude_crops(self.images, image, cell, starts_rows[:, 0], starts_cols[:, 0], (hc, wc),
                                            self.fill, self.noise, self.means)
            else:
                rows = starts_rows[:, s, None] + torch.arange(hc, device=image.device)  # (P, hc)
                cols = starts_cols[:, s, None] + torch.arange(wc, device=image.device)  # (P, wc)
                x = self.outputs[s - 1][image[:, None, None], :, rows[:, :, None], cols[:, None, :]]
                x = x.permute(0, 3, 1, 2).contiguous()  # (P, C, hc, wc) clean
                x[:, :, pr0:pr1, pc0:pc1] = changed[:, :, vr0:vr1, vc0:vc1]
            changed = self._stage(s, x)[:, :, orow:orow + nrow, ocol:ocol + ncol]
        return changed if self.units is None else changed[:, self.units.to(changed.device)]
