"""Scalars: metrics logged at any step, each stored at the step it was logged (numpy and zarr only).

    w.log_scalars(120, {"heldout_accuracy": 0.91})          # writer: appended, then committed
    steps, values = run.scalar("heldout_accuracy")          # reader: int64 [M], float64 [M]

Layout (DESIGN.md "Run store"): `scalars/<name>/step` int64 `[M]` and
`scalars/<name>/value` float64 `[M]`; the root attribute `scalars` maps each name to
its committed length M, written after the arrays (as `n_committed` is for rows).
Arrays longer than their committed length (a crash between the two) are trimmed by
the next writer and never read past it.
"""

from __future__ import annotations

import math

import numpy as np
import zarr

from recorder.schema import SCALAR_SPEC
from recorder.store.attrs import check_node_name

__all__ = ["SCALAR_CHUNK", "append_scalars", "check_scalars", "read_scalar", "scalar_keys", "trim_scalars"]

SCALAR_CHUNK = 1024  # values per chunk of a scalar's arrays


def scalar_keys(name: str) -> tuple[str, str]:
    return f"scalars/{name}/step", f"scalars/{name}/value"


def check_scalars(values: dict) -> dict[str, float]:
    """`values` as {name: float}; ValueError naming a bad name or a value that is not a number."""
    if not isinstance(values, dict):
        raise ValueError(f"metrics must be a dict of name -> number, got {type(values).__name__}")
    out = {}
    for name, value in values.items():
        check_node_name("metric", name)
        if isinstance(value, bool):
            raise ValueError(f"metric {name!r} = {value!r} is not a number")
        try:
            out[name] = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"metric {name!r} = {value!r} is not a number") from None
    return out


def _array(group: zarr.Group, arrays: dict, key: str, dtype: str) -> zarr.Array:
    if key not in arrays:
        fill = -1 if np.dtype(dtype).kind == "i" else math.nan
        arrays[key] = group.create_array(key, shape=(0,), chunks=(SCALAR_CHUNK,), dtype=dtype, fill_value=fill,
                                         dimension_names=SCALAR_SPEC.dims, compressors=None)
    return arrays[key]


def append_scalars(group: zarr.Group, arrays: dict, counts: dict[str, int], step: int,
                   values: dict[str, float]) -> dict[str, int]:
    """Append `(step, value)` to each scalar's arrays (created on first use, kept in `arrays`);
    returns the new counts, which the caller commits in the root attributes."""
    new_counts = dict(counts)
    for name, value in values.items():
        n = counts.get(name, 0)
        for key, dtype, item in zip(scalar_keys(name), ("int64", SCALAR_SPEC.dtype), (step, value)):
            array = _array(group, arrays, key, dtype)
            if array.shape[0] != n:
                array.resize((n,))
            array.append(np.asarray([item], dtype=dtype))
        new_counts[name] = n + 1
    return new_counts


def trim_scalars(arrays: dict, counts: dict[str, int]) -> None:
    """Cut every scalar array back to its committed length."""
    for key, array in arrays.items():
        if key.startswith("scalars/"):
            n = counts.get(key.split("/")[1], 0)
            if array.shape[0] != n:
                array.resize((n,))


def read_scalar(store, name: str, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The committed `(steps, values)` of scalar `name`: int64 `[count]`, float64 `[count]`."""
    step_key, value_key = scalar_keys(name)
    steps = zarr.open_array(store=store, path=step_key, mode="r", zarr_format=3)[:count]
    values = zarr.open_array(store=store, path=value_key, mode="r", zarr_format=3)[:count]
    return np.asarray(steps, dtype=np.int64), np.asarray(values, dtype=np.float64)
