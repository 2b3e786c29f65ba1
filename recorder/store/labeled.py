"""A layer of a run as a labeled `xarray.Dataset` (xarray is imported on first use).

    ds = RunStore.open("runs/demo/baseline").layer("conv4").to_xarray()
    mu = ds.sum_true / ds.count_true                 # (step, class, unit), NaN where no images
    mu.sel(**{"class": "dog"}).isel(step=-1)         # the last checkpoint's means for "dog"
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from recorder.schema import LAYER_ARRAYS

if TYPE_CHECKING:
    import xarray

    from recorder.store.layer import LayerRecord

__all__ = ["layer_dataset"]


def layer_dataset(layer: LayerRecord, arrays: list[str] | None = None) -> xarray.Dataset:
    """The committed rows of `layer`'s arrays (all, or those named) with coordinates `step`
    (training step), `class` (names), `unit` (index), `concept` (names, with
    `concept_category`); the selectivity rule in the attributes."""
    try:
        import xarray as xr
    except ImportError as exc:
        raise ImportError("to_xarray() needs xarray: pip install xarray") from exc
    run = layer.run
    names = layer.arrays if arrays is None else list(arrays)
    unknown = [a for a in names if not layer.has(a)]
    if unknown:
        raise KeyError(f"layer {layer.name!r} has no arrays {unknown}; it has {layer.arrays}")
    data = {}
    for name in names:
        values = layer.array(name)
        if values.dtype == np.float16:
            values = values.astype(np.float32)  # float16 is awkward in most of the ecosystem
        data[name] = (LAYER_ARRAYS[name].dims, values)
    concepts = run.concepts
    coords = {
        "step": ("step", run.steps),
        "class": ("class", np.array(run.classes, dtype=object)),
        "unit": ("unit", np.arange(layer.units)),
        "concept": ("concept", np.array([c.name for c in concepts], dtype=object)),
        "concept_category": ("concept", np.array([c.category for c in concepts], dtype=object)),
    }
    used = {d for dims, _ in data.values() for d in dims}
    coords = {k: v for k, v in coords.items() if v[0] in used}
    return xr.Dataset(data, coords=coords, attrs={
        "run": run.name, "layer": layer.name, "signed": int(layer.signed), "selectivity_rule": layer.rule})
