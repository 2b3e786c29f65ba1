"""Writing a run store: `RunWriter` appends one row per checkpoint (numpy and zarr only).

    w = RunWriter.open("runs/demo/baseline", classes=["cat", "dog"], concepts=[],
                       layers={"fc": 16}, probe={"source": "p.h5", "n_images": 8,
                                                 "fingerprint": "ab12"})   # or "s3://bucket/..."
    w.append(100, metrics={"loss": 0.7},
             layers={"fc": {"sum_true": s, "count_true": c}})   # s [C, K], c [C]
    w.close()

Metrics (`append(metrics=...)`, `log_scalars(step, values)`) are scalars stored at
their own step (`recorder.store.scalars`), committed with the root attribute `scalars`.

Crash safety: every array of a row is grown and written first, and the root
attribute `n_committed` last. A writer that reopens a run (or appends after a failed
append) first trims every array back to `n_committed` rows. Local files are written
to a temporary name and renamed (`location.AtomicLocalStore`); objects in an object
store are replaced whole. Either way concurrent readers never see half a file.

Speed: the arrays of a row are appended by a few threads through zarr's public
synchronous API, so the writes of a row overlap (on a disk and over a network).
"""

from __future__ import annotations

import math
import os
import time
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import numpy as np
import zarr

from recorder.schema import PROBE_ARRAYS, ROOT_ARRAYS, ArraySpec
from recorder.store.attrs import differences, jsonable, new_attrs
from recorder.store.location import Location, remove_partial_files
from recorder.store.root import RECORD, NotARunError, damaged, read_root_attrs
from recorder.store.rows import check_layer_rows
from recorder.store.scalars import append_scalars, check_scalars, trim_scalars

__all__ = ["RunMismatchError", "RunWriter", "StoreWriteError"]

# Fill values of arrays (rows not written read as these).
_INT_FILL = {"count_true": 0, "count_pred": 0, "train_count": 0, "topk_index": -1, "topk_mean_index": -1,
             "step": -1, "labels": -1}
# Dimensions whose length the run fixes (other dims, e.g. topk_map's y/x, are set by the first row).
_THUMB_CHUNK = 64  # probe images per chunk of probe/thumbs
# Arrays worth compressing (zstd): activation maps are mostly zeros after a ReLU. Class
# sums of floats hardly compress.
_COMPRESSED = ("topk_map", "occlusion", "rf")  # occlusion, rf: NaN in rows without occlusion
# Chunk files named c.<t>.0.0 inside the array's folder: a new row then needs no new
# folders (with "/" every row of every array would create two).
_CHUNK_KEYS = {"name": "default", "separator": "."}
_THREADS = 8  # threads that append the arrays of a row
_GROW_ROWS = 64  # rows added to an array at a time


class RunMismatchError(ValueError):
    """Resuming a run with classes, concepts, layers, probe or topk that differ from the stored ones."""


class StoreWriteError(RuntimeError):
    """Writing a row failed; the row was not committed (the cause is chained)."""


def _fill(name: str, dtype: str):
    return _INT_FILL.get(name, 0) if np.dtype(dtype).kind in "iu" else np.nan


def _interrupted_creation(zarr_loc: Location) -> bool:
    """Whether `zarr_loc` exists without root metadata and holds no file but temporary
    ones (`*.partial`): what a crash during the creation of a local run leaves."""
    if not zarr_loc.exists() or zarr_loc.is_file("zarr.json"):
        return False
    return all(key.endswith(".partial") for key in zarr_loc.files())


def _os_error(exc: OSError, message: str) -> OSError:
    """`exc` again, with `message` (naming the store) in place of its text."""
    text = f"{message}: {exc.strerror or exc}"
    try:
        return type(exc)(exc.errno, text) if exc.errno is not None else type(exc)(text)
    except TypeError:
        return OSError(exc.errno, text)


def _put_row(array: zarr.Array, n: int, value) -> None:
    """Write row `n` of `array`, first growing it by `_GROW_ROWS` rows when it has no row `n`:
    one metadata write per `_GROW_ROWS` rows instead of one per row. Rows past `n_committed`
    are never read, and are trimmed on reopen and on close."""
    if array.shape[0] <= n:
        array.resize((n + _GROW_ROWS, *array.shape[1:]))
    array[n] = np.asarray(value)


def _all(pool: ThreadPoolExecutor, work, items: list) -> None:
    """`work(item)` for every item, by the threads of `pool`; the first error is raised
    once every item is done (nothing is left in flight)."""
    if len(items) <= 1:
        for item in items:
            work(item)
        return
    batches = [items[i::_THREADS] for i in range(min(_THREADS, len(items)))]
    futures = [pool.submit(lambda batch=batch: [work(item) for item in batch]) for batch in batches]
    wait(futures)
    for future in futures:
        future.result()


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

    def __init__(self, zarr_loc: Location, group: zarr.Group):
        attrs = group.attrs.asdict()
        self.zarr_location = zarr_loc
        self.location: str = zarr_loc.parent.url  # the run folder: a local path or a URL
        self.path: Path | None = zarr_loc.parent.path  # None for a URL
        self.zarr_path: Path | None = zarr_loc.path
        self._group = group
        self._classes: list[str] = attrs["classes"]
        self._n_concepts = len(attrs["concepts"])
        self._units: dict[str, int] = {name: int(attrs["units"][name]) for name in attrs["layers"]}
        self._topk = int(attrs["topk"])
        self._n = int(attrs["n_committed"])
        self._scalar_counts: dict[str, int] = {k: int(v) for k, v in attrs.get("scalars", {}).items()}
        self._arrays: dict[str, zarr.Array] = {}
        self._last_step: int | None = None
        self._dirty = True  # trim to n_committed before the first write
        self._closed = False
        self._pool = ThreadPoolExecutor(_THREADS, thread_name_prefix="tuneline-store")

    # ------------------------------------------------------------------ open

    @classmethod
    def open(cls, path: str | os.PathLike, *, classes: list[str], concepts: list,
             layers: dict[str, int], probe: dict, run: dict | None = None, topk: int = 8,
             storage_options: dict | None = None) -> RunWriter:
        """Create the run in folder or URL `path` (may not exist yet, or be empty), or resume it.

        Resuming checks classes, concepts, layers (names, order, units), probe
        fingerprint and size and topk: any difference -> RunMismatchError, and the
        store is left untouched. Then every array is trimmed to `n_committed` rows.
        `storage_options` go to the fsspec backend of a URL (e.g. `endpoint_url`).
        """
        folder = Location.parse(path, storage_options)
        attrs = new_attrs(folder.name, classes, concepts, layers, probe, run, topk)
        zarr_loc = folder.join(RECORD)
        try:
            if _interrupted_creation(zarr_loc):  # killed before its root metadata was written
                zarr_loc.remove()
            if zarr_loc.exists():
                diffs = differences(read_root_attrs(zarr_loc), attrs)
                if diffs:
                    raise RunMismatchError(f"cannot resume run at '{folder}': " + "; ".join(diffs))
                if zarr_loc.is_local:  # what a writer killed mid-file left
                    remove_partial_files(zarr_loc.path)
                group = zarr.open_group(zarr_loc.zarr_store(read_only=False), mode="r+", zarr_format=3)
            else:
                if not folder.is_empty() or (folder.is_local and folder.path.exists() and not folder.path.is_dir()):
                    raise NotARunError(
                        f"'{folder}' is not a tuneline run: it is not empty and has no {RECORD} "
                        f"(choose a new or empty folder)")
                if folder.is_local:
                    folder.path.mkdir(parents=True, exist_ok=True)
                group = zarr.open_group(zarr_loc.zarr_store(read_only=False), mode="w-", zarr_format=3,
                                        attributes=attrs)
        except OSError as exc:
            raise _os_error(exc, f"cannot create a run store at '{folder}'") from exc
        writer = cls(zarr_loc, group)
        try:
            writer._prepare()
        except OSError as exc:
            writer.close()
            raise _os_error(exc, f"cannot write the run store at '{zarr_loc}'") from exc
        except NotARunError:
            writer.close()
            raise
        except (ValueError, TypeError, KeyError) as exc:  # e.g. a zarr.json that does not parse
            writer.close()
            raise damaged(zarr_loc, "its arrays", exc) from exc
        return writer

    def _prepare(self) -> None:
        """Create missing groups and root arrays, trim to n_committed, read the last step."""
        for name in self._units:
            self._group.require_group(f"layers/{name}")
        existing = set(self._group.array_keys())
        self._create({name: (spec, ()) for name, spec in ROOT_ARRAYS.items() if name not in existing}, 0)
        self._recover()
        if self._n:
            self._last_step = int(self._arrays["step"][self._n - 1])

    def _recover(self) -> None:
        """Reopen every array from the store and trim it back to `n_committed` rows."""
        self._arrays = {key: node for key, node in self._group.members(max_depth=None)
                        if isinstance(node, zarr.Array) and not key.startswith(("probe/", "occlusion/"))}
        rows = {k: a for k, a in self._arrays.items() if not k.startswith("scalars/")}
        short = [k for k, a in rows.items() if a.shape[0] < self._n]
        if short:
            raise NotARunError(f"run store at '{self.zarr_location}' is damaged: arrays {short} have "
                               f"fewer than n_committed = {self._n} rows")
        longer = [a for a in rows.values() if a.shape[0] > self._n]
        _all(self._pool, lambda a: a.resize((self._n, *a.shape[1:])), longer)
        trim_scalars(self._arrays, self._scalar_counts)
        self._dirty = False

    def _create(self, arrays: dict[str, tuple[ArraySpec, tuple]], n: int) -> None:
        """Create arrays (key -> (spec, row shape)) with `n` rows of fill values."""

        def create(item) -> None:
            key, (spec, row_shape) = item
            name = key.rsplit("/", 1)[-1]
            self._arrays[key] = self._group.create_array(
                key, shape=(n, *row_shape), chunks=(1, *(max(1, d) for d in row_shape)),
                chunk_key_encoding=_CHUNK_KEYS, dtype=spec.dtype, fill_value=_fill(name, spec.dtype),
                dimension_names=spec.dims, compressors="auto" if name in _COMPRESSED else None,
                config={"write_empty_chunks": True})

        _all(self._pool, create, list(arrays.items()))

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

    def set_layer_attrs(self, layer: str, attrs: dict) -> None:
        """Merge JSON `attrs` into the attributes of group `layers/<layer>` (e.g. the
        selectivity rule in force: `{"signed": True}`)."""
        self._check_open()
        if layer not in self._units:
            raise ValueError(f"unknown layer {layer!r}: the run's layers are {list(self._units)}")
        try:
            self._group[f"layers/{layer}"].attrs.update(jsonable(attrs, f"attributes of layer {layer!r}"))
        except (OSError, ValueError) as exc:
            raise StoreWriteError(f"could not write the attributes of layer {layer!r} to the run at "
                                  f"'{self.zarr_location}': {exc}") from exc

    def close(self) -> None:
        """Stop writing; every committed row is already stored. Arrays are cut back to the
        committed rows (best effort: a failure here loses nothing, the next writer trims)."""
        if self._closed:
            return
        self._closed = True
        try:
            if not self._dirty:
                self._recover()
        except Exception:  # noqa: BLE001 - committed rows are safe; reopening trims
            pass
        finally:
            self._pool.shutdown()

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RunWriter('{self.location}', n_committed={self._n}, last_step={self._last_step})"

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
            raise StoreWriteError(f"could not write the probe to the run at '{self.zarr_location}': {exc}") from exc

    # ---------------------------------------------------------------- append

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"the writer of the run at '{self.location}' is closed")

    def _check_step(self, step) -> int:
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
            raise ValueError(f"step must be an int, got {step!r}")
        if self._last_step is not None and step <= self._last_step:
            raise ValueError(f"step {step} must be greater than the last committed step "
                             f"{self._last_step} of the run at '{self.location}'")
        return int(step)

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
        rows = check_layer_rows(layers or {}, self._units, self._arrays, {
            "class": len(self._classes), "concept": self._n_concepts, "rank": self._topk})
        metrics = check_scalars(metrics or {})
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
            for key in (k for k in self._arrays if k.startswith("metrics/")):  # runs from before scalars
                values[key] = np.float64(metrics.get(key[len("metrics/"):], math.nan))
            for key, spec, value in rows:
                values[key] = value
                if key not in self._arrays:
                    new[key] = (spec, value.shape)
            self._create(new, n)
            # Every array gets its row (a chunk each; room for _GROW_ROWS more rows at a time), then
            # the row is committed.
            _all(self._pool, lambda kv: _put_row(self._arrays[kv[0]], n, kv[1]), list(values.items()))
            counts = append_scalars(self._group, self._arrays, self._scalar_counts, step, metrics)
            self._group.update_attributes({"n_committed": n + 1, "scalars": counts})  # commits the row
        except BaseException as exc:  # also KeyboardInterrupt: the next append must trim
            self._dirty = True
            self._forget(list(new))
            if not isinstance(exc, Exception):
                raise
            raise StoreWriteError(f"could not write row {n} (step {step}) to the run store at "
                                  f"'{self.zarr_location}'; the row was not committed: "
                                  f"{type(exc).__name__}: {exc}") from exc
        self._n = n + 1
        self._last_step = step
        self._scalar_counts = counts

    def log_scalars(self, step: int, values: dict[str, float]) -> None:
        """Store each of `values` (name -> number) at `step`, at once, whatever the rows.

        The values are appended to `scalars/<name>/step|value`, then committed by the
        root attribute `scalars` (name -> length). A failed write commits nothing
        (StoreWriteError) and the next write trims what it left.
        """
        self._check_open()
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
            raise ValueError(f"step must be an int, got {step!r}")
        values = check_scalars(values)
        if not values:
            return
        try:
            if self._dirty:
                self._recover()
            counts = append_scalars(self._group, self._arrays, self._scalar_counts, int(step), values)
            self._group.update_attributes({"scalars": counts})
        except BaseException as exc:
            self._dirty = True
            if not isinstance(exc, Exception):
                raise
            raise StoreWriteError(f"could not store metrics {sorted(values)} at step {step} in the run store at "
                                  f"'{self.zarr_location}'; they were not committed: "
                                  f"{type(exc).__name__}: {exc}") from exc
        self._scalar_counts = counts
