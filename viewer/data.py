"""The runs a viewer serves: discovery, opaque run ids, cached runs and payloads.

    registry = Registry("runs")              # or Registry("s3://bucket/sweep")
    registry.entries()                       # [RunEntry(id="sweep/base", ...), ...]
    run = registry.run("sweep/base")         # UnknownRunError for any id it did not discover
    registry.poll("sweep/base")              # n_committed, re-read at most every POLL_S
    registry.payload("sweep/base", "conv4", "true", "si")   # cached per committed row count

The root is a local folder or a URL (`s3://`, `memory://`, any fsspec URL the run
store opens). Runs are found by `RunStore.find(root)` and opened by
`RunStore.open(location)`. A run is chosen only by an id from the registry: ids are
dictionary keys (the run's location relative to the root, '/'-separated), never
joined to a path, so nothing a browser sends reaches storage. Local folders holding
a `record.zarr` that cannot be read are listed too, with the reason, so the page can
say why they are not shown.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from recorder.store import RECORD, Run, RunStore

from viewer import readout
from viewer.readout import ViewError

__all__ = ["Registry", "RunEntry", "UnknownRunError", "ViewError", "is_url"]

log = logging.getLogger(__name__)
POLL_S = 0.5  # a run's n_committed is re-read at most this often
RESCAN_S = 5.0  # the root is searched for new runs at most this often
CACHE_SIZE = 24  # payloads kept (each is one layer of one run under one grouping and metric)
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")


def is_url(root: str | os.PathLike) -> bool:
    """Whether `root` is a URL ('s3://...', 'memory://...'); a path or a 'file://' URL is local."""
    match = _SCHEME.match(os.fspath(root)) if isinstance(root, (str, os.PathLike)) else None
    return match is not None and match.group(1).lower() != "file"


class UnknownRunError(ViewError):
    """A run id that the registry did not discover."""


@dataclass(frozen=True)
class RunEntry:
    id: str  # the run's location relative to the root, '/'-separated ("." for the root itself)
    location: str  # its folder or URL, as RunStore.find gave it
    error: str | None = None  # why the run cannot be read, if it cannot

    @property
    def label(self) -> str:
        return self.id if self.error is None else f"{self.id} (unreadable)"


def _describe(exc: BaseException, root: str) -> str:
    text = str(exc).replace(root, "<root>") or type(exc).__name__
    return text if len(text) < 300 else text[:297] + "..."


class Registry:
    """Runs found below `root` (a folder or a URL) by `RunStore.find`, opened lazily and cached."""

    def __init__(self, root: str | os.PathLike, poll_s: float = POLL_S, rescan_s: float = RESCAN_S,
                 storage_options: dict | None = None):
        if not isinstance(root, (str, os.PathLike)):
            raise TypeError(f"the root must be a folder or a URL string, got {root!r}")
        text = os.fspath(root)
        self.is_url = is_url(text)
        if self.is_url:
            self.root = text.rstrip("/") if "://" in text.rstrip("/") else text  # 'memory://' stays whole
            self._prefix = self.root if self.root.endswith("/") else self.root + "/"
        else:
            if storage_options:
                raise ValueError(f"storage_options={storage_options!r} were given for the local folder "
                                 f"'{text}': they apply to URLs only")
            self.root = str(Path(text[len("file://"):] if _SCHEME.match(text) else text).resolve())
            self._prefix = None
        self.storage_options = storage_options
        self._options = {} if storage_options is None else {"storage_options": storage_options}
        self.poll_s = poll_s
        self.rescan_s = rescan_s
        self.problem: str | None = None  # why the root could not be searched at the last scan
        self._lock = threading.RLock()
        self._entries: dict[str, RunEntry] = {}
        self._runs: dict[str, Run] = {}
        self._polled: dict[str, float] = {}
        self._scanned = -float("inf")
        self._payloads: OrderedDict[tuple, object] = OrderedDict()

    # ------------------------------------------------------------ discovery

    def _id(self, location: str | os.PathLike) -> str | None:
        """The id of a run location below the root (None for one that is not below it)."""
        text = os.fspath(location)
        if self.is_url:
            if text.rstrip("/") == self.root.rstrip("/"):
                return "."
            if not text.startswith(self._prefix):
                return None
            return text[len(self._prefix):].strip("/") or None
        try:
            return Path(text).relative_to(self.root).as_posix()
        except ValueError:
            return None

    def _find(self) -> dict[str, RunEntry]:
        """Runs by `RunStore.find`; below a local root only those reached without following a
        symbolic link, and folders whose record.zarr cannot be read (with the reason)."""
        good = {}
        for location in RunStore.find(self.root, **self._options):
            run_id = self._id(location)
            if run_id is None:
                log.warning("ignoring run %r: not below the root %r", os.fspath(location), self.root)
            else:
                good[run_id] = RunEntry(run_id, os.fspath(location))
        if self.is_url:
            return good
        found = {}
        for folder, dirs, _ in os.walk(self.root):  # does not follow links out of the served folder
            if RECORD in dirs:
                run_id = self._id(folder)
                found[run_id] = good.get(run_id) or RunEntry(run_id, folder, self._why(folder))
                dirs.clear()
            else:
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        return found

    def scan(self, force: bool = False) -> bool:
        """Search the root for runs (at most every `rescan_s` unless forced); True if the list changed.

        A root that cannot be searched (a storage error) keeps the runs found before, and
        `problem` says why."""
        with self._lock:
            now = time.monotonic()
            wait = self.rescan_s if self._entries else min(1.0, self.rescan_s)  # an empty root: look often
            if not force and now - self._scanned < wait:
                return False
            self._scanned = now
            try:
                found = self._find()
            except Exception as exc:  # noqa: BLE001 - e.g. an unreachable or forbidden bucket: say so
                log.warning("searching %r for runs failed", self.root, exc_info=True)
                self.problem = _describe(exc, self.root)
                return False
            self.problem = None
            changed = set(found) != set(self._entries) or any(
                found[k].error != self._entries[k].error for k in found)
            self._entries = dict(sorted(found.items()))
            for run_id in [k for k in self._runs if k not in found or found[k].error]:
                self._runs.pop(run_id)
            return changed

    def _why(self, folder: str) -> str:
        try:
            RunStore.open(folder)
        except Exception as exc:  # noqa: BLE001 - any failure is reported on the page
            return _describe(exc, self.root)
        return "the run could not be read"

    def entries(self, rescan: bool = True) -> list[RunEntry]:
        if rescan:
            self.scan()
        with self._lock:
            return list(self._entries.values())

    def entry(self, run_id) -> RunEntry:
        """The entry of a discovered run; UnknownRunError for anything else."""
        if not isinstance(run_id, str) or run_id not in self._entries:
            self.scan()
        with self._lock:
            if isinstance(run_id, str) and run_id in self._entries:
                return self._entries[run_id]
        shown = run_id if isinstance(run_id, str) and len(run_id) < 80 else "(invalid)"
        raise UnknownRunError(f"unknown run {shown!r}: choose one of the runs found in the served folder")

    # ------------------------------------------------------------------ runs

    def run(self, run_id) -> Run:
        """The opened run; UnknownRunError, or ViewError saying why it cannot be read."""
        entry = self.entry(run_id)
        if entry.error:
            raise ViewError(f"run {entry.id!r} cannot be read: {entry.error}")
        with self._lock:
            run = self._runs.get(entry.id)
            if run is None:
                try:
                    run = RunStore.open(entry.location, **self._options)
                except Exception as exc:  # noqa: BLE001
                    raise ViewError(f"run {entry.id!r} cannot be read: {_describe(exc, self.root)}") from exc
                self._runs[entry.id] = run
                self._polled[entry.id] = time.monotonic()
            return run

    def poll(self, run_id) -> int:
        """The run's committed row count, re-read from disk at most every `poll_s`."""
        run = self.run(run_id)
        with self._lock:
            now = time.monotonic()
            if now - self._polled.get(run_id, -float("inf")) >= self.poll_s:
                self._polled[run_id] = now
                try:
                    run.refresh()
                except Exception as exc:  # noqa: BLE001
                    raise ViewError(f"run {run_id!r} cannot be read: {_describe(exc, self.root)}") from exc
            return run.n_committed

    # --------------------------------------------------------------- caching

    def _cached(self, key: tuple, compute):
        bad = [v for v in key if not isinstance(v, (str, int))]
        if bad:
            raise ViewError(f"{str(bad[0])[:60]!r} is not a layer, grouping or metric name")
        with self._lock:
            if key in self._payloads:
                self._payloads.move_to_end(key)
                return self._payloads[key]
        try:
            value = compute()
        except ViewError:
            raise
        except Exception as exc:  # noqa: BLE001 - a damaged run: say so on the page
            log.warning("reading %r failed", key, exc_info=True)
            raise ViewError(f"run {key[1]!r} cannot be read: {_describe(exc, self.root)}") from exc
        with self._lock:
            self._payloads[key] = value
            while len(self._payloads) > CACHE_SIZE:
                self._payloads.popitem(last=False)
        return value

    def concepts(self, run_id, layer) -> dict | None:
        """`readout.concept_state` (best concept of each unit per checkpoint), cached."""
        run = self.run(run_id)
        if not isinstance(layer, str) or layer not in run.layers:
            raise ViewError(f"run {run_id!r} has no layer {str(layer)[:60]!r}")
        return self._cached(("concepts", run_id, run.n_committed, layer), lambda: readout.concept_state(run, layer))

    def payload(self, run_id, layer, by: str = "true", metric: str = "si") -> dict:
        """`readout.layer_payload` of the run's committed rows, cached."""
        run = self.run(run_id)
        key = ("payload", run_id, run.n_committed, layer, by, metric)
        return self._cached(key, lambda: readout.layer_payload(run, run_id, layer, by, metric))

    def hover(self, run_id, layer) -> dict:
        """`readout.hover_payload` (best concept and IoU of every tile), cached."""
        run = self.run(run_id)
        key = ("hover", run_id, run.n_committed, layer)
        return self._cached(key, lambda: readout.hover_payload(run, run_id, layer,
                                                               concepts=self.concepts(run_id, layer)))

    def series(self, run_id, by: str = "true", metric: str = "si") -> dict:
        """`readout.run_series`, cached until rows are committed or a metric value is logged."""
        run = self.run(run_id)
        return self._cached(("series", run_id, run.n_committed, readout.scalar_version(run), by, metric),
                            lambda: readout.run_series(run, by, metric))

    def detectors(self, run_id, layer) -> dict | None:
        run = self.run(run_id)
        return self._cached(("detectors", run_id, run.n_committed, layer),
                            lambda: readout.detector_series(run, layer, concepts=self.concepts(run_id, layer)))

    def class_counts(self, run_id, layer, by: str = "true", metric: str = "si"):
        run = self.run(run_id)

        def compute():
            state = readout.layer_state(run, layer, by, metric)
            return readout.class_counts(state["dominant"], state["dead"], len(run.classes))

        return self._cached(("counts", run_id, run.n_committed, layer, by, metric), compute)

    def unit(self, run_id, layer, unit, by: str = "true", t: int = -1) -> dict:
        run = self.run(run_id)
        try:
            return readout.unit_detail(run, layer, unit, by, t)
        except ViewError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise ViewError(f"run {run_id!r} cannot be read: {_describe(exc, self.root)}") from exc
