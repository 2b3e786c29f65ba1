"""The run store: one zarr v3 group per run, one row per checkpoint (numpy and zarr only).

    from recorder.store import RunStore
    run = RunStore.open("runs/demo/baseline")          # read (also while a run is live)
    w = RunStore.writer("runs/demo/new", classes=[...], concepts=[...],
                        layers={"fc": 16}, probe={...})  # create or resume, then append

Layout and contract: DESIGN.md, "Run store". Reading lives in `reader`
(`Run`, `LayerRecord`), writing in `writer` (`RunWriter`); this module is the
public entry point and must not import torch.
"""

from __future__ import annotations

import os
from pathlib import Path

from recorder.store.reader import RECORD, LayerRecord, NotARunError, Run, read_root_attrs, resolve_zarr_path
from recorder.store.writer import RunMismatchError, RunWriter, StoreWriteError

__all__ = ["LayerRecord", "NotARunError", "Run", "RunMismatchError", "RunStore", "RunWriter", "StoreWriteError"]


class RunStore:
    """Open runs for reading (`RunStore.open`) or writing (`RunStore.writer`).

        run = RunStore.open("runs/demo/baseline")   # run folder or its record.zarr
        run.steps, run.layer("fc").selectivity("si")
        for folder in RunStore.find("runs"): ...    # every run folder below "runs"

    Reading: FileNotFoundError for a missing path, NotARunError for a folder that
    holds no run. Writing: see `RunWriter.open`.
    """

    @staticmethod
    def open(path: str | os.PathLike) -> Run:
        """The run in folder `path` (or `path` = its record.zarr), read-only."""
        return Run.open(path)

    @staticmethod
    def writer(path: str | os.PathLike, **kwargs) -> RunWriter:
        """`RunWriter.open(path, classes=..., concepts=..., layers=..., probe=..., run=None, topk=8)`."""
        return RunWriter.open(path, **kwargs)

    @staticmethod
    def is_run(path: str | os.PathLike) -> bool:
        """Whether `path` is a run folder (or a run's record.zarr)."""
        try:
            read_root_attrs(resolve_zarr_path(path))
        except (OSError, ValueError):
            return False
        return True

    @staticmethod
    def find(root: str | os.PathLike) -> list[Path]:
        """Run folders at or below `root`, sorted; does not descend into runs."""
        root = Path(root)
        found = []
        for folder, dirs, _ in os.walk(root):
            if RECORD in dirs:
                if RunStore.is_run(folder):
                    found.append(Path(folder))
                dirs.clear()
            else:
                dirs.sort()
        return sorted(found)
