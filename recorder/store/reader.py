"""Reading a run store: `Run` (numpy and zarr only, no torch); layers in `layer`.

    run = Run.open("runs/demo/baseline")        # usually via RunStore.open; or a URL
    run.refresh()                                # pick up rows a live writer committed
    si = run.layer("layer3").selectivity("si")   # [T, K]

A reader reads the root attribute `n_committed` first and slices every array to
`[:n_committed]`; it never trusts an array's shape, so rows a writer has in flight
are never returned. Committed rows never change, so cached arrays are extended by
the new rows on `refresh()` instead of being read again.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import zarr

from recorder.schema import PROBE_ARRAYS, ROOT_ARRAYS, Concept
from recorder.store.layer import LayerRecord
from recorder.store.location import Location
from recorder.store.root import RECORD, NotARunError, damaged, read_root_attrs, resolve_zarr_location
from recorder.store.scalars import read_scalar

__all__ = ["RECORD", "LayerRecord", "NotARunError", "Run", "damaged", "read_root_attrs", "resolve_zarr_location"]

def _read_only(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


class Run:
    """A recorded run, read-only; safe to read while a writer appends.

        run = RunStore.open("runs/demo/baseline")
        run.steps, run.classes, run.layers            # int64 [T], names, names
        mu = run.layer("layer3").class_means("true")  # [T, C, K]
        if run.refresh(): ...                         # new rows were committed

    Array properties are numpy arrays sliced to `n_committed` rows and read-only
    (they are cached: copy before changing them).
    """

    def __init__(self, zarr_loc: Location | str | os.PathLike):
        zarr_loc = Location.parse(zarr_loc)
        self.zarr_location = zarr_loc
        folder = zarr_loc.parent if zarr_loc.name == RECORD else zarr_loc
        self.location: str = folder.url  # the run folder: a local path or a URL
        self.path: Path | None = folder.path  # the run folder of a local run (None for a URL)
        self.zarr_path: Path | None = zarr_loc.path
        self._store = zarr_loc.zarr_store(read_only=True)
        self._lock = threading.RLock()
        self._attrs = read_root_attrs(zarr_loc)
        self._arrays: dict[str, zarr.Array] = {}
        self._data: dict[str, np.ndarray] = {}  # raw arrays, valid for self.n_committed rows
        self._derived: dict[tuple, np.ndarray] = {}  # computed from raw arrays; cleared on growth
        self._layers: dict[str, LayerRecord] = {}

    @classmethod
    def open(cls, where: str | os.PathLike, storage_options: dict | None = None) -> Run:
        """Open the run in folder or URL `where` (or its `record.zarr`), read-only."""
        return cls(resolve_zarr_location(where, storage_options))

    def __repr__(self) -> str:
        return f"Run({self.name!r}, location='{self.location}', n_committed={self.n_committed}, layers={self.layers})"

    # ---------------------------------------------------------------- metadata

    @property
    def n_committed(self) -> int:
        """Number of complete checkpoint rows (as of the last `refresh()`)."""
        return int(self._attrs["n_committed"])

    def refresh(self) -> bool:
        """Re-read `n_committed`; True if rows were committed since (or the run was replaced)."""
        with self._lock:
            old = self._attrs
            new = read_root_attrs(self.zarr_location)
            replaced = new.get("run") != old.get("run") or new["n_committed"] < old["n_committed"]
            if replaced:  # another run was written at this path: forget everything
                self._arrays.clear()
                self._data.clear()
                self._layers.clear()
            self._attrs = new
            changed = (replaced or new["n_committed"] != old["n_committed"]
                       or new.get("scalars") != old.get("scalars"))
            if changed:
                self._derived.clear()
            return changed

    @property
    def attrs(self) -> dict:
        """A copy of the root attributes (schema, run, classes, concepts, probe, ...)."""
        return json.loads(json.dumps(self._attrs))

    @property
    def schema(self) -> str:
        return self._attrs["schema"]

    @property
    def name(self) -> str:
        return self._attrs.get("run", {}).get("name") or Location.parse(self.location).name

    @property
    def config(self) -> dict:
        return dict(self._attrs.get("run", {}).get("config") or {})

    @property
    def created(self) -> str | None:
        return self._attrs.get("run", {}).get("created")

    @property
    def classes(self) -> list[str]:
        return list(self._attrs["classes"])

    @property
    def concepts(self) -> list[Concept]:
        return [Concept(c["name"], c["category"]) for c in self._attrs["concepts"]]

    @property
    def layers(self) -> list[str]:
        return list(self._attrs["layers"])

    @property
    def units(self) -> dict[str, int]:
        return {name: int(self._attrs["units"][name]) for name in self._attrs["layers"]}

    @property
    def probe(self) -> dict:
        return dict(self._attrs["probe"])

    @property
    def topk(self) -> int:
        return int(self._attrs.get("topk", 0))

    # ----------------------------------------------------------------- arrays

    def _open_array(self, key: str, min_rows: int) -> zarr.Array | None:
        """The zarr array at `key` with at least `min_rows` rows; None if it does not exist."""
        arr = self._arrays.get(key)
        if arr is None or arr.shape[0] < min_rows:
            if not self.zarr_location.is_file(f"{key}/zarr.json"):
                return None
            try:
                arr = zarr.open_array(store=self._store, path=key, mode="r", zarr_format=3)
            except (OSError, ValueError, TypeError, KeyError) as exc:
                raise damaged(self.zarr_location, f"the metadata of array '{key}'", exc) from exc
            if arr.shape[0] < min_rows:
                raise ValueError(
                    f"run store at '{self.zarr_location}' is damaged: array '{key}' has "
                    f"{arr.shape[0]} rows but {min_rows} are committed")
            self._arrays[key] = arr
        return arr

    def layer_attrs(self, name: str) -> dict:
        """The attributes of group `layers/<name>` (`signed`, `occlusion`, `theoretical_rf`);
        re-read after each `refresh()` that found new rows."""
        with self._lock:
            key = ("layer_attrs", self.n_committed, name)
            if key not in self._derived:
                self._derived[key] = self._read_layer_attrs(name)
            return dict(self._derived[key])

    def _read_layer_attrs(self, name: str) -> dict:
        if not self.zarr_location.is_file(f"layers/{name}/zarr.json"):
            return {}
        try:
            group = zarr.open_group(store=self._store, path=f"layers/{name}", mode="r", zarr_format=3)
            return json.loads(json.dumps(group.attrs.asdict()))
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise damaged(self.zarr_location, f"the attributes of layer '{name}'", exc) from exc

    def has_array(self, key: str) -> bool:
        """Whether the store has the array at `key` (e.g. 'layers/fc/iou', 'metrics/loss')."""
        return key in self._arrays or self.zarr_location.is_file(f"{key}/zarr.json")

    def read(self, key: str) -> np.ndarray | None:
        """Committed rows `[:n_committed]` of the array at `key`; None if it does not exist.

        Cached: rows committed since the last read are appended to the cached array.
        """
        with self._lock:
            n = self.n_committed
            cached = self._data.get(key)
            if cached is not None and cached.shape[0] == n:
                return cached
            start = 0 if cached is None or cached.shape[0] > n else cached.shape[0]
            arr = self._open_array(key, n)
            if arr is None:
                return None
            new = self._rows(arr, key, slice(start, n))
            data = new if start == 0 else np.concatenate([cached, new])
            self._data[key] = _read_only(data)
            return data

    def read_row(self, key: str, t: int) -> np.ndarray:
        """Row `t` of the array at `key` (negative counts from the last committed row).

        Reads one chunk; IndexError outside the committed rows, KeyError if absent.
        """
        with self._lock:
            n = self.n_committed
            if not -n <= t < n:
                raise IndexError(f"row {t} is out of range: the run has {n} committed rows")
            t = t % n
            cached = self._data.get(key)
            if cached is not None and cached.shape[0] > t:
                return cached[t]
            arr = self._open_array(key, n)
            if arr is None:
                raise KeyError(f"run '{self.name}' has no array '{key}'")
            return self._rows(arr, key, t)

    def _rows(self, arr: zarr.Array, key: str, rows: slice | int) -> np.ndarray:
        try:
            return np.asarray(arr[rows])
        except (OSError, ValueError, TypeError, RuntimeError) as exc:  # a chunk that does not decode
            where = f"rows {rows.start}..{rows.stop - 1}" if isinstance(rows, slice) else f"row {rows}"
            raise damaged(self.zarr_location, f"{where} of array '{key}'", exc) from exc

    def _root(self, name: str, dtype) -> np.ndarray:
        data = self.read(name)
        return _read_only(np.zeros(0, dtype)) if data is None else data

    @property
    def steps(self) -> np.ndarray:
        """int64 `[T]`: the training step of each checkpoint row."""
        return self._root("step", ROOT_ARRAYS["step"].dtype)

    @property
    def epochs(self) -> np.ndarray:
        return self._root("epoch", ROOT_ARRAYS["epoch"].dtype)

    @property
    def wall_times(self) -> np.ndarray:
        return self._root("wall_time", ROOT_ARRAYS["wall_time"].dtype)

    def _legacy_metric_names(self) -> list[str]:
        """Metrics of runs written before scalars: row-aligned arrays `metrics/<name>`."""
        names = self.zarr_location.list_dir("metrics")
        return [name for name in names if self.zarr_location.is_file(f"metrics/{name}/zarr.json")]

    @property
    def scalar_names(self) -> list[str]:
        """Names of the metrics logged in this run (e.g. probe_accuracy, heldout_accuracy)."""
        names = list(self._attrs.get("scalars", {}))
        return sorted(set(names) | set(self._legacy_metric_names()))

    def scalar(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """`(steps, values)`: int64 `[M]`, float64 `[M]`, each value at the step it was logged."""
        with self._lock:
            count = int(self._attrs.get("scalars", {}).get(name, 0))
            key = ("scalar", name, count, self.n_committed)
            if key not in self._derived:
                self._derived[key] = self._read_scalar(name, count)
            return self._derived[key]

    def _read_scalar(self, name: str, count: int) -> tuple[np.ndarray, np.ndarray]:
        if name not in self.scalar_names:
            raise KeyError(f"run '{self.name}' has no metric {name!r}; it has {self.scalar_names}")
        steps, values = np.zeros(0, np.int64), np.zeros(0, np.float64)
        if count:
            try:
                steps, values = read_scalar(self._store, name, count)
            except (OSError, ValueError, TypeError, KeyError) as exc:
                raise damaged(self.zarr_location, f"the values of metric '{name}'", exc) from exc
        legacy = self.read(f"metrics/{name}")
        if legacy is not None:  # a run from before scalars: one value per row
            finite = np.isfinite(legacy)
            steps = np.concatenate([self.steps[finite], steps])
            values = np.concatenate([legacy[finite].astype(np.float64), values])
        order = np.argsort(steps, kind="stable")
        return _read_only(steps[order]), _read_only(values[order])

    @property
    def metric_names(self) -> list[str]:
        return self.scalar_names

    @property
    def metrics(self) -> dict[str, np.ndarray]:
        """Every metric at the checkpoint rows: name -> float64 `[T]` (see `metric`)."""
        return {name: self.metric(name) for name in self.metric_names}

    def metric(self, name: str) -> np.ndarray:
        """float64 `[T]`: the value of metric `name` logged at each row's step (the last one
        when several were), NaN for rows with none; `scalar(name)` has every value."""
        steps, values = self.scalar(name)
        rows = self.steps
        out = np.full(len(rows), np.nan)
        if len(steps):
            at = np.searchsorted(steps, rows, side="right") - 1  # the last value at or before each row
            hit = (at >= 0) & (steps[np.maximum(at, 0)] == rows)
            out[hit] = values[at[hit]]
        return _read_only(out)

    def _probe_complete(self) -> bool:
        try:
            meta = json.loads(self.zarr_location.read_bytes("probe/zarr.json"))
        except (OSError, ValueError):
            return False
        return bool(meta.get("attributes", {}).get("complete"))

    def _probe_array(self, name: str) -> np.ndarray | None:
        key = f"probe/{name}"
        with self._lock:
            if key not in self._data:
                if not self._probe_complete():
                    return None
                arr = zarr.open_array(store=self._store, path=key, mode="r", zarr_format=3)
                self._data[key] = _read_only(np.asarray(arr[...], dtype=PROBE_ARRAYS[name].dtype))
            return self._data[key]

    @property
    def thumbs(self) -> np.ndarray | None:
        """uint8 `[N, H, W, 3]` probe thumbnails, or None if the writer stored none."""
        return self._probe_array("thumbs")

    @property
    def probe_labels(self) -> np.ndarray | None:
        """int32 `[N]` probe class labels (-1 = none), or None if not stored."""
        return self._probe_array("labels")

    def layer(self, name: str) -> LayerRecord:
        """The record of one layer; KeyError listing the run's layers if unknown."""
        if name not in self._attrs["layers"]:
            raise KeyError(f"run '{self.name}' has no layer {name!r}; its layers are {self.layers}")
        with self._lock:
            if name not in self._layers:
                self._layers[name] = LayerRecord(self, name)
            return self._layers[name]

    def derived(self, key: tuple, compute) -> np.ndarray:
        """`compute()` for the committed rows, cached under `key` until rows are added."""
        with self._lock:
            full_key = (self.n_committed, *key)
            if full_key not in self._derived:
                self._derived[full_key] = _read_only(compute())
            return self._derived[full_key]
