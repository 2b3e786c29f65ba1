import numpy as np
import pytest

from recorder.store.rows import check_layer_rows

UNITS = {"fc": 4, "conv": 3}
SIZES = {"class": 2, "concept": 5, "rank": 8}


class Stored:  # an array the run already has: only its shape matters
    def __init__(self, *shape):
        self.shape = shape


def test_a_valid_row_comes_back_as_keys_specs_and_typed_values():
    row = {"fc": {"sum_true": np.ones((2, 4)), "count_true": [3, 4]}, "conv": {"iou": np.zeros((3, 5))}}
    items = {key: (spec, value) for key, spec, value in check_layer_rows(row, UNITS, {}, SIZES)}
    assert sorted(items) == ["layers/conv/iou", "layers/fc/count_true", "layers/fc/sum_true"]
    assert items["layers/fc/sum_true"][1].dtype == np.float32
    assert items["layers/conv/iou"][1].dtype == np.float16  # each array in its schema dtype
    assert items["layers/fc/count_true"][1].tolist() == [3, 4]


def test_stored_arrays_fix_the_row_shape_and_must_all_be_given():
    stored = {"layers/fc/topk_map": Stored(10, 4, 8, 7, 7), "layers/fc/sum_true": Stored(10, 2, 4)}
    row = {"fc": {"topk_map": np.zeros((4, 8, 7, 7)), "sum_true": np.zeros((2, 4))}}
    assert len(check_layer_rows(row, UNITS, stored, SIZES)) == 2
    with pytest.raises(ValueError, match=r"has row shape \(4, 8, 5, 5\), expected \(4, 8, 7, 7\)"):
        check_layer_rows({"fc": {"topk_map": np.zeros((4, 8, 5, 5)), "sum_true": np.zeros((2, 4))}},
                         UNITS, stored, SIZES)
    with pytest.raises(ValueError, match=r"layer 'fc' is missing arrays \['sum_true'\] in this row"):
        check_layer_rows({"fc": {"topk_map": np.zeros((4, 8, 7, 7))}}, UNITS, stored, SIZES)


@pytest.mark.parametrize("row, match", [
    ([], "layers must be a dict of layer name"),
    ({"nope": {}}, r"unknown layers \['nope'\]: the run's layers are \['fc', 'conv'\]"),
    ({"fc": [1]}, "layer 'fc' must map array names to arrays, got list"),
    ({"fc": {"sums": 1}}, r"unknown arrays \['sums'\] for layer 'fc'"),
    ({"fc": {"sum_true": np.zeros((3, 4))}}, r"array 'sum_true' of layer 'fc' has row shape \(3, 4\), "
                                             r"expected \(2, 4\) \(class, unit\)"),
    ({"fc": {"iou": np.zeros(4)}}, r"has row shape \(4,\), expected \(4, 5\)"),
])
def test_bad_rows_are_named(row, match):
    with pytest.raises(ValueError, match=match):
        check_layer_rows(row, UNITS, {}, SIZES)
