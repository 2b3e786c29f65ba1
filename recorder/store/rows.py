"""Checking one row of layer arrays before anything of it is written.

    items = check_layer_rows({"fc": {"sum_true": s, "count_true": c}}, units={"fc": 16},
                             arrays={}, sizes={"class": 2, "concept": 0, "rank": 8})
    for key, spec, value in items:    # "layers/fc/sum_true", its ArraySpec, the value in its dtype
        ...

A row names only the run's layers and known array names, gives every array a layer
already has (rows are complete), and each array's row shape follows its dims: the
run's fixed sizes (classes, units, concepts, top-k ranks) and, for an array that
exists, its stored shape.
"""

from __future__ import annotations

import numpy as np

from recorder.schema import LAYER_ARRAYS, ArraySpec

__all__ = ["check_layer_rows"]

_FIXED_DIMS = ("class", "unit", "concept", "rank")


def _expected_shape(value: np.ndarray, spec: ArraySpec, stored, sizes: dict) -> tuple:
    """The row shape `value` must have: the stored array's, else from the dims' sizes."""
    if stored is not None:
        return tuple(stored.shape[1:])
    dims = spec.dims[1:]
    if value.ndim != len(dims):
        return tuple(sizes.get(d, "?") for d in dims)
    return tuple(sizes[d] if d in _FIXED_DIMS else value.shape[i] for i, d in enumerate(dims))


def check_layer_rows(layers: dict, units: dict[str, int], arrays: dict,
                     sizes: dict[str, int]) -> list[tuple[str, ArraySpec, np.ndarray]]:
    """Validate a row's layer arrays (names, completeness, shapes) into (key, spec, value).

    `units`: the run's layers and their unit counts; `arrays`: the arrays the run has
    (key -> array with `.shape`); `sizes`: the sizes of the dims "class", "concept", "rank".
    """
    if not isinstance(layers, dict):
        raise ValueError(f"layers must be a dict of layer name -> {{array name: array}}, got {type(layers)}")
    unknown = [name for name in layers if name not in units]
    if unknown:
        raise ValueError(f"unknown layers {unknown}: the run's layers are {list(units)}")
    items = []
    for layer in units:
        given = layers.get(layer, {})
        if not isinstance(given, dict):
            raise ValueError(f"layer {layer!r} must map array names to arrays, got {type(given).__name__}")
        bad = [a for a in given if a not in LAYER_ARRAYS]
        if bad:
            raise ValueError(f"unknown arrays {bad} for layer {layer!r}; valid names: {list(LAYER_ARRAYS)}")
        prefix = f"layers/{layer}/"
        missing = [k[len(prefix):] for k in arrays if k.startswith(prefix) and k[len(prefix):] not in given]
        if missing:
            raise ValueError(f"layer {layer!r} is missing arrays {missing} in this row: rows must be complete")
        for name, value in given.items():
            spec, key = LAYER_ARRAYS[name], prefix + name
            value = np.asarray(value)
            expected = _expected_shape(value, spec, arrays.get(key), {**sizes, "unit": units[layer]})
            if value.shape != expected:
                raise ValueError(f"array {name!r} of layer {layer!r} has row shape {value.shape}, "
                                 f"expected {expected} ({', '.join(spec.dims[1:])})")
            items.append((key, spec, value.astype(spec.dtype, copy=False)))
    return items
