"""Occlusion added after a run (`occlusion/<layer>/`): entries merged into the layer by step."""

import numpy as np
import pytest
from test_store import TOPK, make_run

from recorder import RunStore
from recorder.store.added import AddedOcclusion

SETTINGS = {"patch": 4, "stride": 2, "fill": "mean", "measure": "peak"}
RF = {"size": [5, 5], "jump": [1, 1], "start": [0.0, 0.0]}


def entry(seed, units, gh=2):
    rng = np.random.default_rng(seed)
    return {"occlusion": rng.random((units, TOPK, gh, gh)).astype(np.float16),
            "rf": rng.random((units, 2 * gh - 1, 2 * gh - 1)).astype(np.float16),
            "rf_size": rng.random(units).astype(np.float32)}


def test_entries_fill_the_rows_without_occlusion_by_step(tmp_path):
    make_run(tmp_path / "run", n_rows=3)  # rows carry occlusion in every row
    run = RunStore.open(tmp_path / "run")
    layer = run.layer("fc")
    recorded = {name: np.array(getattr(layer, name)) for name in ("occlusion", "rf", "rf_size")}
    steps = run.steps.tolist()
    writer = AddedOcclusion.open(tmp_path / "run")
    new = entry(1, layer.units)
    writer.append("fc", steps[1], new, SETTINGS, RF)
    writer.append("fc", 10**6, entry(2, layer.units), SETTINGS, RF)  # no row has this step: ignored
    run = RunStore.open(tmp_path / "run")
    for name, value in recorded.items():  # recorded rows are kept: entries fill only NaN rows
        np.testing.assert_array_equal(getattr(run.layer("fc"), name), value)
    assert writer.steps("fc").tolist() == [steps[1], 10**6]


def test_a_layer_without_recorded_occlusion_reads_nan_but_where_entries_are(tmp_path):
    make_run(tmp_path / "run", n_rows=3)
    for name in ("occlusion", "rf", "rf_size"):  # a run recorded without occlusion
        import shutil

        shutil.rmtree(tmp_path / "run" / "record.zarr" / "layers" / "conv" / name, ignore_errors=True)
    run = RunStore.open(tmp_path / "run")
    units, steps = run.layer("conv").units, run.steps.tolist()
    with pytest.raises(KeyError, match="no occlusion was recorded or added"):
        run.layer("conv").occlusion
    new = entry(3, units)
    AddedOcclusion.open(tmp_path / "run").append("conv", steps[2], new, SETTINGS, RF)
    run.refresh()
    layer = run.layer("conv")
    for name, value in new.items():
        got = getattr(layer, name)
        assert got.shape == (3, *value.shape) and got.dtype == value.dtype
        assert np.isnan(got[:2]).all()
        np.testing.assert_array_equal(got[2], value)
    assert layer.occlusion_settings == SETTINGS and layer.theoretical_rf == RF


def test_refusals_a_second_entry_of_a_step_other_settings_other_shapes(tmp_path):
    make_run(tmp_path / "run", n_rows=2)
    writer = AddedOcclusion.open(tmp_path / "run")
    units = RunStore.open(tmp_path / "run").layer("fc").units
    writer.append("fc", 5, entry(1, units), SETTINGS, RF)
    with pytest.raises(ValueError, match="already has added occlusion at step 5"):
        writer.append("fc", 5, entry(1, units), SETTINGS, RF)
    with pytest.raises(ValueError, match="cannot add entries with"):
        writer.append("fc", 6, entry(1, units), {**SETTINGS, "patch": 3}, RF)
    with pytest.raises(ValueError, match="has shape"):
        writer.append("fc", 7, entry(1, units, gh=3), SETTINGS, RF)
    with pytest.raises(ValueError, match="unknown layer 'nope'"):
        writer.append("nope", 8, entry(1, units), SETTINGS, RF)
    assert writer.steps("fc").tolist() == [5]
