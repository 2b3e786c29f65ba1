"""Export a run store to one HDF5 file (numpy, zarr and h5py; no torch).

    python -m recorder export runs/demo/baseline baseline.h5
    export_hdf5("runs/demo/baseline", "baseline.h5")   # same, from Python

The file mirrors the zarr group: root datasets `step`, `epoch`, `wall_time`,
`metrics/<name>`, `layers/<layer>/<array>` and `probe/{thumbs,labels}`, each with
its dimension names in the attribute `dims`; root attributes are JSON strings.
Only committed rows are exported, as of the moment the run was opened.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np

from recorder.schema import LAYER_ARRAYS, METRIC_SPEC, PROBE_ARRAYS, ROOT_ARRAYS
from recorder.store.reader import Run

__all__ = ["export_hdf5"]


def _dataset(f: h5py.File, key: str, data: np.ndarray, dims: tuple[str, ...]) -> None:
    compress = {"compression": "gzip", "compression_opts": 1, "shuffle": True} if data.size else {}
    ds = f.create_dataset(key, data=data, **compress)
    ds.attrs["dims"] = list(dims)


def export_hdf5(run: Run | str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write every committed array of `run` (a Run, or a run folder or URL) to HDF5 file `out`.

    The file is written under a temporary name and renamed, so `out` is either the
    old file or the complete new one. Returns the path of `out`.
    """
    run = run if isinstance(run, Run) else Run.open(run)
    out = Path(out)
    tmp = out.with_name(out.name + ".partial")
    try:
        with h5py.File(tmp, "w") as f:
            for key, value in run.attrs.items():
                f.attrs[key] = json.dumps(value)
            _dataset(f, "step", run.steps, ROOT_ARRAYS["step"].dims)
            _dataset(f, "epoch", run.epochs, ROOT_ARRAYS["epoch"].dims)
            _dataset(f, "wall_time", run.wall_times, ROOT_ARRAYS["wall_time"].dims)
            for name, values in run.metrics.items():
                _dataset(f, f"metrics/{name}", values, METRIC_SPEC.dims)
            for layer_name in run.layers:
                layer = run.layer(layer_name)
                f.require_group(f"layers/{layer_name}")
                for name in layer.arrays:
                    _dataset(f, f"layers/{layer_name}/{name}", layer.array(name), LAYER_ARRAYS[name].dims)
            if run.thumbs is not None:
                _dataset(f, "probe/thumbs", run.thumbs, PROBE_ARRAYS["thumbs"].dims)
                _dataset(f, "probe/labels", run.probe_labels, PROBE_ARRAYS["labels"].dims)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out
