"""The same run store protocol on every backend: a local folder and S3 (moto's server),
and memory:// for reading back what was written in the same process.

Append and read back, resume and trim a torn row, refusals (a prefix that holds no
run, a mismatched resume), an interrupted creation, `RunStore.find` below a prefix.
The files are inspected with fsspec (`conftest.StoredFiles`), apart from the store's code.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import numpy as np
import pytest
import zarr
from conftest import StoredFiles, join
from test_store import CLASSES, LAYERS, make_run, open_writer, row_layers

from recorder.store import NotARunError, RunMismatchError, RunStore


def rows_in_store(run_root) -> dict[str, int]:
    """shape[0] of every array of a run, from its zarr.json files."""
    files = StoredFiles(join(run_root, "record.zarr"))
    out = {}
    for key in files.keys():
        if key.endswith("/zarr.json"):
            meta = json.loads(files.read(key))
            if meta["node_type"] == "array" and not key.startswith("probe/"):
                out[key[: -len("/zarr.json")]] = meta["shape"][0]
    return out


def digests(root) -> dict[str, str]:
    files = StoredFiles(root)
    return {key: hashlib.sha256(files.read(key)).hexdigest() for key in files.keys()}


def check_round_trip(path, written: list[dict]) -> None:
    run = RunStore.open(path)
    assert run.n_committed == len(written) and run.layers == list(LAYERS) and run.classes == CLASSES
    np.testing.assert_array_equal(run.steps, [row["step"] for row in written])
    np.testing.assert_array_equal(run.metric("loss"), [row["metrics"]["loss"] for row in written])
    for t, row in enumerate(written):
        for layer, arrays in row["layers"].items():
            for name, value in arrays.items():
                np.testing.assert_array_equal(run.layer(layer).array(name)[t], value, err_msg=f"{layer}/{name}")
    np.testing.assert_array_equal(run.thumbs, np.arange(6 * 4 * 4 * 3, dtype=np.uint8).reshape(6, 4, 4, 3))


def test_append_and_read_back(store_root):
    path = join(store_root, "sweep", "run")
    written = make_run(path, n_rows=3, dissection=True)
    check_round_trip(path, written)
    run = RunStore.open(path)
    assert run.location == str(path) and run.name == "demo"
    assert run.path == (path if isinstance(path, Path) else None)
    assert set(rows_in_store(path).values()) == {3}


def test_memory_store_append_and_read_back():
    path = f"memory://tuneline-{uuid.uuid4().hex[:8]}/run"
    written = make_run(path, n_rows=2)
    check_round_trip(path, written)
    assert RunStore.find(path.rsplit("/", 1)[0]) == [path]
    with pytest.raises(NotARunError, match="not empty and has no record.zarr"):
        open_writer(path.rsplit("/", 1)[0])


def test_resume_trims_a_torn_row(store_root):
    """Arrays left one row longer than n_committed (a writer killed mid-row) read as
    n_committed rows, and the next writer trims them before appending."""
    path = join(store_root, "run")
    written = make_run(path, n_rows=2)
    group = zarr.open_group(str(join(path, "record.zarr")), mode="r+", zarr_format=3)
    torn = group["layers/fc/sum_true"]
    torn.resize((3, *torn.shape[1:]))
    torn[2] = -7.0  # a row no reader may see
    assert rows_in_store(path)["layers/fc/sum_true"] == 3

    run = RunStore.open(path)
    assert run.n_committed == 2 and run.layer("fc").sum_true.shape == (2, len(CLASSES), LAYERS["fc"])
    with open_writer(path) as w:
        assert w.n_committed == 2 and w.last_step == 10
        assert set(rows_in_store(path).values()) == {2}  # trimmed on opening
        assert "layers/fc/sum_true/c.2.0.0" not in StoredFiles(join(path, "record.zarr")).keys()
        new_row = row_layers(5)
        w.append(20, metrics={"loss": 0.25}, layers=new_row)
    written.append({"step": 20, "metrics": {"loss": 0.25}, "layers": new_row})
    check_round_trip(path, written)


def test_mismatched_resume_is_refused_and_changes_nothing(store_root):
    path = join(store_root, "run")
    make_run(path, n_rows=2)
    before = digests(path)
    with pytest.raises(RunMismatchError, match=r"cannot resume run at '.*run': classes differ"):
        open_writer(path, classes=["a", "b", "c"])
    with pytest.raises(RunMismatchError, match="units differ: layer 'fc' stored 5, given 6"):
        open_writer(path, layers={"conv": 4, "fc": 6})
    assert digests(path) == before


def test_a_prefix_without_a_run_is_refused(store_root):
    path = join(store_root, "notes")
    StoredFiles(path).write("notes.txt", b"hello")
    with pytest.raises(NotARunError, match=r"notes'? is not a tuneline run: it is not empty and has no record.zarr"):
        open_writer(path)
    with pytest.raises(NotARunError, match="notes'? is not a tuneline run: it has no record.zarr"):
        RunStore.open(path)
    assert not RunStore.is_run(path)
    assert StoredFiles(path).keys() == ["notes.txt"]
    with pytest.raises(FileNotFoundError, match="no run at '.*missing'"):
        RunStore.open(join(store_root, "missing"))


def test_interrupted_creation_is_started_again(store_root):
    """Only temporary files below record.zarr: the run is created afresh."""
    path = join(store_root, "run")
    StoredFiles(path).write("record.zarr/zarr.json.0123abcd.partial", b'{"zarr_for')
    with open_writer(path) as w:
        w.append(0, layers={})
    assert RunStore.open(path).steps.tolist() == [0]


def test_record_zarr_with_data_but_no_root_metadata_is_kept(store_root):
    path = join(store_root, "run")
    StoredFiles(path).write("record.zarr/step/zarr.json", b"{}")
    with pytest.raises(NotARunError, match="record.zarr' is not a tuneline run: it has no zarr.json"):
        open_writer(path)
    assert StoredFiles(path).read("record.zarr/step/zarr.json") == b"{}"


def test_find_below_a_root(store_root):
    make_run(join(store_root, "sweep", "b"), n_rows=1)
    make_run(join(store_root, "sweep", "a"), n_rows=1)
    make_run(join(store_root, "c"), n_rows=1)
    StoredFiles(join(store_root, "other")).write("x.txt", b"x")
    found = RunStore.find(store_root)
    assert found == [join(store_root, "c"), join(store_root, "sweep", "a"), join(store_root, "sweep", "b")]
    assert all(isinstance(f, Path if isinstance(store_root, Path) else str) for f in found)
    assert RunStore.find(join(store_root, "sweep", "a")) == [join(store_root, "sweep", "a")]
    assert RunStore.find(join(store_root, "nothing")) == []
