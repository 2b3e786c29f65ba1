"""The root attributes of a new run, validated, and how a resumed run differs from them.

    attrs = new_attrs("base", classes, concepts, {"fc": 16}, probe, run=None, topk=8)
    differences(stored_attrs, attrs)     # [] when the run may be resumed

Used by `RunWriter.open` before anything is written (numpy only).
"""

from __future__ import annotations

import os
from datetime import datetime, timezone

import numpy as np

from recorder.schema import SCHEMA, Concept

__all__ = ["check_node_name", "differences", "jsonable", "new_attrs"]


def check_node_name(kind: str, name) -> str:
    if not isinstance(name, str) or not name or "/" in name or name in (".", "..") or name.startswith("__"):
        raise ValueError(f"{kind} name {name!r} is not valid: use a non-empty string without '/'")
    return name


def jsonable(value, what: str):
    """`value` as plain JSON types (numpy scalars, tuples, paths converted); TypeError naming `what`."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple)):
        return [jsonable(v, f"{what}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{what} has a non-string key {k!r}: attributes must be JSON")
            out[k] = jsonable(v, f"{what}[{k!r}]")
        return out
    raise TypeError(f"{what} = {value!r} is not JSON-serializable ({type(value).__name__})")


def _concept_dict(c, i: int) -> dict:
    if isinstance(c, dict):
        name, category = c.get("name"), c.get("category")
    elif isinstance(c, (tuple, list)) and len(c) == 2:
        name, category = c
    else:
        name, category = getattr(c, "name", None), getattr(c, "category", None)
    if not isinstance(name, str) or not isinstance(category, str):
        raise ValueError(f"concepts[{i}] = {c!r} is not a Concept(name, category)")
    return Concept(name, category).to_dict()


def new_attrs(name: str, classes, concepts, layers, probe, run, topk) -> dict:
    """Validate the arguments of `RunWriter.open` into root attributes (run name default: `name`)."""
    if isinstance(classes, str) or not all(isinstance(c, str) for c in classes):
        raise ValueError(f"classes must be a list of str, got {classes!r}")
    concepts = [_concept_dict(c, i) for i, c in enumerate(concepts)]
    if not isinstance(layers, dict) or not layers:
        raise ValueError(f"layers must be a non-empty dict of layer name -> number of units, got {layers!r}")
    for layer, k in layers.items():
        check_node_name("layer", layer)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"layer {layer!r} has {k!r} units: expected a positive int")
    if not isinstance(probe, dict):
        raise ValueError(f"probe must be a dict with source, n_images and fingerprint, got {probe!r}")
    if isinstance(topk, bool) or not isinstance(topk, (int, np.integer)) or topk < 0:
        raise ValueError(f"topk must be a non-negative int, got {topk!r}")
    run = dict(run or {})
    run.setdefault("name", name)
    run.setdefault("config", {})
    run["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return {
        "schema": SCHEMA,
        "run": jsonable(run, "run"),
        "classes": list(classes),
        "concepts": concepts,
        "probe": jsonable(probe, "probe"),
        "layers": list(layers),
        "units": {layer: int(k) for layer, k in layers.items()},
        "topk": int(topk),
        "n_committed": 0,
    }


def differences(stored: dict, given: dict) -> list[str]:
    """What keeps a run with root attributes `stored` from being resumed with `given`."""
    diffs = []
    for key in ("classes", "concepts", "layers"):
        if stored.get(key) != given[key]:
            diffs.append(f"{key} differ: stored {stored.get(key)}, given {given[key]}")
    stored_units, given_units = stored.get("units", {}), given["units"]
    changed = {n: (stored_units.get(n), k) for n, k in given_units.items()
               if n in stored_units and stored_units[n] != k}
    if changed:
        diffs.append("units differ: " + ", ".join(
            f"layer {n!r} stored {s}, given {g}" for n, (s, g) in changed.items()))
    for key in ("fingerprint", "n_images"):
        s, g = stored.get("probe", {}).get(key), given["probe"].get(key)
        if s != g:
            diffs.append(f"probe {key} differs: stored {s!r}, given {g!r}")
    if stored.get("topk") != given["topk"]:
        diffs.append(f"topk differs: stored {stored.get('topk')}, given {given['topk']}")
    return diffs
