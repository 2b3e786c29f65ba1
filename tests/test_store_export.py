"""export_hdf5: every committed array, mirrored group layout, dims and JSON attributes."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from recorder.store.export import export_hdf5
from recorder.schema import LAYER_ARRAYS
from recorder.store import NotARunError, RunStore
from test_store import LAYERS, make_run, open_writer
from test_store_writer import grow_uncommitted_row


def assert_h5_equals_run(h5_path, run) -> None:
    """The HDF5 file holds exactly the run's committed arrays, attributes and dims."""
    with h5py.File(h5_path, "r") as f:
        assert {k: json.loads(v) for k, v in f.attrs.items()} == run.attrs
        expected = {"step": run.steps, "epoch": run.epochs, "wall_time": run.wall_times}
        expected.update({f"metrics/{k}": v for k, v in run.metrics.items()})
        for name in run.layers:
            layer = run.layer(name)
            expected.update({f"layers/{name}/{a}": layer.array(a) for a in layer.arrays})
        if run.thumbs is not None:
            expected.update({"probe/thumbs": run.thumbs, "probe/labels": run.probe_labels})
        found = []
        f.visititems(lambda key, obj: found.append(key) if isinstance(obj, h5py.Dataset) else None)
        assert sorted(found) == sorted(expected)
        for key, value in expected.items():
            ds = f[key]
            assert ds.dtype == value.dtype, key
            np.testing.assert_array_equal(ds[()], value, err_msg=key)
            dims = [d.decode() if isinstance(d, bytes) else d for d in ds.attrs["dims"]]
            assert len(dims) == value.ndim, key
        assert list(f["layers/fc/sum_true"].attrs["dims"]) == ["step", "class", "unit"]
        assert list(f["probe/thumbs"].attrs["dims"]) == ["image", "thumb_y", "thumb_x", "rgb"] \
            if run.thumbs is not None else True


def test_export_equals_the_store(tmp_path):
    make_run(tmp_path / "run", n_rows=3, dissection=True)
    out = export_hdf5(tmp_path / "run", tmp_path / "run.h5")
    assert out == tmp_path / "run.h5" and not (tmp_path / "run.h5.partial").exists()
    run = RunStore.open(tmp_path / "run")
    assert_h5_equals_run(out, run)
    with h5py.File(out, "r") as f:
        assert set(f["layers/conv"]) == set(LAYER_ARRAYS)
        assert json.loads(f.attrs["n_committed"]) == 3


def test_export_only_committed_rows(tmp_path):
    make_run(tmp_path / "run", n_rows=2)
    grow_uncommitted_row(tmp_path / "run" / "record.zarr")
    export_hdf5(RunStore.open(tmp_path / "run"), tmp_path / "run.h5")
    with h5py.File(tmp_path / "run.h5", "r") as f:
        assert f["step"].shape == (2,) and f["layers/fc/sum_true"].shape == (2, 3, 5)
        assert not (f["layers/fc/sum_true"][()] == 99).any()


def test_export_empty_run_without_probe(tmp_path):
    open_writer(tmp_path / "run")
    export_hdf5(tmp_path / "run", tmp_path / "run.h5")
    with h5py.File(tmp_path / "run.h5", "r") as f:
        assert f["step"].shape == (0,) and "probe" not in f and set(f["layers"]) == set(LAYERS)


def test_export_of_a_non_run_writes_nothing(tmp_path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(NotARunError):
        export_hdf5(tmp_path / "plain", tmp_path / "out.h5")
    assert not (tmp_path / "out.h5").exists()
