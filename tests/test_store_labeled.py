"""`LayerRecord.to_xarray()`: a labeled Dataset equal to the arrays it labels."""

import numpy as np
import pytest

from recorder.store import RunStore
from test_store import CLASSES, CONCEPTS, make_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    path = tmp_path_factory.mktemp("labeled") / "run"
    make_run(path, n_rows=3, dissection=True)
    return RunStore.open(path)


def test_dataset_is_labeled_by_step_class_unit_and_concept(run):
    layer = run.layer("conv")
    ds = layer.to_xarray()
    assert ds.step.values.tolist() == run.steps.tolist() == [0, 10, 20]
    assert ds["class"].values.tolist() == CLASSES and ds.unit.values.tolist() == list(range(layer.units))
    assert ds.concept.values.tolist() == [c.name for c in CONCEPTS]
    assert ds.concept_category.values.tolist() == [c.category for c in CONCEPTS]
    assert set(ds.data_vars) == set(layer.arrays) and ds.attrs["layer"] == "conv"
    for name in layer.arrays:
        np.testing.assert_array_equal(ds[name].values, layer.array(name).astype(ds[name].dtype), err_msg=name)


def test_class_means_by_name_equal_the_reader(run):
    layer = run.layer("fc")
    ds = layer.to_xarray(["sum_true", "count_true"])
    name = CLASSES[1]
    got = (ds.sum_true / ds.count_true).sel(**{"class": name})  # (step, unit)
    expected = layer.class_means("true")[:, 1, :]
    has_images = ds.count_true.sel(**{"class": name}).values > 0  # (step,): the synthetic rows leave one class empty
    assert not has_images.all()
    np.testing.assert_allclose(got.values[has_images], expected[has_images], rtol=1e-6)
    assert got.sel(step=10).dims == ("unit",)
    with pytest.raises(KeyError, match="'nope' is not a layer array; valid names"):
        layer.to_xarray(["nope"])
