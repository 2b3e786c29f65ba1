"""Location: paths and URLs, clear errors for bad schemes and missing backends, and the
atomic local store."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from conftest import BUCKET, StoredFiles
from test_store import make_run, open_writer

from recorder.store import RunStore, RunWriter
from recorder.store.location import AtomicLocalStore, Location


@pytest.mark.parametrize("given, url, local", [
    ("runs/a", "runs/a", True),
    (Path("/tmp/runs/a"), "/tmp/runs/a", True),
    ("file:///tmp/runs/a", "/tmp/runs/a", True),
    ("s3://bucket/runs/a/", "s3://bucket/runs/a", False),
    ("memory://x/runs", "memory://x/runs", False),
])
def test_parse(given, url, local):
    loc = Location.parse(given)
    assert loc.url == url and loc.is_local == local
    assert (loc.path == Path(url)) if local else loc.path is None


def test_join_parent_name():
    loc = Location.parse("s3://bucket/runs")
    assert loc.join("a", "record.zarr").url == "s3://bucket/runs/a/record.zarr"
    assert loc.join("a").parent == loc and loc.join("a").name == "a"
    assert Location.parse("runs").join("a").path == Path("runs", "a")


def test_unknown_scheme_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"cannot open 'nosuch://b/run': unknown URL scheme 'nosuch://'"):
        open_writer("nosuch://b/run")
    with pytest.raises(ValueError, match="unknown URL scheme 'nosuch://'"):
        RunStore.open("nosuch://b/run")
    assert os.listdir(tmp_path) == []  # never a local folder named 'nosuch:'


def test_missing_backend_names_the_package(tmp_path):
    """In a fresh process where s3fs cannot be imported (as if it were not installed)."""
    code = ("import sys; sys.modules['s3fs'] = None\n"
            "from recorder.store import RunStore, RunWriter\n"
            "for call in (lambda: RunStore.open('s3://bucket/run'), lambda: RunStore.find('s3://bucket'),\n"
            "             lambda: RunWriter.open('s3://bucket/run', classes=[], concepts=[], layers={'fc': 1},\n"
            "                                    probe={})):\n"
            "    try:\n"
            "        call()\n"
            "    except ImportError as exc:\n"
            "        print(exc)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3 and all("the s3:// scheme needs the package s3fs (pip install s3fs)" in line
                                   for line in lines), result.stdout
    assert os.listdir(tmp_path) == []  # never a local folder named 's3:'


@pytest.mark.parametrize("scheme, package", [("gs", "gcsfs"), ("az", "adlfs")])
def test_backends_not_installed_name_their_package(scheme, package):
    if importlib.util.find_spec(package) is not None:
        pytest.skip(f"{package} is installed")
    with pytest.raises(ImportError, match=rf"the {scheme}:// scheme needs the package {package}"):
        RunStore.open(f"{scheme}://bucket/run")


def test_storage_options_for_a_local_path_are_refused(tmp_path):
    with pytest.raises(ValueError, match="storage_options=.* for the local path .*: they apply to URLs only"):
        RunStore.open(tmp_path, storage_options={"anon": True})


def test_storage_options_reach_the_backend(s3_server, monkeypatch):
    """Endpoint and credentials given as storage_options, none in the environment."""
    for key in s3_server.env:
        monkeypatch.delenv(key)
    options = {"endpoint_url": s3_server.endpoint, "key": "testing", "secret": "testing"}
    url = f"s3://{BUCKET}/options/run"
    with RunWriter.open(url, classes=["a"], concepts=[], layers={"fc": 2},
                        probe={"source": "s", "n_images": 1, "fingerprint": "f"},
                        storage_options=options) as w:
        w.append(3, layers={"fc": {"count_true": np.array([1])}})
    assert RunStore.open(url, storage_options=options).steps.tolist() == [3]
    assert RunStore.is_run(url, storage_options=options)
    assert RunStore.find(f"s3://{BUCKET}/options", storage_options=options) == [url]
    assert RunStore.writer(url, storage_options=options, classes=["a"], concepts=[], layers={"fc": 2},
                           probe={"source": "s", "n_images": 1, "fingerprint": "f"}).last_step == 3


def test_local_store_writes_whole_files_only(tmp_path):
    """Every file goes to a temporary name first: none is left, and none is written in place."""
    store = AtomicLocalStore(zarr.storage.LocalStore(tmp_path / "z"))
    arr = zarr.create_array(store, shape=(4,), chunks=(2,), dtype="int32", fill_value=0)
    chunk = tmp_path / "z" / "c" / "0"
    arr[:2] = [1, 2]
    inode = chunk.stat().st_ino
    arr[:2] = [3, 4]  # a new file renamed over the old: a reader holding the old one keeps it whole
    assert chunk.stat().st_ino != inode
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "z"), mode="r")[:], [3, 4, 0, 0])
    assert not list((tmp_path / "z").rglob("*.partial"))
    read_only = AtomicLocalStore(zarr.storage.LocalStore(tmp_path / "z", read_only=True))
    with pytest.raises(ValueError, match="read-only"):
        zarr.open_array(read_only, mode="r")[:2] = [5, 6]


def test_is_run_and_find_on_local_paths_keep_paths(tmp_path):
    make_run(tmp_path / "a" / "run", n_rows=1)
    assert RunStore.find(tmp_path) == [tmp_path / "a" / "run"]
    assert RunStore.is_run(tmp_path / "a" / "run") and not RunStore.is_run(tmp_path / "a")
    assert StoredFiles(tmp_path / "a").exists("run/record.zarr/zarr.json")


def test_a_resumed_writer_removes_what_a_killed_writer_left_half_written(tmp_path):
    import uuid
    import warnings

    from recorder.store.location import remove_partial_files

    make_run(tmp_path / "run", n_rows=2)
    record = tmp_path / "run" / "record.zarr"
    left = [record / f"zarr.json.{uuid.uuid4().hex}.partial",  # as _put_atomic names its temporary files
            record / "layers" / "fc" / "sum_true" / f"c.1.0.0.{uuid.uuid4().hex}.partial",
            record / "layers" / "fc" / "new_array" / f"zarr.json.{uuid.uuid4().hex}.partial"]  # never created
    left[2].parent.mkdir()
    for path in left:
        path.write_bytes(b"{half")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # zarr warns about every object it does not recognize
        with open_writer(tmp_path / "run") as writer:
            assert writer.n_committed == 2
    assert not any(path.exists() for path in left) and not left[2].parent.exists()  # nor its empty folder
    assert RunStore.open(tmp_path / "run").n_committed == 2
    kept = tmp_path / "notes.partial"  # not a temporary name of ours: left alone
    kept.write_bytes(b"")
    left[0].write_bytes(b"{half")
    assert remove_partial_files(tmp_path) == 1 and kept.exists() and not left[0].exists()
