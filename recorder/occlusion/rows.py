"""Occlusion arrays of one store row: discrepancy maps, empirical RF and `rf_size` per unit.

    rows = OcclusionRows(model, settings, layers=["conv3", "conv4"], shapes=shapes,
                         image_shape=(3, 32, 32), topk=8)
    if rows.due(row):                                        # every `settings.every`-th row
        arrays = rows.compute(model, probe, {"conv3": idx3, "conv4": idx4})   # idx (K, k)
    else:
        arrays = rows.empty()
    arrays["conv3"]["occlusion"]       # float16 (K, k, gh, gw); NaN for units not chosen

One `occlude_topk` sweep gives each chosen unit's maps of its top-k images under
the stored measure and under "peak"; the peak maps, re-centred on each image's
peak cell (`peak_cells`), average into the unit's empirical receptive field
(`empirical_rf`), whose `rf_size` is stored beside it. Under torch.distributed each
rank occludes its share of the chosen units (`units[rank::world]`) and the SUM
all-reduce of the disjoint rows assembles every unit on every rank.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from recorder.distributed import agree, all_reduce, is_distributed, rank_and_world
from recorder.occlusion.discrepancy import occlude_topk
from recorder.occlusion.grid import grid_shape
from recorder.occlusion.receptive_field import ReceptiveField, empirical_rf, peak_cells, rf_size, theoretical_rf
from recorder.occlusion.settings import OcclusionSettings, layer_problems

__all__ = ["OcclusionRows", "occlusion_arrays"]


def occlusion_arrays(model: nn.Module, images, topk_index: Mapping[str, torch.Tensor], settings: OcclusionSettings,
                     rf: Mapping[str, ReceptiveField], units: Mapping[str, torch.Tensor | None] | None = None,
                     *, image_size: tuple[int, int], batch_size: int = 256, seed: int = 0,
                     shard: tuple[int, int] = (0, 1)) -> dict[str, dict[str, torch.Tensor]]:
    """`occlusion` (K, k, gh, gw), `rf` (K, 2gh-1, 2gw-1) and `rf_size` (K,) float32 per layer.

    `topk_index[layer]` (K, k) probe image indices of every unit; `units[layer]` the chosen
    units (None: all). Rows of units not chosen are NaN. With `shard=(rank, world)` only this
    rank's share of the chosen units is computed and the other rows are 0 (summed over ranks
    by the caller, then the NaN rows are set with `nan_rows`).
    """
    rank, world = shard
    units = units or {}
    mine, request = {}, {}
    for name, index in topk_index.items():
        index = torch.as_tensor(index, dtype=torch.int64).cpu()
        chosen = units.get(name)
        chosen = torch.arange(index.shape[0]) if chosen is None else torch.as_tensor(chosen, dtype=torch.int64)
        mine[name] = chosen[rank::world]
        if len(mine[name]):
            request[name] = index[mine[name]]  # (K_mine, k)
    found = {}
    if request:
        found = occlude_topk(model, request, images, settings.patch, settings.stride, settings.fill,
                             settings.measures, units={name: mine[name].tolist() for name in request},
                             batch_size=batch_size, seed=seed)
    gh, gw = grid_shape(*image_size, settings.patch, settings.stride)
    out = {}
    for name, index in topk_index.items():
        n_units, k = index.shape
        arrays = {"occlusion": torch.zeros(n_units, k, gh, gw), "rf": torch.zeros(n_units, 2 * gh - 1, 2 * gw - 1),
                  "rf_size": torch.zeros(n_units)}
        if name in found:
            top, rows = found[name], mine[name]
            cells = peak_cells(top.peak, rf[name], image_size, settings.patch, settings.stride)  # (K_mine, k, 2)
            canvas = empirical_rf(top.maps["peak"], cells)  # (K_mine, 2gh-1, 2gw-1)
            arrays["occlusion"][rows] = top.maps[settings.measure].float().cpu()
            arrays["rf"][rows] = canvas.float().cpu()
            arrays["rf_size"][rows] = rf_size(canvas, settings.stride).float().cpu()
        out[name] = arrays
    if world == 1:
        nan_rows(out, units)
    return out


def nan_rows(arrays: dict[str, dict[str, torch.Tensor]], units: Mapping[str, torch.Tensor | None]) -> None:
    """Set the rows of units that were not chosen to NaN, in place."""
    for name, layer in arrays.items():
        chosen = units.get(name)
        if chosen is None:
            continue
        left = torch.ones(layer["rf_size"].shape[0], dtype=torch.bool)
        left[torch.as_tensor(chosen, dtype=torch.int64)] = False
        for value in layer.values():
            value[left] = float("nan")


def _broadcast_int(value: int, device: torch.device) -> int:
    """Rank 0's `value` on every rank (a collective under torch.distributed)."""
    if not is_distributed():
        return value
    if dist.get_backend() == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    tensor = torch.tensor([value], dtype=torch.int64, device=device)
    dist.broadcast(tensor, src=0)
    return int(tensor)


class OcclusionRows:
    """The occlusion part of a Recorder's rows (see the module docstring).

    Checks the layers and units against the recorded layers' shapes (one ValueError
    naming every problem) and computes each layer's theoretical receptive field once.
    """

    def __init__(self, model: nn.Module, settings: OcclusionSettings, layers: Sequence[str],
                 shapes: Mapping[str, tuple], image_shape: tuple[int, int, int], topk: int, *,
                 batch_size: int = 256):
        problems = layer_problems(settings, layers, shapes)
        if problems:
            raise ValueError("Recorder: " + "; ".join(problems) if len(problems) == 1 else
                             f"{len(problems)} invalid occlusion arguments:\n  " + "\n  ".join(problems))
        self.settings = settings
        self.layers = list(settings.layers) if settings.layers is not None else [
            name for name in layers if len(shapes[name]) == 3]
        self.units = {name: (None if settings.units is None or name not in settings.units
                             else torch.tensor(settings.units[name], dtype=torch.int64)) for name in self.layers}
        self.n_units = {name: int(shapes[name][0]) for name in self.layers}
        self.image_size = tuple(image_shape[1:])
        self.grid = grid_shape(*self.image_size, settings.patch, settings.stride)
        self.topk, self.batch_size = topk, batch_size
        self.rf = {name: theoretical_rf(model, name, tuple(image_shape)) for name in self.layers}
        self.announced = self.attrs_stored = False

    def due(self, row: int, device: torch.device | str = "cpu") -> bool:
        """Whether row number `row` (rank 0's count of committed rows) gets occlusion; every rank
        calls it and gets rank 0's answer."""
        return _broadcast_int(int(row), torch.device(device)) % self.settings.every == 0

    def attrs(self) -> dict[str, dict]:
        """Layer group attributes: `occlusion` settings and `theoretical_rf`."""
        return {name: {"occlusion": self.settings.stored(), "theoretical_rf": self.rf[name].to_dict()}
                for name in self.layers}

    def row_bytes(self) -> int:
        gh, gw = self.grid
        return sum(k * (2 * self.topk * gh * gw + 2 * (2 * gh - 1) * (2 * gw - 1) + 4) for k in self.n_units.values())

    def size_line(self) -> str:
        gh, gw = self.grid
        per_layer = ", ".join(f"{name} {self.n_units[name]} x {self.topk} x {gh} x {gw}" for name in self.layers)
        return (f"tuneline: occlusion every {self.settings.every} rows adds {self.row_bytes() / 1e6:.3g} MB per "
                f"row before compression ({per_layer} maps, patch {self.settings.patch}, stride "
                f"{self.settings.stride}); limit it with occlusion=dict(units={{layer: [...]}})")

    def announce(self) -> None:
        """Print the per-row size once, before the first occlusion row (call on rank 0)."""
        if not self.announced:
            self.announced = True
            print(self.size_line(), file=sys.stderr, flush=True)

    def empty(self) -> dict[str, dict[str, np.ndarray]]:
        """NaN arrays for a row without occlusion."""
        gh, gw = self.grid
        out = {}
        for name in self.layers:
            k = self.n_units[name]
            out[name] = {"occlusion": np.full((k, self.topk, gh, gw), np.nan, np.float16),
                         "rf": np.full((k, 2 * gh - 1, 2 * gw - 1), np.nan, np.float16),
                         "rf_size": np.full((k,), np.nan, np.float32)}
        return out

    def store_attrs(self, writer) -> None:
        """Write the layer attributes once (rank 0, with the first row)."""
        if not self.attrs_stored:
            for name, attrs in self.attrs().items():
                writer.set_layer_attrs(name, attrs)
            self.attrs_stored = True

    def row_arrays(self, model: nn.Module, probe, n_committed: int, topk_index: Mapping[str, torch.Tensor],
                   device: torch.device | str = "cpu") -> dict[str, dict[str, np.ndarray]]:
        """The arrays of the row numbered `n_committed` (rank 0's count): occlusion when due,
        NaN otherwise. Every rank calls it."""
        if not self.due(n_committed, device):
            return self.empty()
        if rank_and_world()[0] == 0:
            self.announce()
        return self.compute(model, probe, topk_index)

    def compute(self, model: nn.Module, probe, topk_index: Mapping[str, torch.Tensor]) -> dict[str, dict]:
        """The row's arrays (numpy, store dtypes) from every unit's top-k images; a collective
        under torch.distributed (each rank occludes its share of the units)."""
        rank, world = rank_and_world()
        device = next((t.device for t in (*model.parameters(), *model.buffers())), torch.device("cpu"))
        arrays, error = None, None
        try:
            index = {name: torch.as_tensor(topk_index[name], dtype=torch.int64)[:, :self.topk]
                     for name in self.layers}
            arrays = occlusion_arrays(model, probe, index, self.settings, self.rf, self.units,
                                      image_size=self.image_size, batch_size=self.batch_size, shard=(rank, world))
        except Exception as exc:  # noqa: BLE001 - every rank raises it (agree)
            error = exc
        agree(error, "in the occlusion of the top-k images", device)
        if world > 1:
            flat = [value.to(device) for layer in arrays.values() for value in layer.values()]
            all_reduce(flat)
            it = iter(flat)
            arrays = {name: {key: next(it).cpu() for key in layer} for name, layer in arrays.items()}
            nan_rows(arrays, self.units)
        return {name: {"occlusion": layer["occlusion"].numpy().astype(np.float16),
                       "rf": layer["rf"].numpy().astype(np.float16),
                       "rf_size": layer["rf_size"].numpy().astype(np.float32)} for name, layer in arrays.items()}
