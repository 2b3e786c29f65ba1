"""Discrepancy maps from occluded input crops: each occluded forward runs only where the map changes.

    window = trace_window(model, "conv3", (3, 64, 64))
    with LayerOutput(model, "conv3") as run:
        maps = run(images)                                       # (n, K, h, w) clean maps
        D = region_maps(CropRegions(run, window, grid, images, "zero"), grid, images, maps, ("mean", "peak"))
        D["mean"]                         # (n, K, gh, gw), as from full occluded forwards
        P = peak_maps(run, window, grid, images, maps, need, "zero")   # (n, K, gh, gw), need (n, K) bool

An occluder changes a layer's map only at the positions whose cone meets its square
(`Axis.affected`), and an aligned input crop computes those exactly (`Axis.crop`;
window.py says why). So:
- `region_maps` runs, per image and cell, the crop of the changed region once for
  every unit; "mean" sums `A - A'` over the region, "max" takes the larger of `A`'s
  max outside the region and `A'`'s inside, "peak" reads `A'` at the peak when the
  region holds it (0 otherwise);
- `peak_maps` ("peak" alone) runs, per image and peak position, only the cone of the
  peak and only for the cells whose square meets it: every other cell leaves the peak
  unchanged (D = 0). Units of an image with the same peak share the forwards.
Crops of one size and region offset share batches. Call inside `observation_mode`.
"""

from __future__ import annotations

import torch
from torch import nn

from recorder.hooks import LayerHooks
from recorder.occlusion.grid import OcclusionGrid
from recorder.occlusion.window import Axis, LayerWindow


class _Stop(Exception):
    """Raised from the layer's hook: the rest of the forward is not needed."""


class LayerOutput:
    """The output of one layer on a batch, the forward stopped there.

        with LayerOutput(model, "conv3") as layer:
            maps = layer(x)                   # (B, K, h, w)
    """

    def __init__(self, model: nn.Module, layer: str, units: torch.Tensor | None = None):
        self.model, self.units, self.output = model, units, None
        self.hooks = LayerHooks(model, [layer], self._keep)

    def _keep(self, name, output) -> None:
        self.output = output
        raise _Stop

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.output = None
        try:
            self.model(x)
        except _Stop:
            pass
        out = self.output
        return out if self.units is None else out[:, self.units.to(out.device)]

    def __enter__(self) -> LayerOutput:
        return self

    def __exit__(self, *exc) -> None:
        self.hooks.close()


def _exclusive_cummax(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Max over the entries before each one along `dim` (-inf for the first)."""
    running = x.cummax(dim).values
    first = torch.full_like(running.narrow(dim, 0, 1), -torch.inf)
    return torch.cat([first, running.narrow(dim, 0, x.shape[dim] - 1)], dim)


class _Outside:
    """Max of each map outside a rectangle, from prefix maxima: rows above, rows below, and the
    parts of the rectangle's rows left and right of it."""

    def __init__(self, maps: torch.Tensor):  # (n, K, h, w)
        rows = maps.amax(3)  # (n, K, h)
        self.above, self.below = _exclusive_cummax(rows, 2), _exclusive_cummax(rows.flip(2), 2).flip(2)
        self.left, self.right = _exclusive_cummax(maps, 3), _exclusive_cummax(maps.flip(3), 3).flip(3)

    def __call__(self, image, rows, cols) -> torch.Tensor:
        """(P, K) for images (P,), rectangle rows (P, rn) and cols (P, cn) in map positions."""
        first, last = cols[:, :1], cols[:, -1:]  # (P, 1)
        strips = [self.above[image, :, rows[:, 0]], self.below[image, :, rows[:, -1]],
                  self.left[image[:, None], :, rows, first].amax(1), self.right[image[:, None], :, rows, last].amax(1)]
        return torch.stack(strips).amax(0)


class CropRegions:
    """Changed regions of the layer's map for cells of the occluder grid, from input crops.

        regions = CropRegions(run, window, grid, images, "zero")
        key, low, count, starts = regions.plan(0, i)       # rows of grid row i (None: nothing changes)
        new = regions(image, cell, key_rows, key_cols, starts_rows, starts_cols)   # (P, K, rows, cols)
    """

    def __init__(self, run: LayerOutput, window: LayerWindow, grid: OcclusionGrid, images: torch.Tensor, fill: str,
                 noise: torch.Tensor | None = None):
        self.run, self.axes, self.grid, self.images = run, (window.rows, window.cols), grid, images
        self.fill, self.noise = fill, noise
        self.means = grid.square_means(images) if fill == "mean" else None

    def plan(self, axis: int, index: int):
        geometry = self.axes[axis]
        first = index * self.grid.stride
        low, high = geometry.affected(first, min(first + self.grid.patch, geometry.pixels))
        if high <= low:
            return None
        c0, c1 = geometry.crop(low, high)
        return (c1 - c0, high - low, low - c0 // geometry.jump), low, high - low, (c0,)

    def size(self, key_rows, key_cols) -> tuple[int, int]:
        """The input crop of the pairs of these keys."""
        return key_rows[0], key_cols[0]

    def __call__(self, image, cell, key_rows, key_cols, starts_rows, starts_cols) -> torch.Tensor:
        (hc, rn, ro), (wc, cn, co) = key_rows, key_cols
        x = self.grid.occlude_crops(self.images, image, cell, starts_rows[:, 0], starts_cols[:, 0], (hc, wc),
                                    self.fill, self.noise, self.means)
        return self.run(x)[:, :, ro:ro + rn, co:co + cn]


def _per_batch(batch_size: int, grid: OcclusionGrid, size: tuple[int, int]) -> int:
    """Crops per forward: as many input pixels as `batch_size` whole images."""
    return max(1, batch_size * grid.height * grid.width // (size[0] * size[1]))


def region_maps(regions, grid: OcclusionGrid, images: torch.Tensor, maps: torch.Tensor, measures: tuple[str, ...],
                batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Discrepancy maps `measure -> (n, K, gh, gw)` of every unit on each image.

    `regions` (a `CropRegions`, or a `StagedRegions` for a plain chain) gives the changed region of the
    layer's map per cell; `images` (n, C, H, W); `maps` (n, K, h, w) the clean maps of
    the units wanted, float32.
    """
    n, k, h, w = maps.shape
    gh, gw = grid.shape
    device = images.device
    rows = [regions.plan(0, i) for i in range(gh)]
    cols = [regions.plan(1, j) for j in range(gw)]
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            if r is not None and c is not None:
                groups.setdefault((r[0], c[0]), []).append(i * gw + j)
    row_low, col_low = (torch.tensor([p[1] if p else 0 for p in plan], device=device) for plan in (rows, cols))
    stages = max((len(p[3]) for p in rows + cols if p), default=1)
    row_starts, col_starts = (torch.tensor([p[3] if p else (0,) * stages for p in plan], device=device)
                              for plan in (rows, cols))  # (g, stages)
    top, argmax = maps.flatten(2).max(2)  # (n, K)
    peak_row, peak_col = argmax // w, argmax % w
    outside = _Outside(maps) if "max" in measures else None
    out = {m: torch.zeros(n, k, gh, gw, device=device) for m in measures}
    for (key_rows, key_cols), cells in groups.items():
        rn, cn = rows[cells[0] // gw][2], cols[cells[0] % gw][2]
        cells = torch.tensor(cells, device=device)
        image_all, cell_all = torch.arange(n, device=device).repeat_interleave(len(cells)), cells.repeat(n)
        per = _per_batch(batch_size, grid, regions.size(key_rows, key_cols))
        for start in range(0, len(cell_all), per):
            image, cell = image_all[start:start + per], cell_all[start:start + per]  # (P,)
            i, j = cell // gw, cell % gw
            new = regions(image, cell, key_rows, key_cols, row_starts[i], col_starts[j]).float()  # (P, K, rn, cn)
            r_idx = row_low[i][:, None] + torch.arange(rn, device=device)  # (P, rn)
            c_idx = col_low[j][:, None] + torch.arange(cn, device=device)  # (P, cn)
            if "mean" in measures:
                old = maps[image[:, None, None], :, r_idx[:, :, None], c_idx[:, None, :]]  # (P, rn, cn, K)
                out["mean"][image, :, i, j] = (old.sum((1, 2)) - new.sum((2, 3))) / (h * w)
            if "max" in measures:
                rest = outside(image, r_idx, c_idx)  # (P, K)
                out["max"][image, :, i, j] = top[image] - torch.maximum(rest, new.amax((2, 3)))
            if "peak" in measures:
                pr, pc = peak_row[image] - r_idx[:, :1], peak_col[image] - c_idx[:, :1]  # (P, K)
                inside = (pr >= 0) & (pr < rn) & (pc >= 0) & (pc < cn)
                at = (pr.clamp(0, rn - 1) * cn + pc.clamp(0, cn - 1))[..., None]  # (P, K, 1)
                value = new.flatten(2).gather(2, at)[..., 0]  # (P, K)
                out["peak"][image, :, i, j] = torch.where(inside, top[image] - value, 0.0)
    return out


def _peak_axis(axis: Axis, q: torch.Tensor, patch: int, stride: int, cells: int):
    """Per peak position q (W,): crop first pixel, crop length, q's offset in the crop's map, and the
    first and last grid index whose square meets q's cone (clipped to the image)."""
    low = (axis.left + q * axis.jump).clamp(min=0)
    high = (axis.left + q * axis.jump + axis.size).clamp(max=axis.pixels)
    first = low // axis.jump * axis.jump
    first_cell = (torch.div(low - patch, stride, rounding_mode="floor") + 1).clamp(min=0)
    last_cell = ((high - 1) // stride).clamp(max=cells - 1)
    return first, high - first, q - first // axis.jump, first_cell, last_cell


def peak_maps(run: LayerOutput, window: LayerWindow, grid: OcclusionGrid, images: torch.Tensor,
              maps: torch.Tensor, need: torch.Tensor, fill: str, noise: torch.Tensor | None = None,
              batch_size: int = 256) -> torch.Tensor:
    """"peak" discrepancy maps `(n, K, gh, gw)` of the (image, unit) pairs where `need` (n, K) is
    True (0 elsewhere); arguments as in `region_maps`."""
    n, k, h, w = maps.shape
    gh, gw = grid.shape
    device = images.device
    top, argmax = maps.flatten(2).max(2)  # (n, K)
    image_of, unit_of = need.to(device).nonzero(as_tuple=True)  # (m,) pairs
    windows, window_of = torch.unique(image_of * (h * w) + argmax[image_of, unit_of], return_inverse=True)
    order = torch.argsort(window_of)  # pairs grouped by window
    count = torch.bincount(window_of, minlength=len(windows))
    start_of = torch.cumsum(count, 0) - count  # (W,)
    w_image, w_row, w_col = windows // (h * w), windows % (h * w) // w, windows % w
    r_first, r_len, r_off, i_first, i_last = _peak_axis(window.rows, w_row, grid.patch, grid.stride, gh)
    c_first, c_len, c_off, j_first, j_last = _peak_axis(window.cols, w_col, grid.patch, grid.stride, gw)
    means = grid.square_means(images) if fill == "mean" else None
    out = torch.zeros(n, k, gh, gw, device=device)
    shapes = torch.stack([r_len, r_off, c_len, c_off], 1)  # (W, 4)
    kinds, kind_of = torch.unique(shapes, dim=0, return_inverse=True)
    for kind, (hc, ro, wc, co) in enumerate(kinds.tolist()):
        ws = (kind_of == kind).nonzero()[:, 0]  # (Wk,) windows of this crop shape
        di = torch.arange(int((i_last - i_first)[ws].max()) + 1, device=device)
        dj = torch.arange(int((j_last - j_first)[ws].max()) + 1, device=device)
        ti = i_first[ws, None, None] + di[:, None]  # (Wk, mi, 1)
        tj = j_first[ws, None, None] + dj[None, :]  # (Wk, 1, mj)
        valid = (ti <= i_last[ws, None, None]) & (tj <= j_last[ws, None, None])  # (Wk, mi, mj)
        tw = ws[:, None, None].expand_as(valid)[valid]  # (T,) triples: window, cell row, cell col
        ti, tj = ti.expand_as(valid)[valid], tj.expand_as(valid)[valid]
        per = _per_batch(batch_size, grid, (hc, wc))
        for start in range(0, len(tw), per):
            bw, bi, bj = tw[start:start + per], ti[start:start + per], tj[start:start + per]  # (P,)
            image = w_image[bw]
            x = grid.occlude_crops(images, image, bi * gw + bj, r_first[bw], c_first[bw], (hc, wc), fill,
                                   noise, means)
            value = run(x)[:, :, ro, co].float()  # (P, K)
            # each triple serves every pair of its window
            reps = count[bw]
            triple = torch.arange(len(bw), device=device).repeat_interleave(reps)
            within = torch.arange(len(triple), device=device) - (torch.cumsum(reps, 0) - reps).repeat_interleave(reps)
            pair = order[start_of[bw][triple] + within]
            pi, pu = image_of[pair], unit_of[pair]
            out[pi, pu, bi[triple], bj[triple]] = top[pi, pu] - value[triple, pu]
    return out
