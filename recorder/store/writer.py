"""Writing a run store: `RunWriter` appends one row per checkpoint (numpy and zarr only).

    w = RunWriter.open("runs/demo/baseline", classes=["cat", "dog"], concepts=[],
                       layers={"fc": 16}, probe={"source": "p.h5", "n_images": 8,
                                                 "fingerprint": "ab12"})
    w.append(100, metrics={"loss": 0.7},
             layers={"fc": {"sum_true": s, "count_true": c}})   # s [C, K], c [C]
    w.close()

Crash safety: every array of a row is grown and written first, and the root
attribute `n_committed` last. A writer that reopens a run (or appends after a failed
append) first trims every array back to `n_committed` rows. Every file is written to
a temporary name and renamed, so concurrent readers never see half a file.

Speed: the resize and write of every array of a row (all layers) are issued in one
event-loop call, and the row's files are then written by a few threads; see `_RowStore`.
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import time
import uuid
from concurrent.futures import ThreadPoolExecutor, wait
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import zarr
from zarr.core.sync import sync
from zarr.storage import LocalStore

from recorder.schema import LAYER_ARRAYS, METRIC_SPEC, PROBE_ARRAYS, ROOT_ARRAYS, SCHEMA, ArraySpec, Concept
from recorder.store.reader import RECORD, NotARunError, damaged, read_root_attrs

__all__ = ["RunMismatchError", "RunWriter", "StoreWriteError"]

# Fill values of arrays (rows not written read as these).
_INT_FILL = {"count_true": 0, "count_pred": 0, "train_count": 0, "topk_index": -1, "step": -1, "labels": -1}
# Dimensions whose length the run fixes (other dims, e.g. topk_map's y/x, are set by the first row).
_FIXED_DIMS = ("class", "unit", "concept", "rank")
_THUMB_CHUNK = 64  # probe images per chunk of probe/thumbs
# Arrays worth compressing (zstd): activation maps are mostly zeros after a ReLU. Class
# sums of floats hardly compress, and compressing costs a thread hop per chunk.
_COMPRESSED = ("topk_map",)
# Chunk files named c.<t>.0.0 inside the array's folder: a new row then needs no new
# folders (with "/" every row of every array would create two).
_CHUNK_KEYS = {"name": "default", "separator": "."}
_WRITE_THREADS = 4  # threads that write the files of a row


class RunMismatchError(ValueError):
    """Resuming a run with classes, concepts, layers, probe or topk that differ from the stored ones."""


class StoreWriteError(RuntimeError):
    """Writing a row failed; the row was not committed (the cause is chained)."""


def _fill(name: str, dtype: str):
    return _INT_FILL.get(name, 0) if np.dtype(dtype).kind in "iu" else np.nan


def _check_node_name(kind: str, name) -> str:
    if not isinstance(name, str) or not name or "/" in name or name in (".", "..") or name.startswith("__"):
        raise ValueError(f"{kind} name {name!r} is not valid: use a non-empty string without '/'")
    return name


def _jsonable(value, what: str):
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
        return [_jsonable(v, f"{what}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{what} has a non-string key {k!r}: attributes must be JSON")
            out[k] = _jsonable(v, f"{what}[{k!r}]")
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


def _interrupted_creation(zarr_path: Path) -> bool:
    """Whether `zarr_path` is a folder without root metadata that holds no file but the
    temporary files of `_atomic_put`: what a crash during the creation of a run leaves."""
    if not zarr_path.is_dir() or (zarr_path / "zarr.json").exists():
        return False
    return all(p.is_dir() or p.name.endswith(".partial") for p in zarr_path.rglob("*"))


def _atomic_put(path: Path, data) -> None:
    """Write `data` to a temporary file next to `path`, then rename it over `path`."""
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.partial")
    try:
        f = open(tmp, "wb")
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(tmp, "wb")
    try:
        with f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class _RowStore(LocalStore):
    """A LocalStore that collects the files of a row, then writes them in a few threads.

    zarr's LocalStore hands every file to a worker thread; for the small files of a row
    (a chunk and a zarr.json per array) the hand-off costs more than the write, so a
    row took about twice as long (measured on tmpfs). Between `begin_row()` and
    `end_row()` files are only collected; `write_files` then writes them in
    `_WRITE_THREADS` batches, which keeps the I/O of a slow disk overlapped. Outside a
    row, files are written at once. Every file goes to a temporary name first and is
    renamed, so concurrent readers see whole files only.
    """

    _pending: list | None = None

    async def set(self, key: str, value) -> None:
        if not self._is_open:
            await self._open()
        self._check_writable()
        if self._pending is not None:
            self._pending.append((self.root / key, value))
        else:
            _atomic_put(self.root / key, value.as_buffer_like())

    def begin_row(self) -> None:
        self._pending = []

    def end_row(self) -> list:
        files, self._pending = self._pending or [], None
        return files


def _write_batch(files: list) -> None:
    for path, value in files:
        _atomic_put(path, value.as_buffer_like())


def _write_files(files: list, pool: ThreadPoolExecutor) -> None:
    """Write (path, buffer) pairs in parallel batches; raise the first error once all are done."""
    if len(files) <= 2 * _WRITE_THREADS:
        _write_batch(files)
        return
    futures = [pool.submit(_write_batch, files[i::_WRITE_THREADS]) for i in range(_WRITE_THREADS)]
    wait(futures)
    for future in futures:
        future.result()


async def _gather_all(coros) -> None:
    """Run all coroutines to the end, then raise the first error (none left in flight)."""
    results = await asyncio.gather(*coros, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


async def _grow_and_set(array, n: int, value) -> None:
    await array.resize((n + 1, *array.metadata.shape[1:]))
    await array.setitem(n, value)


async def _shrink(array, n: int) -> None:
    await array.resize((n, *array.metadata.shape[1:]))


class RunWriter:
    """Creates or resumes a run store and appends one row per checkpoint.

        with RunWriter.open("runs/demo/base", classes=classes, concepts=[], layers={"fc": 16},
                            probe={"source": "p.h5", "n_images": 30, "fingerprint": "ab12"}) as w:
            w.write_probe(thumbs, labels)                       # once: [N, H, W, 3] uint8, [N]
            w.append(100, epoch=0.5, metrics={"loss": 0.7},
                     layers={"fc": {"sum_true": sums, "count_true": counts}})

    The arrays of every layer are created by the first row that has them; later
    rows must have the same arrays with the same shapes.
    """

    def __init__(self, zarr_path: Path, group: zarr.Group):
        attrs = group.attrs.asdict()
        self.zarr_path = zarr_path
        self.path = zarr_path.parent
        self._group = group
        self._classes: list[str] = attrs["classes"]
        self._n_concepts = len(attrs["concepts"])
        self._units: dict[str, int] = {name: int(attrs["units"][name]) for name in attrs["layers"]}
        self._topk = int(attrs["topk"])
        self._n = int(attrs["n_committed"])
        self._arrays: dict[str, zarr.Array] = {}
        self._last_step: int | None = None
        self._dirty = True  # trim to n_committed before the first write
        self._closed = False
        self._store: _RowStore = group.store
        self._pool = ThreadPoolExecutor(_WRITE_THREADS, thread_name_prefix="tuneline-store")

    # ------------------------------------------------------------------ open

    @classmethod
    def open(cls, path: str | os.PathLike, *, classes: list[str], concepts: list,
             layers: dict[str, int], probe: dict, run: dict | None = None, topk: int = 8) -> RunWriter:
        """Create the run in folder `path` (may not exist yet, or be empty), or resume it.

        Resuming checks classes, concepts, layers (names, order, units), probe
        fingerprint and size and topk: any difference -> RunMismatchError, and the
        store is left untouched. Then every array is trimmed to `n_committed` rows.
        """
        attrs = cls._new_attrs(Path(path), classes, concepts, layers, probe, run, topk)
        folder = Path(path)
        zarr_path = folder / RECORD
        if _interrupted_creation(zarr_path):  # killed before its root metadata was written
            shutil.rmtree(zarr_path)
        if zarr_path.exists():
            stored = read_root_attrs(zarr_path)
            diffs = cls._differences(stored, attrs)
            if diffs:
                raise RunMismatchError(f"cannot resume run at '{folder}': " + "; ".join(diffs))
            group = zarr.open_group(_RowStore(zarr_path), mode="r+", zarr_format=3)
        else:
            if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
                raise NotARunError(
                    f"'{folder}' is not a tuneline run: it is not empty and has no {RECORD} "
                    f"(choose a new or empty folder)")
            try:
                folder.mkdir(parents=True, exist_ok=True)
                group = zarr.open_group(_RowStore(zarr_path), mode="w-", zarr_format=3, attributes=attrs)
            except OSError as exc:
                raise type(exc)(exc.errno, f"cannot create a run store at '{folder}': {exc.strerror}") from exc
        writer = cls(zarr_path, group)
        try:
            writer._prepare()
        except OSError as exc:
            raise type(exc)(exc.errno, f"cannot write the run store at '{zarr_path}': {exc.strerror}") from exc
        except NotARunError:
            raise
        except (ValueError, TypeError, KeyError) as exc:  # e.g. a zarr.json that does not parse
            raise damaged(zarr_path, "its arrays", exc) from exc
        return writer

    @staticmethod
    def _new_attrs(path: Path, classes, concepts, layers, probe, run, topk) -> dict:
        """Validate the arguments of `open` (before anything is touched) into root attributes."""
        if isinstance(classes, str) or not all(isinstance(c, str) for c in classes):
            raise ValueError(f"classes must be a list of str, got {classes!r}")
        concepts = [_concept_dict(c, i) for i, c in enumerate(concepts)]
        if not isinstance(layers, dict) or not layers:
            raise ValueError(f"layers must be a non-empty dict of layer name -> number of units, got {layers!r}")
        for name, k in layers.items():
            _check_node_name("layer", name)
            if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
                raise ValueError(f"layer {name!r} has {k!r} units: expected a positive int")
        if not isinstance(probe, dict):
            raise ValueError(f"probe must be a dict with source, n_images and fingerprint, got {probe!r}")
        if isinstance(topk, bool) or not isinstance(topk, (int, np.integer)) or topk < 0:
            raise ValueError(f"topk must be a non-negative int, got {topk!r}")
        run = dict(run or {})
        run.setdefault("name", path.name)
        run.setdefault("config", {})
        run["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        return {
            "schema": SCHEMA,
            "run": _jsonable(run, "run"),
            "classes": list(classes),
            "concepts": concepts,
            "probe": _jsonable(probe, "probe"),
            "layers": list(layers),
            "units": {name: int(k) for name, k in layers.items()},
            "topk": int(topk),
            "n_committed": 0,
        }

    @staticmethod
    def _differences(stored: dict, given: dict) -> list[str]:
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

    def _prepare(self) -> None:
        """Create missing groups and root arrays, trim to n_committed, read the last step."""
        for name in self._units:
            self._group.require_group(f"layers/{name}")
        self._group.require_group("metrics")
        existing = set(self._group.array_keys())
        self._create({name: (spec, ()) for name, spec in ROOT_ARRAYS.items() if name not in existing}, 0)
        self._recover()
        if self._n:
            self._last_step = int(self._arrays["step"][self._n - 1])

    def _recover(self) -> None:
        """Reopen every array from disk and trim it back to `n_committed` rows."""
        self._arrays = {key: node for key, node in self._group.members(max_depth=None)
                        if isinstance(node, zarr.Array) and not key.startswith("probe/")}
        short = [k for k, a in self._arrays.items() if a.shape[0] < self._n]
        if short:
            raise NotARunError(f"run store at '{self.zarr_path}' is damaged: arrays {short} have "
                               f"fewer than n_committed = {self._n} rows")
        longer = [a._async_array for a in self._arrays.values() if a.shape[0] > self._n]
        sync(_gather_all(_shrink(a, self._n) for a in longer))
        self._dirty = False

    def _create(self, arrays: dict[str, tuple[ArraySpec, tuple]], n: int) -> None:
        """Create arrays (key -> (spec, row shape)) with `n` rows of fill values, concurrently."""

        async def create(key: str, spec: ArraySpec, row_shape: tuple) -> None:
            name = key.rsplit("/", 1)[-1]
            arr = await self._group._async_group.create_array(
                key, shape=(n, *row_shape), chunks=(1, *(max(1, d) for d in row_shape)),
                chunk_key_encoding=_CHUNK_KEYS, dtype=spec.dtype, fill_value=_fill(name, spec.dtype), dimension_names=spec.dims,
                compressors="auto" if name in _COMPRESSED else None, config={"write_empty_chunks": True})
            self._arrays[key] = zarr.Array(arr)

        sync(_gather_all(create(key, spec, shape) for key, (spec, shape) in arrays.items()))

    def _forget(self, keys: list[str]) -> None:
        """Best effort: delete arrays a failed row created, so the next row need not have them."""
        for key in keys:
            self._arrays.pop(key, None)
            try:
                del self._group[key]
            except Exception:  # noqa: BLE001 - the next append trims whatever is left
                pass

    # ---------------------------------------------------------------- state

    @property
    def n_committed(self) -> int:
        return self._n

    @property
    def last_step(self) -> int | None:
        return self._last_step

    @property
    def layers(self) -> list[str]:
        return list(self._units)

    def close(self) -> None:
        """Stop writing; every committed row is already on disk."""
        self._closed = True
        self._pool.shutdown()

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RunWriter('{self.path}', n_committed={self._n}, last_step={self._last_step})"

    # ---------------------------------------------------------------- probe

    def write_probe(self, thumbs: np.ndarray, labels: np.ndarray) -> None:
        """Store probe thumbnails uint8 `[N, H, W, 3]` and labels `[N]`; no-op if already stored."""
        self._check_open()
        thumbs, labels = np.asarray(thumbs), np.asarray(labels)
        if thumbs.ndim != 4 or thumbs.shape[-1] != 3 or thumbs.dtype != np.uint8:
            raise ValueError(f"thumbs must be uint8 [N, H, W, 3], got {thumbs.dtype} {thumbs.shape}")
        if labels.shape != thumbs.shape[:1] or labels.dtype.kind not in "iu":
            raise ValueError(f"labels must be int [N] = [{len(thumbs)}], got {labels.dtype} {labels.shape}")
        n_images = self._group.attrs["probe"].get("n_images")
        if n_images is not None and n_images != len(thumbs):
            raise ValueError(f"the run's probe has {n_images} images but {len(thumbs)} thumbs were given")
        probe = self._group.require_group("probe")
        if probe.attrs.get("complete"):
            return
        try:
            for name, data, chunk in (("thumbs", thumbs, _THUMB_CHUNK), ("labels", labels, len(labels))):
                spec = PROBE_ARRAYS[name]
                arr = probe.create_array(
                    name, shape=data.shape, chunks=(max(1, min(len(data), chunk)), *data.shape[1:]),
                    dtype=spec.dtype, fill_value=_fill(name, spec.dtype), dimension_names=spec.dims,
                    overwrite=True)
                arr[...] = data.astype(spec.dtype)
            probe.attrs["complete"] = True
        except Exception as exc:
            raise StoreWriteError(f"could not write the probe to the run at '{self.zarr_path}': {exc}") from exc

    # ---------------------------------------------------------------- append

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"the writer of the run at '{self.path}' is closed")

    def _check_step(self, step) -> int:
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
            raise ValueError(f"step must be an int, got {step!r}")
        if self._last_step is not None and step <= self._last_step:
            raise ValueError(f"step {step} must be greater than the last committed step "
                             f"{self._last_step} of the run at '{self.path}'")
        return int(step)

    def _expected_shape(self, layer: str, key: str, spec: ArraySpec, value: np.ndarray) -> tuple:
        arr = self._arrays.get(key)
        if arr is not None:
            return tuple(arr.shape[1:])
        sizes = {"class": len(self._classes), "unit": self._units[layer],
                 "concept": self._n_concepts, "rank": self._topk}
        dims = spec.dims[1:]
        if value.ndim != len(dims):
            return tuple(sizes.get(d, "?") for d in dims)
        return tuple(sizes[d] if d in _FIXED_DIMS else value.shape[i] for i, d in enumerate(dims))

    def _check_layers(self, layers: dict) -> list[tuple[str, ArraySpec, np.ndarray]]:
        """Validate a row's layer arrays (names, completeness, shapes) into (key, spec, value)."""
        if not isinstance(layers, dict):
            raise ValueError(f"layers must be a dict of layer name -> {{array name: array}}, got {type(layers)}")
        unknown = [name for name in layers if name not in self._units]
        if unknown:
            raise ValueError(f"unknown layers {unknown}: the run's layers are {list(self._units)}")
        items = []
        for layer in self._units:
            given = layers.get(layer, {})
            if not isinstance(given, dict):
                raise ValueError(f"layer {layer!r} must map array names to arrays, got {type(given).__name__}")
            bad = [a for a in given if a not in LAYER_ARRAYS]
            if bad:
                raise ValueError(f"unknown arrays {bad} for layer {layer!r}; valid names: {list(LAYER_ARRAYS)}")
            prefix = f"layers/{layer}/"
            missing = [k[len(prefix):] for k in self._arrays if k.startswith(prefix) and k[len(prefix):] not in given]
            if missing:
                raise ValueError(f"layer {layer!r} is missing arrays {missing} in this row: rows must be complete")
            for name, value in given.items():
                spec, key = LAYER_ARRAYS[name], prefix + name
                value = np.asarray(value)
                expected = self._expected_shape(layer, key, spec, value)
                if value.shape != expected:
                    raise ValueError(f"array {name!r} of layer {layer!r} has row shape {value.shape}, "
                                     f"expected {expected} ({', '.join(spec.dims[1:])})")
                items.append((key, spec, value.astype(spec.dtype, copy=False)))
        return items

    def append(self, step: int, *, epoch: float = math.nan, wall_time: float | None = None,
               metrics: dict[str, float] | None = None,
               layers: dict[str, dict[str, np.ndarray]] | None = None) -> None:
        """Write one checkpoint row, then commit it by advancing `n_committed`.

        Everything is validated before anything is written. If a write fails, the row
        is not committed, StoreWriteError (naming the store) is raised, and the next
        append trims the partial row first.
        """
        self._check_open()
        step = self._check_step(step)
        rows = self._check_layers(layers or {})
        metrics = dict(metrics or {})
        for name, value in metrics.items():
            _check_node_name("metric", name)
            try:
                metrics[name] = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"metric {name!r} = {value!r} is not a number") from None
        try:
            epoch, wall_time = float(epoch), time.time() if wall_time is None else float(wall_time)
        except (TypeError, ValueError):
            raise ValueError(f"epoch and wall_time must be numbers, got {epoch!r} and {wall_time!r}") from None
        n = self._n
        new: dict[str, tuple[ArraySpec, tuple]] = {}
        try:
            if self._dirty:
                self._recover()
            values = {"step": np.int64(step), "epoch": np.float64(epoch), "wall_time": np.float64(wall_time)}
            metric_keys = {k for k in self._arrays if k.startswith("metrics/")}
            metric_keys |= {f"metrics/{name}" for name in metrics}
            for key in sorted(metric_keys):
                values[key] = np.float64(metrics.get(key[len("metrics/"):], math.nan))
                if key not in self._arrays:
                    new[key] = (METRIC_SPEC, ())
            for key, spec, value in rows:
                values[key] = value
                if key not in self._arrays:
                    new[key] = (spec, value.shape)
            self._create(new, n)
            self._store.begin_row()
            try:
                sync(_gather_all(_grow_and_set(self._arrays[k]._async_array, n, v) for k, v in values.items()))
            finally:
                files = self._store.end_row()
            _write_files(files, self._pool)
            self._group.attrs["n_committed"] = n + 1
        except BaseException as exc:  # also KeyboardInterrupt: the next append must trim
            self._dirty = True
            self._forget(list(new))
            if not isinstance(exc, Exception):
                raise
            raise StoreWriteError(f"could not write row {n} (step {step}) to the run store at "
                                  f"'{self.zarr_path}'; the row was not committed: "
                                  f"{type(exc).__name__}: {exc}") from exc
        self._n = n + 1
        self._last_step = step
