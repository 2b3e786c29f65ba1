"""Discrepancy maps: how much occluding each grid cell of an image lowers a unit's response.

    D = discrepancy(model, "conv3", images, patch=8, stride=4, fill="mean", measure="mean")  # (N, K, gh, gw)
    top = occlude_topk(model, {"conv3": topk_index}, probe, 8, 4, "mean", ("mean", "peak"))
    top["conv3"].maps["peak"]          # (K, k, gh, gw): unit k's maps of its top-k images

`D[i, j] = m(A(x)) - m(A(x occluded at cell (i, j)))` for each unit's map `A`, with
`m` the spatial mean, the spatial max, or "peak": A at the position of its max on the
unoccluded image. Where a layer's geometry is certified (window.py), occluded
forwards run only where the map changes: stage by stage on a plain chain (staged.py),
on aligned input crops otherwise, on the peak's cone for "peak" alone (cropped.py);
elsewhere on full occluded images. Every forward stops at the deepest layer needed,
runs in `observation_mode` (eval, no_grad, train flags and RNG states restored) and
on the model's device.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from recorder.hooks import LayerHooks
from recorder.occlusion.cropped import CropRegions, LayerOutput, peak_maps, region_maps
from recorder.occlusion.grid import OcclusionGrid, check_options, noise_image
from recorder.occlusion.staged import StagedRegions
from recorder.occlusion.window import LayerWindow, trace_window, why_not
from recorder.probe_pass import observation_mode

Measures = str | Sequence[str]


class _Stop(Exception):
    """Raised from a hook once every needed layer has run: the rest of the forward is skipped."""


def model_device(model: nn.Module, fallback: torch.device) -> torch.device:
    """The device of the model's first parameter or buffer (`fallback` when it has none)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return fallback


class _Reduce:
    """Hook callback: reduce each layer's map to per-unit measures, stop once all layers ran.

    Clean pass (`peak is None`): also keeps each unit's argmax (flat index into h*w).
    Occluded pass: `peak[name]` (B, K) gives the positions the "peak" measure reads.
    """

    def __init__(self, units: Mapping[str, torch.Tensor | None], measures: tuple[str, ...]):
        self.units, self.measures = units, measures
        self.peak: dict[str, torch.Tensor] | None = None
        self.values: dict[str, dict[str, torch.Tensor]] = {}
        self.sizes: dict[str, tuple[int, int]] = {}

    def __call__(self, name: str, output) -> None:
        if name in self.values:
            return  # a module called twice: its first call counts
        if not torch.is_tensor(output) or output.dim() != 4:
            shape = tuple(output.shape) if torch.is_tensor(output) else type(output).__name__
            raise ValueError(f"layer {name!r} has output {shape}; occlusion needs a layer with a spatial "
                             "map [B, K, H, W] (a conv layer)")
        units = self.units[name]
        if units is not None:
            if units.numel() and int(units.max()) >= output.shape[1]:
                raise ValueError(f"units {units.tolist()} of layer {name!r}: the layer has only "
                                 f"{output.shape[1]} units (valid: 0..{output.shape[1] - 1})")
            output = output[:, units.to(output.device)]
        flat = output.detach().float().flatten(2)  # (B, K, h*w)
        values = {}
        if "mean" in self.measures:
            values["mean"] = flat.mean(2)
        if self.peak is None:
            values["max"], values["argmax"] = flat.max(2)
            values["peak"] = values["max"]
        else:
            if "max" in self.measures:
                values["max"] = flat.amax(2)
            if "peak" in self.measures:
                values["peak"] = flat.gather(2, self.peak[name][..., None]).squeeze(2)
        self.values[name] = values
        self.sizes[name] = tuple(output.shape[2:])
        if len(self.values) == len(self.units):
            raise _Stop

    def run(self, model: nn.Module, x: torch.Tensor) -> dict[str, dict[str, torch.Tensor]]:
        self.values = {}
        try:
            model(x)
        except _Stop:
            pass
        missing = [name for name in self.units if name not in self.values]
        if missing:
            raise ValueError(f"layer(s) {missing} were not called during the forward pass; occlude layers "
                             "that the model's forward uses")
        return self.values


def _measures(measure: Measures) -> tuple[str, ...]:
    measures = (measure,) if isinstance(measure, str) else tuple(measure)
    if not measures:
        raise ValueError("occlusion measure is empty; valid measures are ['mean', 'max', 'peak']")
    return measures


def _check_images(images: torch.Tensor) -> None:
    if not torch.is_tensor(images) or images.dim() != 4 or not images.is_floating_point():
        shape = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
        raise ValueError(f"images given an invalid value of shape {shape}; expected a float tensor [N, C, H, W]")


def _units(units, name: str) -> torch.Tensor | None:
    if units is None:
        return None
    index = torch.as_tensor(units, dtype=torch.int64).reshape(-1)
    if index.numel() and int(index.min()) < 0:
        raise ValueError(f"units {index.tolist()} of layer {name!r}: unit indices must be >= 0")
    return index


@dataclass
class _Chunk:
    index: torch.Tensor  # (n,) positions of these images among those swept
    clean: dict[str, dict[str, torch.Tensor]]  # layer -> measure -> (n, K); "argmax" (n, K)
    maps: dict[str, dict[str, torch.Tensor]]  # layer -> measure -> (n, K, gh, gw) discrepancy maps
    sizes: dict[str, tuple[int, int]]  # layer -> (h, w)


def _sweep(model: nn.Module, units: Mapping[str, torch.Tensor | None], load: Callable[[torch.Tensor], torch.Tensor],
           n_images: int, grid: OcclusionGrid, fill: str, measures: tuple[str, ...], batch_size: int,
           seed: int, device: torch.device) -> Iterator[_Chunk]:
    """Measures of every layer on each image and on each of its occluded copies, chunk by chunk.

    One occluded forward serves every unit of every layer; occluded copies of several
    images share a batch. Call inside `observation_mode(model)`.
    """
    gh, gw = grid.shape
    per_chunk = max(1, math.ceil(4 * batch_size / grid.cells))  # images per chunk: ~4 full batches
    noise = None
    reduce = _Reduce(units, measures)
    with LayerHooks(model, list(units), reduce):
        for first in range(0, n_images, per_chunk):
            index = torch.arange(first, min(first + per_chunk, n_images))
            images = load(index).to(device)  # (n, C, H, W)
            if fill == "noise" and noise is None:
                noise = noise_image(images.shape[1], grid.height, grid.width, seed, device)
            reduce.peak = None
            clean = {name: {} for name in units}
            for start in range(0, len(index), batch_size):
                for name, values in reduce.run(model, images[start:start + batch_size]).items():
                    for key, value in values.items():
                        clean[name].setdefault(key, []).append(value)
            clean = {name: {key: torch.cat(v) for key, v in values.items()} for name, values in clean.items()}
            sizes = dict(reduce.sizes)
            pairs = torch.arange(len(index) * grid.cells, device=device)
            image_of, cell_of = pairs // grid.cells, pairs % grid.cells
            occluded = {name: {m: [] for m in measures} for name in units}
            for start in range(0, len(pairs), batch_size):
                img, cell = image_of[start:start + batch_size], cell_of[start:start + batch_size]
                reduce.peak = {name: clean[name]["argmax"][img] for name in units}
                x = grid.occlude(images, img, cell, fill, noise)  # (P, C, H, W)
                for name, values in reduce.run(model, x).items():
                    for m in measures:
                        occluded[name][m].append(values[m])
            maps = {name: {m: clean[name][m][:, :, None, None]
                           - torch.cat(v).reshape(len(index), gh, gw, -1).permute(0, 3, 1, 2)
                           for m, v in values.items()} for name, values in occluded.items()}
            yield _Chunk(index, clean, maps, sizes)


def _cropped_sweep(model: nn.Module, layer: str, window: LayerWindow, units: torch.Tensor | None,
                   load: Callable[[torch.Tensor], torch.Tensor], positions: torch.Tensor,
                   need: Callable[[torch.Tensor], torch.Tensor] | None, grid: OcclusionGrid, fill: str,
                   measures: tuple[str, ...], batch_size: int, seed: int, device: torch.device) -> Iterator[_Chunk]:
    """As `_sweep`, for one layer whose geometry is certified: occluded forwards on crops (cropped.py).

    `positions` (n,) the images to sweep; `need(index)` (n, K) bool: the (image, unit) pairs
    whose maps are wanted (all when None; only "peak" alone makes use of it).
    """
    k = window.units if units is None else len(units)
    per_image = k * window.rows.positions * window.cols.positions * 4 + window.chain_floats  # maps, strips, stages
    per_chunk = max(1, (1 << 24) // max(1, per_image))
    noise = None
    with LayerOutput(model, layer, units) as run:
        for first in range(0, len(positions), per_chunk):
            index = positions[first:first + per_chunk]
            images = load(index).to(device)  # (n, C, H, W)
            if fill == "noise" and noise is None:
                noise = noise_image(images.shape[1], grid.height, grid.width, seed, device)
            staged = None if set(measures) == {"peak"} or window.chain is None else \
                StagedRegions(window.chain, grid, images, units, fill, noise, batch_size)
            clean_maps = staged.maps if staged is not None else torch.cat(
                [run(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]).float()  # (n, K, h, w)
            flat = clean_maps.flatten(2)
            top, argmax = flat.max(2)
            clean = {"mean": flat.mean(2), "max": top, "peak": top, "argmax": argmax}
            if set(measures) == {"peak"}:
                wanted = torch.ones_like(top, dtype=torch.bool) if need is None else need(index)
                maps = {"peak": peak_maps(run, window, grid, images, clean_maps, wanted, fill, noise, batch_size)}
            else:
                regions = staged or CropRegions(run, window, grid, images, fill, noise)
                maps = region_maps(regions, grid, images, clean_maps, measures, batch_size)
            yield _Chunk(index, {layer: clean}, {layer: maps}, {layer: tuple(clean_maps.shape[2:])})


def _window(model: nn.Module, layer: str, input_size: tuple[int, int, int],
            windowed: bool | None) -> LayerWindow | None:
    """The layer's certified geometry when crops are to be used, None for full-image forwards."""
    if windowed is False:
        return None
    if windowed not in (None, True):
        raise ValueError(f"windowed given an invalid value: {windowed!r}; expected None (crops where the model "
                         "is certified), True (crops, or an error) or False (full images)")
    reason = why_not(model, layer, input_size)
    if reason is None:
        return trace_window(model, layer, input_size)
    if windowed:
        raise ValueError(f"layer {layer!r} cannot be occluded on input crops: {reason}; pass windowed=None to "
                         "fall back to full-image forwards")
    return None


def _validate(images_size: tuple[int, int], patch, stride, fill, measures, batch_size) -> OcclusionGrid:
    check_options(fill, measures)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size given an invalid value: {batch_size!r}; expected a positive integer")
    return OcclusionGrid.of(*images_size, patch, stride)


def _single_layer(model, layer, images, patch, stride, fill, measure, units, batch_size, seed,
                  windowed) -> tuple[torch.Tensor, torch.Tensor]:
    """`m(A(x))` (N, K) and the discrepancy maps (N, K, gh, gw) of one layer and one measure."""
    _check_images(images)
    measures = _measures(measure)
    if len(measures) != 1:
        raise ValueError(f"give one measure, got {measure!r}; occlude_topk takes several")
    grid = _validate(tuple(images.shape[2:]), patch, stride, fill, measures, batch_size)
    device = model_device(model, images.device)
    chosen = {layer: _units(units, layer)}
    window = _window(model, layer, tuple(images.shape[1:]), windowed)
    _check_units(chosen[layer], layer, window)
    load = lambda index: images[index.to(images.device)]  # noqa: E731
    clean, maps = [], []
    with observation_mode(model):
        chunks = _sweep(model, chosen, load, len(images), grid, fill, measures, batch_size, seed, device) \
            if window is None else _cropped_sweep(model, layer, window, chosen[layer], load,
                                                  torch.arange(len(images)), None, grid, fill, measures,
                                                  batch_size, seed, device)
        for chunk in chunks:
            clean.append(chunk.clean[layer][measures[0]])  # (n, K)
            maps.append(chunk.maps[layer][measures[0]])  # (n, K, gh, gw)
    return torch.cat(clean), torch.cat(maps)


def _check_units(units: torch.Tensor | None, layer: str, window: LayerWindow | None) -> None:
    if window is not None and units is not None and units.numel() and int(units.max()) >= window.units:
        raise ValueError(f"units {units.tolist()} of layer {layer!r}: the layer has only {window.units} units "
                         f"(valid: 0..{window.units - 1})")


def occluded_responses(model: nn.Module, layer: str, images: torch.Tensor, patch: int, stride: int,
                       fill: str = "zero", measure: str = "mean", *, units: Sequence[int] | None = None,
                       batch_size: int = 256, seed: int = 0,
                       windowed: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`m(A(x))` (N, K) and `m(A(x occluded at each cell))` (N, K, gh, gw) of every unit (or of `units`).

        clean, occluded = occluded_responses(model, "conv3", images, 8, 4, "mean", "mean")

    `images` (N, C, H, W) in model-input space; float32 results on the model's device.
    `fill` "noise" draws its noise image from `seed` (the same for every image).
    `windowed`: None runs occluded forwards on input crops where the model's geometry
    is certified (window.py) and on full images elsewhere; True insists on crops (a
    ValueError says why not), False always runs full images. The results agree.
    """
    clean, maps = _single_layer(model, layer, images, patch, stride, fill, measure, units, batch_size, seed,
                                windowed)
    return clean, clean[:, :, None, None] - maps


def discrepancy(model: nn.Module, layer: str, images: torch.Tensor, patch: int, stride: int, fill: str = "zero",
                measure: str = "mean", *, units: Sequence[int] | None = None, batch_size: int = 256,
                seed: int = 0, windowed: bool | None = None) -> torch.Tensor:
    """Discrepancy maps `(N, K, gh, gw)` of every unit (or of `units`) of `layer` on each image.

        D = discrepancy(model, "conv3", images, patch=8, stride=4, fill="mean", measure="peak")

    `D[n, k, i, j] = m(A_k(x_n)) - m(A_k(x_n occluded at cell (i, j)))`; arguments as in
    `occluded_responses`.
    """
    return _single_layer(model, layer, images, patch, stride, fill, measure, units, batch_size, seed, windowed)[1]


@dataclass
class TopkOcclusion:
    """Occlusion of each unit's top-k images at one layer.

        top = occlude_topk(model, {"conv3": topk_index}, images, 8, 4)["conv3"]
        top.maps["mean"]      # (K, k, gh, gw) discrepancy maps
        top.peak              # (K, k, 2) row, col of the unit's max on each unoccluded image
    """

    maps: dict[str, torch.Tensor]
    peak: torch.Tensor
    layer_size: tuple[int, int]


def occlude_topk(model: nn.Module, topk_index: Mapping[str, torch.Tensor], images, patch: int, stride: int,
                 fill: str = "zero", measure: Measures = "mean", *,
                 units: Mapping[str, Sequence[int]] | None = None, batch_size: int = 256,
                 seed: int = 0, windowed: bool | None = None) -> dict[str, TopkOcclusion]:
    """Discrepancy maps of each unit's top-k images, for several layers at once.

        top = occlude_topk(model, {"conv3": idx3, "conv4": idx4}, probe, 8, 4, "mean", ("mean", "peak"))

    `topk_index[layer]` (K, k) holds probe image indices per unit (row r is unit r, or
    unit `units[layer][r]`); `images` is a tensor (N, C, H, W) or anything with
    `.batch(indices)` (a ProbeSet). Each distinct image is occluded once and its
    forwards serve every unit of every layer whose top-k holds it; they stop at the
    deepest layer. Equals `discrepancy` applied per unit to its top-k images.
    `windowed` as in `occluded_responses`: a layer whose geometry is certified runs
    crops (one crop forward serves every unit that needs that image and cell; for
    "peak" alone, every unit of the image with the same peak position).
    """
    measures = _measures(measure)
    check_options(fill, measures)
    if not topk_index:
        raise ValueError("topk_index is empty: map at least one layer name to its (K, k) image indices")
    index = {name: torch.as_tensor(value, dtype=torch.int64).cpu() for name, value in topk_index.items()}
    for name, value in index.items():
        if value.dim() != 2:
            raise ValueError(f"topk_index[{name!r}] has shape {tuple(value.shape)}; expected (K, k)")
    load = _loader(images)
    distinct = torch.unique(torch.cat([value.reshape(-1) for value in index.values()]))  # (U,)
    sample = load(distinct[:1])
    _check_images(sample)
    grid = _validate(tuple(sample.shape[2:]), patch, stride, fill, measures, batch_size)
    chosen = {name: _units(units.get(name) if units else None, name) for name in index}
    for name, value in index.items():
        if chosen[name] is not None and len(chosen[name]) != value.shape[0]:
            raise ValueError(f"topk_index[{name!r}] has {value.shape[0]} rows but units[{name!r}] names "
                             f"{len(chosen[name])} units")
    device = model_device(model, sample.device)
    position = torch.full((int(distinct.max()) + 1,), -1, dtype=torch.int64)
    position[distinct] = torch.arange(len(distinct))
    slot = {name: position[value] for name, value in index.items()}  # (K, k) position among distinct
    gh, gw = grid.shape
    out = {name: dict(maps={m: torch.full((*value.shape, gh, gw), float("nan"), device=device)
                            for m in measures},
                      peak=torch.zeros((*value.shape, 2), dtype=torch.int64, device=device))
           for name, value in index.items()}
    windows = {name: _window(model, name, tuple(sample.shape[1:]), windowed) for name in index}
    for name in index:
        _check_units(chosen[name], name, windows[name])
    full = {name: chosen[name] for name in index if windows[name] is None}
    sizes = {}
    load_distinct = lambda i: load(distinct[i])  # noqa: E731

    def need(name):
        def wanted(positions: torch.Tensor) -> torch.Tensor:  # (n, K) bool: pairs of this layer's top-k
            local = torch.full((len(distinct),), -1, dtype=torch.int64)
            local[positions] = torch.arange(len(positions))
            unit, rank = (local[slot[name]] >= 0).nonzero(as_tuple=True)
            k = windows[name].units if chosen[name] is None else len(chosen[name])
            mask = torch.zeros(len(positions), k, dtype=torch.bool)
            mask[local[slot[name][unit, rank]], unit] = True
            return mask
        return wanted

    with observation_mode(model):
        chunks = [_sweep(model, full, load_distinct, len(distinct), grid, fill, measures, batch_size, seed,
                         device)] if full else []
        chunks += [_cropped_sweep(model, name, window, chosen[name], load_distinct, torch.unique(slot[name]),
                                  need(name), grid, fill, measures, batch_size, seed, device)
                   for name, window in windows.items() if window is not None]
        for chunk in (chunk for sweep in chunks for chunk in sweep):
            sizes.update(chunk.sizes)
            local = torch.full((len(distinct),), -1, dtype=torch.int64)
            local[chunk.index] = torch.arange(len(chunk.index))
            for name in chunk.maps:
                where = local[slot[name]]  # (K, k) position in the chunk, -1 when not in it
                unit, rank = (where >= 0).nonzero(as_tuple=True)  # (m,), (m,)
                if not len(unit):
                    continue
                at = where[unit, rank].to(device)
                unit_d, rank_d = unit.to(device), rank.to(device)
                for m in measures:
                    out[name]["maps"][m][unit_d, rank_d] = chunk.maps[name][m][at, unit_d]  # (m, gh, gw)
                w = chunk.sizes[name][1]
                flat = chunk.clean[name]["argmax"][at, unit_d]
                out[name]["peak"][unit_d, rank_d] = torch.stack([flat // w, flat % w], 1)
    return {name: TopkOcclusion(value["maps"], value["peak"], sizes[name]) for name, value in out.items()}


def _loader(images) -> Callable[[torch.Tensor], torch.Tensor]:
    if torch.is_tensor(images):
        return lambda index: images[index.to(images.device)]
    if hasattr(images, "batch"):
        return lambda index: images.batch(index.tolist())
    raise ValueError(f"images given an invalid value of type {type(images).__name__}; expected a tensor "
                     "[N, C, H, W] or a ProbeSet (anything with .batch(indices))")
