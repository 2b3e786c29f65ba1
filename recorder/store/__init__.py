"""The run store: one zarr v3 group per run, one row per checkpoint (numpy and zarr only).

    from recorder.store import RunStore
    run = RunStore.open("runs/demo/baseline")          # read (also while a run is live)
    run = RunStore.open("s3://bucket/runs/baseline")   # any fsspec URL, memory:// too
    w = RunStore.writer("runs/demo/new", classes=[...], concepts=[...],
                        layers={"fc": 16}, probe={...})  # create or resume, then append

Layout and contract: DESIGN.md, "Run store". Reading lives in `reader` (`Run`) and
`layer` (`LayerRecord`), writing in `writer` (`RunWriter`, rows checked by `rows`),
finding a run and checking its root attributes in `root`, paths and URLs in
`location`; this module is the public entry point and must not import torch.
"""

from __future__ import annotations

import os
from pathlib import Path

from recorder.store.layer import LayerRecord
from recorder.store.location import Location
from recorder.store.reader import Run
from recorder.store.root import RECORD, NotARunError, read_root_attrs, resolve_zarr_location
from recorder.store.writer import RunMismatchError, RunWriter, StoreWriteError

__all__ = ["RECORD", "LayerRecord", "NotARunError", "Run", "RunMismatchError", "RunStore", "RunWriter",
           "StoreWriteError"]


class RunStore:
    """Open runs for reading (`RunStore.open`) or writing (`RunStore.writer`).

        run = RunStore.open("runs/demo/baseline")   # run folder or its record.zarr, or a URL
        run.steps, run.layer("fc").selectivity("si")
        for folder in RunStore.find("runs"): ...    # every run folder below "runs"

    Reading: FileNotFoundError for a missing path, NotARunError for a folder that
    holds no run. Writing: see `RunWriter.open`. URLs (`s3://`, `gs://`, `memory://`,
    ...) take their endpoint and credentials from the environment or `storage_options`.
    """

    @staticmethod
    def open(path: str | os.PathLike, storage_options: dict | None = None) -> Run:
        """The run in folder or URL `path` (or `path` = its record.zarr), read-only."""
        return Run.open(path, storage_options)

    @staticmethod
    def writer(path: str | os.PathLike, storage_options: dict | None = None, **kwargs) -> RunWriter:
        """`RunWriter.open(path, classes=..., concepts=..., layers=..., probe=..., run=None, topk=8)`."""
        return RunWriter.open(path, storage_options=storage_options, **kwargs)

    @staticmethod
    def is_run(path: str | os.PathLike, storage_options: dict | None = None) -> bool:
        """Whether `path` is a run folder (or a run's record.zarr). A bad URL raises."""
        location = Location.parse(path, storage_options)
        try:
            read_root_attrs(resolve_zarr_location(location))
        except (OSError, ValueError):
            return False
        return True

    @staticmethod
    def find(root: str | os.PathLike, storage_options: dict | None = None) -> list[Path] | list[str]:
        """Run folders at or below `root`, sorted; does not descend into runs.

        A local root gives Paths, a URL root the runs' URLs (str).
        """
        location = Location.parse(root, storage_options)
        found = []
        for folder, subs in location.walk_folders():
            if RECORD in subs:
                if RunStore.is_run(folder):
                    found.append(folder.path if folder.is_local else folder.url)
                subs.clear()
        return sorted(found)
