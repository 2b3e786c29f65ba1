"""Run and LayerRecord: opening, committed rows only, caching, class means and selectivity."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from recorder import metrics
from recorder.store import LayerRecord, NotARunError, Run, RunStore
from test_store import CONCEPTS, make_run, open_writer, row_layers
from test_store_writer import grow_uncommitted_row


@pytest.fixture
def run_path(tmp_path):
    """A run of 4 rows that the test may change."""
    make_run(tmp_path / "run", n_rows=4, dissection=True)
    return tmp_path / "run"


@pytest.fixture(scope="module")
def shared_run(tmp_path_factory):
    """A run of 4 rows, shared by the tests that only read it."""
    path = tmp_path_factory.mktemp("reader") / "run"
    make_run(path, n_rows=4, dissection=True)
    return path


# ---------------------------------------------------------------- opening


def test_open_missing_path_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="no run at '.*nowhere'"):
        RunStore.open(tmp_path / "nowhere")


def test_open_folder_without_a_run(tmp_path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(NotARunError, match="plain' is not a tuneline run: it has no record.zarr"):
        RunStore.open(tmp_path / "plain")


def test_open_run_folder_or_record_zarr(shared_run):
    a, b = RunStore.open(shared_run), RunStore.open(shared_run / "record.zarr")
    assert isinstance(a, Run) and a.path == b.path == shared_run
    assert a.n_committed == b.n_committed == 4
    assert "n_committed=4" in repr(a) and a.created == a.attrs["run"]["created"]


def test_unknown_layer_lists_the_layers(shared_run):
    with pytest.raises(KeyError, match=r"no layer 'head'; its layers are \['conv', 'fc'\]"):
        RunStore.open(shared_run).layer("head")


def test_missing_array_names_array_and_layer(tmp_path):
    open_writer(tmp_path / "run").append(0, layers={"fc": {"count_true": [1, 2, 3]}})
    layer = RunStore.open(tmp_path / "run").layer("fc")
    assert isinstance(layer, LayerRecord) and layer.arrays == ["count_true"]
    assert layer.has("count_true") and not layer.has("iou")
    with pytest.raises(KeyError, match="layer 'fc' has no array 'sum_true'"):
        layer.sum_true
    with pytest.raises(KeyError, match="layer 'fc' has no array 'iou'"):
        layer.row("iou", 0)
    with pytest.raises(KeyError, match="'bogus' is not a layer array"):
        layer.array("bogus")
    with pytest.raises(KeyError, match="no metric 'loss'"):
        RunStore.open(tmp_path / "run").metric("loss")


def test_empty_run(tmp_path):
    open_writer(tmp_path / "run")
    run = RunStore.open(tmp_path / "run")
    assert run.n_committed == 0 and run.steps.shape == (0,) and run.metrics == {}
    assert run.thumbs is None and run.probe_labels is None
    with pytest.raises(KeyError):
        run.layer("fc").sum_true  # not created until a row has it
    assert not run.refresh()


# ---------------------------------------------------------------- committed rows, caching


def test_rows_beyond_n_committed_are_never_returned(run_path):
    grow_uncommitted_row(run_path / "record.zarr")
    run = RunStore.open(run_path)
    assert run.n_committed == 4 and run.steps.shape == (4,)
    layer = run.layer("fc")
    assert layer.sum_true.shape == (4, 3, 5) and not (layer.sum_true == 99).any()
    with pytest.raises(IndexError, match="row 4 is out of range: the run has 4 committed rows"):
        layer.row("sum_true", 4)


def test_row_reads_one_checkpoint(shared_run):
    layer = RunStore.open(shared_run).layer("conv")
    full = row_layers(2)["conv"]["topk_map"]
    np.testing.assert_array_equal(layer.row("topk_map", 2), full)
    np.testing.assert_array_equal(layer.row("count_true", -1), row_layers(3)["conv"]["count_true"])
    np.testing.assert_array_equal(layer.row("sum_true", 1), layer.sum_true[1])  # from the cache too


def test_refresh_picks_up_new_rows_and_cached_arrays_grow(run_path):
    run = RunStore.open(run_path)
    layer = run.layer("fc")
    before = layer.sum_true
    si_before = layer.selectivity()
    assert not before.flags.writeable and layer.sum_true is before  # cached, read-only
    w = open_writer(run_path)
    w.append(100, layers=row_layers(9, dissection=True))
    assert run.n_committed == 4 and layer.sum_true.shape[0] == 4  # not until refresh
    assert run.refresh() and not run.refresh()
    assert run.n_committed == 5
    np.testing.assert_array_equal(layer.sum_true[:4], before)
    np.testing.assert_array_equal(layer.sum_true[4], row_layers(9)["fc"]["sum_true"])
    assert layer.selectivity().shape == (5, 5)
    np.testing.assert_array_equal(layer.selectivity()[:4], si_before)
    np.testing.assert_array_equal(run.steps, [0, 10, 20, 30, 100])


# ---------------------------------------------------------------- derived values


def test_class_means_are_nan_for_classes_without_images(shared_run):
    layer = RunStore.open(shared_run).layer("fc")
    mu = layer.class_means("true")
    assert mu.shape == (4, 3, 5) and mu.dtype == np.float64
    for t in range(4):
        counts = row_layers(t)["fc"]["count_true"]
        assert np.isnan(mu[t, counts == 0]).all()
        np.testing.assert_allclose(mu[t, counts > 0],
                                   layer.sum_true[t, counts > 0] / counts[counts > 0, None])


def test_class_means_by_pred_and_train(shared_run):
    layer = RunStore.open(shared_run).layer("conv")
    np.testing.assert_array_equal(layer.class_means("pred"), metrics.class_means(layer.sum_pred, layer.count_pred))
    window = metrics.class_means(layer.train_sum, layer.train_count)
    np.testing.assert_array_equal(layer.class_means("train_window"), window)
    sums = np.cumsum(layer.train_sum.astype(np.float64), axis=0)
    counts = np.cumsum(layer.train_count, axis=0)
    expected = np.where(counts[..., None] > 0, sums / np.maximum(counts, 1)[..., None], np.nan)
    np.testing.assert_allclose(layer.class_means("train"), expected)
    for t in range(1, 4):  # cumulative by hand, one row at a time
        s = sum(layer.train_sum[i].astype(np.float64) for i in range(t + 1))
        c = sum(layer.train_count[i] for i in range(t + 1))
        np.testing.assert_allclose(layer.class_means("train")[t][c > 0], (s / c[:, None])[c > 0])


@pytest.mark.parametrize("call", [
    lambda layer: layer.class_means("label"),
    lambda layer: layer.selectivity("si", by="label"),
    lambda layer: layer.dominant(by="label"),
])
def test_bad_grouping_names_value_and_valid_ones(shared_run, call):
    with pytest.raises(ValueError, match="by='label' is not one of 'true', 'pred', 'train', 'train_window'"):
        call(RunStore.open(shared_run).layer("fc"))


def test_selectivity_and_dominant(shared_run):
    layer = RunStore.open(shared_run).layer("fc")
    mu = layer.class_means()
    floor = layer.response_min.astype(np.float64)
    assert layer.signed == bool((floor < 0).any()) and "signed" in layer.rule
    np.testing.assert_array_equal(layer.selectivity(), metrics.si(mu, floor, signed=True))
    np.testing.assert_array_equal(layer.selectivity("entropy"), metrics.entropy(mu, floor, signed=True))
    np.testing.assert_array_equal(layer.selectivity("si", by="pred"),
                                  metrics.si(layer.class_means("pred"), floor, signed=True))
    np.testing.assert_array_equal(layer.dead(), metrics.is_dead(mu, floor))
    train_floor = np.fmin.accumulate(layer.train_min.astype(np.float64), axis=0)
    np.testing.assert_array_equal(layer.selectivity(by="train"),
                                  metrics.si(layer.class_means("train"), train_floor, signed=True))
    np.testing.assert_allclose(layer.selectivity("precision"), layer.precision)
    np.testing.assert_array_equal(layer.dominant(), metrics.dominant(mu))
    assert layer.selectivity().shape == layer.dominant().shape == (4, 5)
    with pytest.raises(ValueError, match="metric 'sparsity' is not one of 'si', 'entropy', 'precision'"):
        layer.selectivity("sparsity")
    with pytest.raises(ValueError, match="'precision' is stored by true label only"):
        layer.selectivity("precision", by="pred")


def test_detectors(shared_run):
    layer = RunStore.open(shared_run).layer("fc")
    d = layer.detectors(min_iou=0.05)
    iou = layer.iou.astype(np.float64)
    np.testing.assert_array_equal(d["concept"], np.where(iou.max(-1) > 0.05, iou.argmax(-1), -1))
    np.testing.assert_array_equal(d["iou"], iou.max(-1))
    np.testing.assert_array_equal(d["is_detector"], iou.max(-1) > 0.05)
    assert d["concept"].max() < len(CONCEPTS)
    unique = layer.unique_detectors(min_iou=0.05)
    categories = list(dict.fromkeys(c.category for c in RunStore.open(shared_run).concepts))
    assert d["categories"] == categories
    for t in range(iou.shape[0]):
        detected = {int(iou[t, k].argmax()) for k in range(iou.shape[1]) if iou[t, k].max() > 0.05}
        for name in categories:
            expected = sum(1 for c in detected if RunStore.open(shared_run).concepts[c].category == name)
            assert unique[name][t] == expected


def test_detectors_without_dissection(tmp_path):
    make_run(tmp_path / "run", n_rows=1)
    with pytest.raises(NotImplementedError, match="dissection"):
        RunStore.open(tmp_path / "run").layer("fc").detectors()


def test_detectors_with_no_iou_values_are_minus_one(tmp_path):
    w = open_writer(tmp_path / "run")
    iou = np.full((5, 3), np.nan)
    iou[0] = [0.01, 0.2, 0.1]
    w.append(0, layers={"fc": {"iou": iou}})
    d = RunStore.open(tmp_path / "run").layer("fc").detectors()
    assert d["concept"][0].tolist() == [1, -1, -1, -1, -1]
    assert d["is_detector"][0].tolist() == [True, False, False, False, False]


def test_refresh_after_the_run_was_replaced(tmp_path):
    make_run(tmp_path / "run", n_rows=3)
    run = RunStore.open(tmp_path / "run")
    assert run.layer("fc").sum_true.shape[0] == 3
    shutil.rmtree(tmp_path / "run")
    make_run(tmp_path / "run", n_rows=1)
    assert run.refresh() and run.n_committed == 1
    np.testing.assert_array_equal(run.steps, [0])
    np.testing.assert_array_equal(run.layer("fc").sum_true[0], row_layers(0)["fc"]["sum_true"])
