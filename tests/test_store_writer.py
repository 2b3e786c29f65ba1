"""RunWriter: creating, resuming, validating rows, trimming and failed writes."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import zarr

from recorder.schema import Concept
from recorder.store import NotARunError, RunMismatchError, RunStore, RunWriter, StoreWriteError
from test_store import CLASSES, CONCEPTS, LAYERS, PROBE, TOPK, hash_files, layer_row, make_run, open_writer, row_layers


def array_rows(zarr_path) -> dict[str, int]:
    """Rows (shape[0]) of every array below zarr_path, read from the metadata on disk."""
    out = {}
    for meta_path in zarr_path.rglob("zarr.json"):
        meta = json.loads(meta_path.read_text())
        if meta["node_type"] == "array":
            out[meta_path.parent.relative_to(zarr_path).as_posix()] = meta["shape"][0]
    return out


# ---------------------------------------------------------------- opening


def test_new_run_creates_folder_and_parents(tmp_path):
    w = open_writer(tmp_path / "sweep" / "run")
    assert (tmp_path / "sweep" / "run" / "record.zarr" / "zarr.json").is_file()
    assert w.n_committed == 0 and w.last_step is None
    attrs = json.loads((tmp_path / "sweep" / "run" / "record.zarr" / "zarr.json").read_text())["attributes"]
    assert attrs["n_committed"] == 0 and attrs["layers"] == ["conv", "fc"] and attrs["units"] == LAYERS
    assert attrs["concepts"][1] == {"name": "sky", "category": "scene"}
    assert attrs["run"]["name"] == "demo" and attrs["run"]["created"].endswith("+00:00")


def test_empty_folder_is_accepted(tmp_path):
    (tmp_path / "run").mkdir()
    open_writer(tmp_path / "run").append(0, layers={})
    assert RunStore.open(tmp_path / "run").n_committed == 1


def test_non_empty_folder_without_a_run_is_refused(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("hello")
    with pytest.raises(NotARunError, match=r"run'? is not a tuneline run.*not empty"):
        open_writer(tmp_path / "run")
    assert sorted(os.listdir(tmp_path / "run")) == ["notes.txt"]


@pytest.mark.parametrize("content", ["{not json", json.dumps({"zarr_format": 3, "node_type": "group",
                                                               "attributes": {"schema": "other/1"}})])
def test_record_zarr_that_is_not_a_run_is_refused(tmp_path, content):
    (tmp_path / "run" / "record.zarr").mkdir(parents=True)
    (tmp_path / "run" / "record.zarr" / "zarr.json").write_text(content)
    with pytest.raises(NotARunError, match="record.zarr' is not a tuneline run"):
        open_writer(tmp_path / "run")
    with pytest.raises(NotARunError, match="record.zarr' is not a tuneline run"):
        RunStore.open(tmp_path / "run")


def test_corrupted_root_metadata_is_not_a_run(tmp_path):
    make_run(tmp_path / "run", n_rows=1)
    meta = tmp_path / "run" / "record.zarr" / "zarr.json"
    meta.write_bytes(meta.read_bytes()[:40])
    with pytest.raises(NotARunError, match="cannot read zarr.json"):
        open_writer(tmp_path / "run")


def test_unusable_folder_error_names_the_path(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OSError, match="file/run"):
        open_writer(tmp_path / "file" / "run")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores permissions")
def test_unwritable_folder_error_names_the_path(tmp_path):
    (tmp_path / "ro").mkdir(mode=0o500)
    with pytest.raises(PermissionError, match="ro/run"):
        open_writer(tmp_path / "ro" / "run")


def test_permission_error_names_the_path(tmp_path, monkeypatch):
    def denied(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(type(tmp_path), "mkdir", denied)
    with pytest.raises(PermissionError, match=r"cannot create a run store at '.*/run': Permission denied"):
        open_writer(tmp_path / "run")


@pytest.mark.parametrize("kwargs, match", [
    ({"classes": "abc"}, "classes must be a list of str"),
    ({"layers": {}}, "layers must be a non-empty dict"),
    ({"layers": {"a/b": 3}}, "layer name 'a/b' is not valid"),
    ({"layers": {"fc": 0}}, "layer 'fc' has 0 units"),
    ({"concepts": [("sky",)]}, r"concepts\[0\]"),
    ({"topk": -1}, "topk must be"),
    ({"run": {"config": {"f": object()}}}, r"run\['config'\]\['f'\]"),
])
def test_bad_arguments_are_refused_before_anything_is_written(tmp_path, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        open_writer(tmp_path / "run", **kwargs)
    assert not (tmp_path / "run").exists()


def test_config_with_numpy_values_and_paths_is_stored_as_json(tmp_path):
    open_writer(tmp_path / "run", run={"config": {"lr": np.float32(0.5), "out": tmp_path, "ks": (3, 5)}})
    run = RunStore.open(tmp_path / "run")
    assert run.config == {"lr": 0.5, "out": str(tmp_path), "ks": [3, 5]} and run.name == "run"


# ---------------------------------------------------------------- resuming


def test_resume_appends_and_keeps_earlier_rows(tmp_path):
    rows = make_run(tmp_path / "run", n_rows=2)
    w = open_writer(tmp_path / "run")
    assert w.n_committed == 2 and w.last_step == 10
    w.append(15, layers=row_layers(5))
    run = RunStore.open(tmp_path / "run")
    np.testing.assert_array_equal(run.steps, [0, 10, 15])
    np.testing.assert_array_equal(run.layer("fc").sum_true[:2], [r["layers"]["fc"]["sum_true"] for r in rows])
    np.testing.assert_array_equal(run.layer("fc").sum_true[2], row_layers(5)["fc"]["sum_true"])
    np.testing.assert_array_equal(run.metric("loss"), [1.0, 0.5, math.nan])


@pytest.mark.parametrize("overrides, match", [
    ({"classes": ["circle", "square", "wave"]},
     r"classes differ: stored \['circle', 'square', 'stripe'\], given \['circle', 'square', 'wave'\]"),
    ({"layers": {"conv": 4, "head": 5}}, "layers differ: stored"),
    ({"layers": {"fc": 5, "conv": 4}}, r"layers differ: stored \['conv', 'fc'\], given \['fc', 'conv'\]"),
    ({"layers": {"conv": 4, "fc": 6}}, "units differ: layer 'fc' stored 5, given 6"),
    ({"concepts": CONCEPTS[:2]}, "concepts differ"),
    ({"concepts": [Concept("red", "colour"), *CONCEPTS[1:]]}, "concepts differ"),
    ({"probe": {**PROBE, "fingerprint": "ffff"}}, "probe fingerprint differs: stored '0123abcd', given 'ffff'"),
    ({"probe": {**PROBE, "n_images": 7}}, "probe n_images differs: stored 6, given 7"),
    ({"topk": 3}, "topk differs: stored 2, given 3"),
])
def test_resume_with_a_different_setup_is_refused_and_writes_nothing(tmp_path, overrides, match):
    make_run(tmp_path / "run", n_rows=2)
    before = hash_files(tmp_path / "run")
    with pytest.raises(RunMismatchError, match=r"cannot resume run at '.*run': " + match):
        open_writer(tmp_path / "run", **overrides)
    assert hash_files(tmp_path / "run") == before


def test_resume_names_every_difference(tmp_path):
    make_run(tmp_path / "run", n_rows=1)
    with pytest.raises(RunMismatchError, match="classes differ.*; probe fingerprint differs"):
        open_writer(tmp_path / "run", classes=["a"], probe={**PROBE, "fingerprint": "x"})


def grow_uncommitted_row(zarr_path, value=99) -> None:
    """Simulate a crash mid-row: every array gets one more row, n_committed is not advanced."""
    for key in array_rows(zarr_path):
        if key.startswith("probe/"):
            continue
        arr = zarr.open_array(zarr_path, path=key, mode="r+", zarr_format=3)
        arr.resize((arr.shape[0] + 1, *arr.shape[1:]))
        arr[-1] = value


def test_reopen_trims_a_row_in_flight(tmp_path):
    make_run(tmp_path / "run", n_rows=2)
    zarr_path = tmp_path / "run" / "record.zarr"
    grow_uncommitted_row(zarr_path)
    assert set(array_rows(zarr_path).values()) == {3, 6}  # 6 = probe images
    assert RunStore.open(tmp_path / "run").layer("fc").sum_true.shape[0] == 2  # readers ignore it
    w = open_writer(tmp_path / "run")
    assert {k: n for k, n in array_rows(zarr_path).items() if not k.startswith("probe/")} == \
        dict.fromkeys([k for k in array_rows(zarr_path) if not k.startswith("probe/")], 2)
    assert not (zarr_path / "layers" / "fc" / "sum_true" / "c" / "2" / "0" / "0").exists()  # chunk deleted
    w.append(20, layers=row_layers(7))
    run = RunStore.open(tmp_path / "run")
    np.testing.assert_array_equal(run.steps, [0, 10, 20])
    np.testing.assert_array_equal(run.layer("conv").count_true[2], row_layers(7)["conv"]["count_true"])


# ---------------------------------------------------------------- appending


@pytest.mark.parametrize("step", [10, 5])
def test_step_must_increase(tmp_path, step):
    make_run(tmp_path / "run", n_rows=2)
    w = open_writer(tmp_path / "run")
    with pytest.raises(ValueError, match=f"step {step} must be greater than the last committed step 10"):
        w.append(step, layers=row_layers(2))


@pytest.mark.parametrize("mutate, match", [
    (lambda r: r.update(head={}), r"unknown layers \['head'\]"),
    (lambda r: r["fc"].update(sum_squares=np.zeros((3, 5))), r"unknown arrays \['sum_squares'\] for layer 'fc'"),
    (lambda r: r["fc"].update(sum_true=np.zeros((3, 4))), r"'sum_true' of layer 'fc' has row shape \(3, 4\), expected \(3, 5\)"),
    (lambda r: r["conv"].update(count_true=np.zeros((1, 3))), r"'count_true' of layer 'conv' has row shape \(1, 3\)"),
    (lambda r: r["conv"].update(topk_map=np.zeros((4, 2, 5, 5))), r"'topk_map' of layer 'conv' has row shape \(4, 2, 5, 5\), expected \(4, 2, 3, 3\)"),
    (lambda r: r["fc"].pop("max_true"), r"layer 'fc' is missing arrays \['max_true'\]"),
    (lambda r: r.pop("conv"), r"layer 'conv' is missing arrays"),
])
def test_bad_rows_are_refused_before_anything_is_written(tmp_path, mutate, match):
    make_run(tmp_path / "run", n_rows=2)
    w = open_writer(tmp_path / "run")
    before = hash_files(tmp_path / "run")
    row = row_layers(2)
    mutate(row)
    with pytest.raises(ValueError, match=match):
        w.append(20, layers=row)
    assert hash_files(tmp_path / "run") == before and w.n_committed == 2
    w.append(20, layers=row_layers(2))  # the writer is still usable
    assert w.n_committed == 3


def test_first_row_fixes_shapes_from_the_run(tmp_path):
    w = open_writer(tmp_path / "run")
    with pytest.raises(ValueError, match=r"'iou' of layer 'fc' has row shape \(5, 2\), expected \(5, 3\)"):
        w.append(0, layers={"fc": {"iou": np.zeros((5, 2))}})
    with pytest.raises(ValueError, match=r"'precision' of layer 'fc' has row shape \(\), expected \(5,\)"):
        w.append(0, layers={"fc": {"precision": 1.0}})


def test_metrics_appearing_late_are_nan_backfilled(tmp_path):
    w = open_writer(tmp_path / "run")
    w.append(0, metrics={"loss": 2.0}, layers={})
    w.append(1, metrics={"loss": 1.0, "accuracy": 0.5}, layers={})
    w.append(2, metrics={"accuracy": 0.75}, layers={})
    run = RunStore.open(tmp_path / "run")
    np.testing.assert_array_equal(run.metric("loss"), [2.0, 1.0, math.nan])
    np.testing.assert_array_equal(run.metric("accuracy"), [math.nan, 0.5, 0.75])
    assert sorted(run.metrics) == ["accuracy", "loss"]
    np.testing.assert_array_equal(run.epochs, [math.nan] * 3)
    assert np.all(run.wall_times > 1e9)


def test_layer_arrays_appearing_late_read_as_fill_values_before(tmp_path):
    w = open_writer(tmp_path / "run")
    w.append(0, layers={"fc": {"count_true": [1, 2, 3]}})
    w.append(1, layers={"fc": {"count_true": [1, 2, 3], "iou": np.full((5, 3), 0.5),
                               "topk_index": np.ones((5, 2), int)}})
    layer = RunStore.open(tmp_path / "run").layer("fc")
    assert np.isnan(layer.iou[0]).all() and (layer.iou[1] == 0.5).all()
    assert (layer.topk_index[0] == -1).all() and (layer.topk_index[1] == 1).all()


def test_bad_step_and_metric_values(tmp_path):
    w = open_writer(tmp_path / "run")
    with pytest.raises(ValueError, match="step must be an int, got 1.5"):
        w.append(1.5, layers={})
    with pytest.raises(ValueError, match="metric 'loss' = 'low' is not a number"):
        w.append(1, metrics={"loss": "low"}, layers={})
    with pytest.raises(ValueError, match="metric name 'a/b' is not valid"):
        w.append(1, metrics={"a/b": 1.0}, layers={})
    w.close()
    with pytest.raises(ValueError, match="closed"):
        w.append(1, layers={})


def test_failed_write_is_not_committed_and_the_next_append_works(tmp_path):
    rows = make_run(tmp_path / "run", n_rows=2)
    w = open_writer(tmp_path / "run")
    # A folder where row 2 of one array goes: that chunk cannot be written.
    blocker = tmp_path / "run" / "record.zarr" / "layers" / "fc" / "sum_pred" / "c.2.0.0"
    blocker.mkdir()
    with pytest.raises(StoreWriteError, match=r"row 2 \(step 20\) to the run store at '.*run/record.zarr'.*"
                                              r"Is a directory"):
        w.append(20, metrics={"loss": 9.0, "new": 1.0}, layers=row_layers(2))
    assert w.n_committed == 2 and w.last_step == 10
    run = RunStore.open(tmp_path / "run")
    assert run.n_committed == 2 and run.layer("fc").sum_true.shape[0] == 2
    assert "new" not in run.metrics  # an array the failed row created is removed again

    blocker.rmdir()
    w.append(20, layers=row_layers(3))
    assert w.n_committed == 3
    assert run.refresh()
    np.testing.assert_array_equal(run.steps, [0, 10, 20])
    for t, row in enumerate(rows):
        np.testing.assert_array_equal(run.layer("fc").sum_pred[t], row["layers"]["fc"]["sum_pred"])
    np.testing.assert_array_equal(run.layer("fc").sum_pred[2], row_layers(3)["fc"]["sum_pred"])
    np.testing.assert_array_equal(run.metric("loss"), [1.0, 0.5, math.nan])
    w.close()  # an open writer keeps room for more rows; closing cuts every array to the committed rows
    shapes = array_rows(tmp_path / "run" / "record.zarr")
    assert {n for key, n in shapes.items() if not key.startswith("scalars/")} == {3, 6}
    assert {key: n for key, n in shapes.items() if key.startswith("scalars/")} == {
        "scalars/loss/step": 2, "scalars/loss/value": 2}  # the failed row's values were trimmed


def test_write_probe_once(tmp_path):
    w = open_writer(tmp_path / "run")
    thumbs = np.full((6, 4, 4, 3), 7, np.uint8)
    w.write_probe(thumbs, np.array([0, 1, 2, 0, 1, -1]))
    w.write_probe(np.zeros((6, 4, 4, 3), np.uint8), np.zeros(6, int))  # no-op
    run = RunStore.open(tmp_path / "run")
    np.testing.assert_array_equal(run.thumbs, thumbs)
    np.testing.assert_array_equal(run.probe_labels, [0, 1, 2, 0, 1, -1])
    assert run.probe_labels.dtype == np.int32


@pytest.mark.parametrize("thumbs, labels, match", [
    (np.zeros((6, 4, 4), np.uint8), np.zeros(6, int), r"thumbs must be uint8 \[N, H, W, 3\]"),
    (np.zeros((6, 4, 4, 3), np.float32), np.zeros(6, int), "thumbs must be uint8"),
    (np.zeros((6, 4, 4, 3), np.uint8), np.zeros(5, int), r"labels must be int \[N\] = \[6\]"),
    (np.zeros((5, 4, 4, 3), np.uint8), np.zeros(5, int), "probe has 6 images but 5 thumbs"),
])
def test_write_probe_checks_shapes(tmp_path, thumbs, labels, match):
    w = open_writer(tmp_path / "run")
    with pytest.raises(ValueError, match=match):
        w.write_probe(thumbs, labels)
    assert RunStore.open(tmp_path / "run").thumbs is None


def test_writer_is_a_context_manager_and_open_is_the_runstore_writer(tmp_path):
    with RunStore.writer(tmp_path / "run", classes=CLASSES, concepts=CONCEPTS, layers=LAYERS,
                         probe=PROBE, topk=TOPK) as w:
        assert isinstance(w, RunWriter)
        w.append(0, layers={"conv": layer_row(0, 4)})
    assert "n_committed=1" in repr(w)
