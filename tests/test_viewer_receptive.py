"""viewer.receptive: RF sizes over training and a unit's occlusion, against numpy and the recorder's own maps."""

import numpy as np
import pytest
import torch

from recorder.occlusion.grid import pixel_map as recorder_pixel_map
from recorder.store import RunStore
from viewer import receptive
from support.synthetic import SyntheticRun

OCC = dict(patch=8, stride=4, every=3)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    path = tmp_path_factory.mktemp("receptive") / "run"
    SyntheticRun(layers={"conv3": 20, "conv4": 12}, checkpoints=8, seed=3, occlusion=OCC).write(path)
    return RunStore.open(path)


@pytest.mark.parametrize("side, patch, stride", [(32, 8, 4), (30, 8, 4), (17, 5, 3), (12, 12, 1)])
def test_pixel_map_equals_the_recorders(side, patch, stride):
    """The DESIGN.md pixel map (the recorder's, itself equal to Captum's), including grids whose last square
    is cut by the border."""
    g = -(-(side - patch) // stride) + 1
    maps = np.random.default_rng(side).normal(size=(3, g, g))
    ours = receptive.pixel_map(maps, side, side, patch, stride)
    theirs = recorder_pixel_map(torch.from_numpy(maps), (side, side), patch, stride).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)


def test_input_side_from_the_grid():
    assert receptive.input_side(7, 8, 4, thumb=32) == 32  # the thumbnail is the model's input
    assert receptive.input_side(7, 8, 4, thumb=30) == 30  # ceil((30 - 8) / 4) + 1 == 7 too
    assert receptive.input_side(55, 8, 4, thumb=128) == 224  # a downscaled thumbnail: the smallest side
    assert receptive.input_side(7, 8, 4) == 32


def test_rf_series_is_median_and_quartiles_of_occluded_rows(run):
    s = receptive.rf_series(run, "conv4")
    sizes = run.layer("conv4").rf_size
    rows = [t for t in range(run.n_committed) if t % OCC["every"] == 0]
    assert s["x"] == [int(run.steps[t]) for t in rows]
    for i, t in enumerate(rows):
        values = np.sort(sizes[t][np.isfinite(sizes[t])])
        assert s["median"][i] == pytest.approx(np.median(values))
        assert s["lo"][i] == pytest.approx(np.percentile(values, 25))
        assert s["hi"][i] == pytest.approx(np.percentile(values, 75))
    assert s["theoretical"] == max(run.layer("conv4").theoretical_rf["size"])


def test_no_occlusion_means_none(tmp_path):
    SyntheticRun(layers={"fc": 4}, checkpoints=2, map_size=0).write(tmp_path / "plain")
    plain = RunStore.open(tmp_path / "plain")
    assert receptive.rf_series(plain, "fc") is None and not receptive.has_occlusion(plain, "fc")
    assert receptive.unit_occlusion(plain, "fc", 0, 1) is None


def test_unit_occlusion_shows_the_latest_occluded_row_at_or_before_t(run):
    layer = run.layer("conv3")
    d = receptive.unit_occlusion(run, "conv3", 5, t=5)  # rows 0, 3, 6 are occluded
    assert d["t"] == 3 and d["step"] == int(run.steps[3])
    np.testing.assert_array_equal(d["maps"], layer.occlusion[3, 5].astype(np.float32))
    np.testing.assert_array_equal(d["index"], layer.topk_index[3, 5])
    assert d["rf_size"] == pytest.approx(float(layer.rf_size[3, 5]))
    assert d["steps"] == [int(run.steps[t]) for t in (0, 3, 6)]
    assert [s["step"] for s in d["strip"]] == d["steps"]
    assert (d["patch"], d["stride"]) == (8, 4)
    assert receptive.unit_occlusion(run, "conv3", 5, t=6)["t"] == 6
