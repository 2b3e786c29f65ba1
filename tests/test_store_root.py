"""recorder.store.root: finding a run's record.zarr and checking its root attributes."""

from __future__ import annotations

import json

import pytest

from recorder.store.location import Location
from recorder.store.root import NotARunError, damaged, read_root_attrs, resolve_zarr_location
from test_store import make_run


def test_a_run_folder_and_its_record_zarr_resolve_to_the_group(tmp_path):
    make_run(tmp_path / "run", n_rows=1)
    for where in (tmp_path / "run", tmp_path / "run" / "record.zarr", str(tmp_path / "run")):
        assert resolve_zarr_location(where).url.endswith("run/record.zarr")
    assert read_root_attrs(resolve_zarr_location(tmp_path / "run"))["n_committed"] == 1


def test_missing_paths_and_folders_without_a_run_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no run at '.*nowhere': the path does not exist"):
        resolve_zarr_location(tmp_path / "nowhere")
    (tmp_path / "plain").mkdir()
    with pytest.raises(NotARunError, match="plain' is not a tuneline run: it has no record.zarr"):
        resolve_zarr_location(tmp_path / "plain")


def test_root_attributes_must_be_a_tuneline_run(tmp_path):
    make_run(tmp_path / "run", n_rows=1)
    zarr_loc = resolve_zarr_location(tmp_path / "run")
    meta_path = tmp_path / "run" / "record.zarr" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["attributes"]["schema"] = "other/1"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(NotARunError, match="schema is 'other/1', expected"):
        read_root_attrs(zarr_loc)
    meta_path.write_text("{not json")
    with pytest.raises(NotARunError, match="cannot read zarr.json"):
        read_root_attrs(zarr_loc)
    error = damaged(zarr_loc, "the layer arrays", OSError("boom"))
    assert "is damaged: cannot parse zarr.json" in str(error)
    assert isinstance(error, NotARunError)


def test_damaged_names_the_cause_when_every_metadata_file_parses(tmp_path):
    make_run(tmp_path / "run", n_rows=1)
    zarr_loc = Location.parse(tmp_path / "run" / "record.zarr")
    message = str(damaged(zarr_loc, "the steps", OSError("disk gone")))
    assert message.endswith("cannot read the steps: OSError: disk gone")
