"""Occlusion added to a finished run (`python -m recorder occlude`), kept apart from its rows.

    writer = AddedOcclusion.open("runs/demo/baseline")            # the run folder (or record.zarr)
    writer.append("conv3", step=500, arrays={"occlusion": D, "rf": rf, "rf_size": size},
                  settings={"patch": 8, "stride": 4, "fill": "mean", "measure": "peak"},
                  theoretical_rf={"size": [18, 18], "jump": [4, 4], "start": [1.5, 1.5]})
    merged_array(run, "conv3", "occlusion")                       # [T, K, k, gh, gw] with those rows

Layout: group `occlusion/<layer>/` of `record.zarr` holds `step [M]`, `occlusion
[M, K, k, gh, gw]`, `rf [M, K, 2gh-1, 2gw-1]`, `rf_size [M, K]`, one entry per
occluded checkpoint, and the attributes `occlusion` (settings), `theoretical_rf` and
`n_committed` (entries complete; written last, as for rows). Committed rows of the
run are never rewritten; readers put each entry into the row with its step (rows
without occlusion are NaN there). Numpy and zarr only.
"""

from __future__ import annotations

import json
import os

import numpy as np
import zarr

from recorder.schema import ADDED_OCCLUSION_ARRAYS, LAYER_ARRAYS
from recorder.store.attrs import jsonable
from recorder.store.location import Location
from recorder.store.root import resolve_zarr_location

__all__ = ["GROUP", "AddedOcclusion", "added_entries", "merged_array"]

GROUP = "occlusion"


def _key(layer: str) -> str:
    return f"{GROUP}/{layer}"


class AddedOcclusion:
    """Appends occlusion entries of a run's checkpoints to `occlusion/<layer>/` (see the module).

        w = AddedOcclusion.open("runs/demo/baseline")
        w.steps("conv3")           # int64 [M]: steps already occluded afterwards
    """

    def __init__(self, zarr_loc: Location):
        self.zarr_location = zarr_loc
        self._group = zarr.open_group(zarr_loc.zarr_store(read_only=False), mode="r+", zarr_format=3)
        self._layers = list(self._group.attrs["layers"])

    @classmethod
    def open(cls, where: str | os.PathLike, storage_options: dict | None = None) -> AddedOcclusion:
        return cls(resolve_zarr_location(where, storage_options))

    def _layer_group(self, layer: str) -> zarr.Group | None:
        if layer not in self._layers:
            raise ValueError(f"unknown layer {layer!r}: the run's layers are {self._layers}")
        if not self.zarr_location.is_file(f"{_key(layer)}/zarr.json"):
            return None
        return self._group[_key(layer)]

    def settings(self, layer: str) -> dict | None:
        """The settings of the layer's added entries (None when it has none)."""
        group = self._layer_group(layer)
        return None if group is None else dict(group.attrs.get("occlusion", {}))

    def steps(self, layer: str) -> np.ndarray:
        group = self._layer_group(layer)
        if group is None:
            return np.zeros(0, np.int64)
        n = int(group.attrs.get("n_committed", 0))
        return np.asarray(group["step"][:n]) if "step" in group.array_keys() else np.zeros(0, np.int64)

    def append(self, layer: str, step: int, arrays: dict[str, np.ndarray], settings: dict,
               theoretical_rf: dict) -> None:
        """Add one entry; refused for a step already there or settings that differ from the layer's."""
        settings = jsonable(dict(settings), "occlusion settings")
        group = self._layer_group(layer)
        if group is None:
            group = self._group.require_group(_key(layer))
            group.attrs.update({"occlusion": settings, "n_committed": 0,
                                "theoretical_rf": jsonable(theoretical_rf, "theoretical_rf")})
        elif dict(group.attrs["occlusion"]) != settings:
            raise ValueError(f"layer {layer!r} already has occlusion added with {dict(group.attrs['occlusion'])}; "
                             f"cannot add entries with {settings} beside them")
        if int(step) in self.steps(layer).tolist():
            raise ValueError(f"layer {layer!r} already has added occlusion at step {step}")
        n = int(group.attrs["n_committed"])
        values = {"step": np.asarray(step, np.int64), **{name: np.asarray(arrays[name]) for name in
                                                          ("occlusion", "rf", "rf_size")}}
        existing = set(group.array_keys())
        for name, value in values.items():
            spec = ADDED_OCCLUSION_ARRAYS[name]
            if name not in existing:
                fill = -1 if name == "step" else np.nan
                group.create_array(name, shape=(0, *value.shape), chunks=(1, *(max(1, d) for d in value.shape)),
                                   dtype=spec.dtype, fill_value=fill, dimension_names=spec.dims,
                                   compressors="auto" if name != "step" else None)
            array = group[name]
            if tuple(array.shape[1:]) != value.shape:
                raise ValueError(f"added {name!r} of layer {layer!r} has shape {value.shape}, the stored "
                                 f"entries {tuple(array.shape[1:])}")
            array.resize((n, *array.shape[1:]))  # drops an entry a failed append left
            array.append(value.astype(spec.dtype)[None])
        group.attrs["n_committed"] = n + 1


def _read_meta(run, layer: str) -> dict | None:
    try:
        meta = json.loads(run.zarr_location.read_bytes(f"{_key(layer)}/zarr.json"))
    except FileNotFoundError:
        return None
    return meta.get("attributes", {})


def added_entries(run, layer: str) -> dict | None:
    """The layer's added entries: {"settings", "theoretical_rf", "step" [M], "occlusion", "rf",
    "rf_size"}; None when it has none."""
    attrs = _read_meta(run, layer)
    if not attrs or not int(attrs.get("n_committed", 0)):
        return None
    n = int(attrs["n_committed"])

    def read(name: str):
        return lambda: np.asarray(zarr.open_array(store=run.zarr_location.zarr_store(read_only=True),
                                                  path=f"{_key(layer)}/{name}", mode="r", zarr_format=3)[:n])

    entries = {name: run.derived(("added_occlusion", layer, n, name), read(name)) for name in ADDED_OCCLUSION_ARRAYS}
    return {"settings": attrs.get("occlusion"), "theoretical_rf": attrs.get("theoretical_rf"), **entries}


def merged_array(run, layer: str, name: str) -> np.ndarray:
    """`occlusion`, `rf` or `rf_size` of `layer` over the committed rows: the recorded rows,
    with the rows that had no occlusion filled from the entries added at their steps.
    KeyError when the layer has neither."""
    record = run.layer(layer)
    live = record.array(name) if record.has(name) else None
    added = added_entries(run, layer)
    if added is None:
        if live is None:
            raise KeyError(f"layer {layer!r} has no {name!r}: no occlusion was recorded or added "
                           "(Recorder(occlusion=...) or python -m recorder occlude)")
        return live

    def merge():
        values = added[name]
        out = (np.array(live) if live is not None else
               np.full((run.n_committed, *values.shape[1:]), np.nan, LAYER_ARRAYS[name].dtype))
        if out.shape[1:] != values.shape[1:]:
            raise ValueError(f"layer {layer!r}: recorded {name!r} has shape {out.shape[1:]} per row but the "
                             f"added entries {values.shape[1:]}")
        rows = {int(s): t for t, s in enumerate(run.steps)}
        for entry, step in enumerate(added["step"].tolist()):
            t = rows.get(int(step))
            if t is not None and np.isnan(out[t]).all():
                out[t] = values[entry]
        return out

    return run.derived((layer, "merged", name, len(added["step"])), merge)
