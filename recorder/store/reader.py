"""Reading a run store: `Run` and `LayerRecord` (numpy and zarr only, no torch).

    run = Run.open("runs/demo/baseline")        # usually via RunStore.open
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
from zarr.storage import LocalStore

from recorder import metrics
from recorder.metrics import DETECTOR_MIN_IOU, best_concepts, unique_detectors
from recorder.schema import (
    GROUPINGS,
    LAYER_ARRAYS,
    METRIC_SPEC,
    PROBE_ARRAYS,
    ROOT_ARRAYS,
    SCHEMA,
    SELECTIVITY_METRICS,
    Concept,
)

__all__ = ["LayerRecord", "NotARunError", "Run", "damaged"]

RECORD = "record.zarr"  # the zarr group inside a run folder
_REQUIRED_ATTRS = ("classes", "concepts", "probe", "layers", "units", "n_committed")


class NotARunError(ValueError):
    """The path exists but holds no tuneline run store."""


def resolve_zarr_path(path: str | os.PathLike) -> Path:
    """The `record.zarr` of a run folder, or `path` itself when it is the zarr group.

    Missing path -> FileNotFoundError; a folder that holds no run -> NotARunError.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no run at '{path}': the path does not exist")
    if (path / RECORD).is_dir():
        return path / RECORD
    if (path / "zarr.json").is_file():
        return path
    raise NotARunError(f"'{path}' is not a tuneline run: it has no {RECORD}")


def damaged(zarr_path: Path, what: str, exc: BaseException) -> NotARunError:
    """The error for a run store whose files cannot be read: names the unreadable
    metadata files when there are any, else `what` and the cause."""
    bad = []
    for meta in sorted(Path(zarr_path).rglob("zarr.json")):
        try:
            if not isinstance(json.loads(meta.read_bytes()), dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as error:
            bad.append(f"{meta.relative_to(zarr_path).as_posix()} ({error})")
    cause = f"cannot parse {', '.join(bad)}" if bad else f"cannot read {what}: {type(exc).__name__}: {exc}"
    return NotARunError(f"run store at '{zarr_path}' is damaged: {cause}")


def read_root_attrs(zarr_path: Path) -> dict:
    """The root attributes of a run store, checked to be a tuneline run (NotARunError)."""
    meta_path = zarr_path / "zarr.json"
    try:
        meta = json.loads(meta_path.read_bytes())
    except FileNotFoundError:
        raise NotARunError(f"'{zarr_path}' is not a tuneline run: it has no zarr.json") from None
    except (OSError, ValueError) as exc:
        raise NotARunError(
            f"'{zarr_path}' is not a tuneline run: cannot read {meta_path.name}: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("node_type") != "group" or meta.get("zarr_format") != 3:
        raise NotARunError(f"'{zarr_path}' is not a tuneline run: not a zarr v3 group")
    attrs = meta.get("attributes")
    schema = attrs.get("schema") if isinstance(attrs, dict) else None
    if schema != SCHEMA:
        raise NotARunError(
            f"'{zarr_path}' is not a tuneline run: schema is {schema!r}, expected {SCHEMA!r}")
    missing = [key for key in _REQUIRED_ATTRS if key not in attrs]
    if missing:
        raise NotARunError(f"'{zarr_path}' is a damaged tuneline run: root attributes {missing} are missing")
    return attrs


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

    def __init__(self, zarr_path: Path):
        self.zarr_path = Path(zarr_path)
        self.path = self.zarr_path.parent if self.zarr_path.name == RECORD else self.zarr_path
        self._store = LocalStore(self.zarr_path, read_only=True)
        self._lock = threading.RLock()
        self._attrs = read_root_attrs(self.zarr_path)
        self._arrays: dict[str, zarr.Array] = {}
        self._data: dict[str, np.ndarray] = {}  # raw arrays, valid for self.n_committed rows
        self._derived: dict[tuple, np.ndarray] = {}  # computed from raw arrays; cleared on growth
        self._layers: dict[str, LayerRecord] = {}

    @classmethod
    def open(cls, path: str | os.PathLike) -> Run:
        """Open the run in folder `path` (or the `record.zarr` itself), read-only."""
        return cls(resolve_zarr_path(path))

    def __repr__(self) -> str:
        return f"Run({self.name!r}, path='{self.path}', n_committed={self.n_committed}, layers={self.layers})"

    # ---------------------------------------------------------------- metadata

    @property
    def n_committed(self) -> int:
        """Number of complete checkpoint rows (as of the last `refresh()`)."""
        return int(self._attrs["n_committed"])

    def refresh(self) -> bool:
        """Re-read `n_committed`; True if rows were committed since (or the run was replaced)."""
        with self._lock:
            old = self._attrs
            new = read_root_attrs(self.zarr_path)
            replaced = new.get("run") != old.get("run") or new["n_committed"] < old["n_committed"]
            if replaced:  # another run was written at this path: forget everything
                self._arrays.clear()
                self._data.clear()
                self._layers.clear()
            self._attrs = new
            changed = replaced or new["n_committed"] != old["n_committed"]
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
        return self._attrs.get("run", {}).get("name") or self.path.name

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
            if not (self.zarr_path / key / "zarr.json").is_file():
                return None
            try:
                arr = zarr.open_array(store=self._store, path=key, mode="r", zarr_format=3)
            except (OSError, ValueError, TypeError, KeyError) as exc:
                raise damaged(self.zarr_path, f"the metadata of array '{key}'", exc) from exc
            if arr.shape[0] < min_rows:
                raise ValueError(
                    f"run store at '{self.zarr_path}' is damaged: array '{key}' has "
                    f"{arr.shape[0]} rows but {min_rows} are committed")
            self._arrays[key] = arr
        return arr

    def has_array(self, key: str) -> bool:
        """Whether the store has the array at `key` (e.g. 'layers/fc/iou', 'metrics/loss')."""
        return key in self._arrays or (self.zarr_path / key / "zarr.json").is_file()

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
            raise damaged(self.zarr_path, f"{where} of array '{key}'", exc) from exc

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

    @property
    def metric_names(self) -> list[str]:
        folder = self.zarr_path / "metrics"
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if (p / "zarr.json").is_file())

    @property
    def metrics(self) -> dict[str, np.ndarray]:
        """Every metric: name -> float64 `[T]` (NaN where a row did not have it)."""
        return {name: self.metric(name) for name in self.metric_names}

    def metric(self, name: str) -> np.ndarray:
        data = self.read(f"metrics/{name}")
        if data is None:
            raise KeyError(f"run '{self.name}' has no metric {name!r}; it has {self.metric_names}")
        return data.astype(METRIC_SPEC.dtype, copy=False)

    def _probe_complete(self) -> bool:
        try:
            meta = json.loads((self.zarr_path / "probe" / "zarr.json").read_bytes())
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


def _array_property(name: str) -> property:
    spec = LAYER_ARRAYS[name]
    return property(lambda self: self.array(name),
                    doc=f"{spec.dtype} [{', '.join(spec.dims)}], committed rows (KeyError if absent).")


class LayerRecord:
    """The arrays of one layer of a run, and what is computed from them.

        layer = run.layer("layer3")
        layer.sum_true                 # float32 [T, C, K]
        layer.row("sum_true", -1)      # [C, K] of the last checkpoint, one chunk read
        layer.selectivity("si")        # float64 [T, K]
        layer.dominant()               # int64 [T, K], -1 where no class has images
    """

    def __init__(self, run: Run, name: str):
        self.run = run
        self.name = name
        self.units = run.units[name]

    def __repr__(self) -> str:
        return f"LayerRecord({self.name!r}, units={self.units}, arrays={self.arrays})"

    def _key(self, array: str) -> str:
        if array not in LAYER_ARRAYS:
            raise KeyError(f"{array!r} is not a layer array; valid names: {list(LAYER_ARRAYS)}")
        return f"layers/{self.name}/{array}"

    @property
    def arrays(self) -> list[str]:
        """Names of the arrays this layer has, in schema order."""
        return [a for a in LAYER_ARRAYS if self.has(a)]

    def has(self, array: str) -> bool:
        return self.run.has_array(self._key(array))

    def array(self, array: str) -> np.ndarray:
        """Committed rows of one array; KeyError naming array and layer if absent."""
        data = self.run.read(self._key(array))
        if data is None:
            raise KeyError(f"layer {self.name!r} has no array {array!r}; it has {self.arrays}")
        return data

    def row(self, array: str, t: int) -> np.ndarray:
        """Row `t` of one array (negative counts from the end); reads a single chunk."""
        key = self._key(array)
        if not self.run.has_array(key):
            raise KeyError(f"layer {self.name!r} has no array {array!r}; it has {self.arrays}")
        return self.run.read_row(key, t)

    sum_true = _array_property("sum_true")
    count_true = _array_property("count_true")
    sum_pred = _array_property("sum_pred")
    count_pred = _array_property("count_pred")
    max_true = _array_property("max_true")
    train_sum = _array_property("train_sum")
    train_count = _array_property("train_count")
    precision = _array_property("precision")
    threshold = _array_property("threshold")
    iou = _array_property("iou")
    topk_index = _array_property("topk_index")
    topk_value = _array_property("topk_value")
    topk_map = _array_property("topk_map")

    def _derived(self, key: tuple, compute) -> np.ndarray:
        run = self.run
        with run._lock:
            full_key = (self.name, run.n_committed) + key
            if full_key not in run._derived:
                run._derived[full_key] = _read_only(compute())
            return run._derived[full_key]

    def class_means(self, by: str = "true") -> np.ndarray:
        """float64 `[T, C, K]` class means; NaN for classes without images.

        by: "true" / "pred" (probe pass by true / predicted label), "train" (online,
        cumulative over all windows so far) or "train_window" (this window only).
        """
        if by not in GROUPINGS:
            raise ValueError(f"by={by!r} is not one of {', '.join(map(repr, GROUPINGS))}")

        def compute():
            if by == "true":
                return metrics.class_means(self.sum_true, self.count_true)
            if by == "pred":
                return metrics.class_means(self.sum_pred, self.count_pred)
            sums, counts = self.train_sum, self.train_count
            if by == "train":
                sums = np.cumsum(sums, axis=0, dtype=np.float64)
                counts = np.cumsum(counts, axis=0)
            return metrics.class_means(sums, counts)

        return self._derived(("class_means", by), compute)

    def selectivity(self, metric: str = "si", by: str = "true") -> np.ndarray:
        """float64 `[T, K]` in [0, 1]: "si", "entropy", or the stored "precision" (by="true")."""
        if metric not in SELECTIVITY_METRICS:
            raise ValueError(f"metric {metric!r} is not one of {', '.join(map(repr, SELECTIVITY_METRICS))}")
        if by not in GROUPINGS:
            raise ValueError(f"by={by!r} is not one of {', '.join(map(repr, GROUPINGS))}")
        if metric == "precision":
            if by != "true":
                raise ValueError(f"metric 'precision' is stored by true label only, not by={by!r}")
            return self._derived(("precision",), lambda: self.precision.astype(np.float64))
        return self._derived(("selectivity", metric, by),
                             lambda: metrics.selectivity(self.class_means(by), metric))

    def dominant(self, by: str = "true") -> np.ndarray:
        """int64 `[T, K]`: argmax over classes of the class means; -1 where all are NaN."""
        return self._derived(("dominant", by), lambda: metrics.dominant(self.class_means(by)))

    def _concept_categories(self) -> tuple[np.ndarray, list[str]]:
        names = list(dict.fromkeys(c.category for c in self.run.concepts))
        return np.array([names.index(c.category) for c in self.run.concepts], dtype=np.int64), names

    def detectors(self, min_iou: float = DETECTOR_MIN_IOU) -> dict[str, np.ndarray]:
        """Each unit's best concept by IoU (Network Dissection), per checkpoint.

        Returns {"concept": int64 [T, K] (index into run.concepts; -1 where the unit is
        no detector), "category": int64 [T, K] (index into `categories`), "iou": float64
        [T, K] (best IoU), "is_detector": bool [T, K] (best IoU > min_iou), "categories":
        list of category names}.
        """
        if not self.has("iou"):
            raise NotImplementedError(
                f"dissection was not recorded for layer {self.name!r}: it has no 'iou' array")
        category, names = self._concept_categories()
        return {**best_concepts(self.iou, category, min_iou), "categories": names}

    def unique_detectors(self, min_iou: float = DETECTOR_MIN_IOU) -> dict[str, np.ndarray]:
        """Per concept category, the number of distinct concepts detected by some unit, int64
        [T] (Bau et al.'s "number of unique detectors" vs. training iteration)."""
        if not self.has("iou"):
            raise NotImplementedError(
                f"dissection was not recorded for layer {self.name!r}: it has no 'iou' array")
        category, names = self._concept_categories()
        return unique_detectors(self.iou, category, names, min_iou)
