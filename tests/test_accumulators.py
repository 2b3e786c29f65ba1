import math

import numpy as np
import pytest
import torch

from recorder.accumulators import ClassSums, Floor, ImageResponses, Predictions


def test_class_sums_equal_a_loop_over_images():
    rng = np.random.default_rng(0)
    responses = rng.normal(size=(50, 6)).astype(np.float32)
    labels = rng.integers(-1, 4, size=50)
    sums = ClassSums(4, 6)
    sums.add(torch.from_numpy(responses[:20]), torch.from_numpy(labels[:20]))
    sums.add(torch.from_numpy(responses[20:]), torch.from_numpy(labels[20:]))
    expected_sum = np.zeros((4, 6))
    expected_count = np.zeros(4, dtype=np.int64)
    for i in range(50):
        if labels[i] >= 0:
            expected_sum[labels[i]] += responses[i]
            expected_count[labels[i]] += 1
    np.testing.assert_allclose(sums.sum.numpy(), expected_sum, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(sums.count.numpy(), expected_count)


def test_state_dict_round_trip_and_shape_check():
    sums = ClassSums(3, 2)
    sums.add(torch.ones(4, 2), torch.tensor([0, 1, 1, 2]))
    other = ClassSums(3, 2)
    other.load_state_dict(sums.state_dict())
    assert torch.equal(other.sum, sums.sum) and torch.equal(other.count, sums.count)
    with pytest.raises(ValueError, match=r"ClassSums.sum: state has shape \(3, 2\), expected \(3, 5\)"):
        ClassSums(3, 5).load_state_dict(sums.state_dict())
    sums.reset()
    assert sums.count.sum() == 0 and sums.sum.abs().sum() == 0


def test_disjoint_rows_merge_by_summation():
    # two "ranks" fill disjoint shards; adding their states is the all-reduce
    full = ImageResponses(5, 2)
    a, b = ImageResponses(5, 2), ImageResponses(5, 2)
    mean, mx = torch.randn(5, 2), torch.randn(5, 2)
    full.add(slice(0, 5), mean, mx)
    a.add(slice(0, 3), mean[:3], mx[:3])
    b.add(slice(3, 5), mean[3:], mx[3:])
    merged = {k: a.state_dict()[k] + b.state_dict()[k] for k in a.state_dict()}
    for key, value in full.state_dict().items():
        assert torch.equal(merged[key], value)
    preds = Predictions(4)
    preds.add(slice(0, 4), torch.tensor([2, 0, -1, 1]))
    assert preds.labels().tolist() == [2, 0, -1, 1]
    assert Predictions(3).labels().tolist() == [-1, -1, -1]


def test_floor_is_the_smallest_finite_response_per_unit():
    floor = Floor(n_units=3)
    batches = [torch.tensor([[1.0, float("nan"), 2.0], [-3.0, float("nan"), 5.0]]),
               torch.tensor([[0.5, float("nan"), -7.0]])]
    for batch in batches:
        floor.add(batch)
    expected = [min(float(b[i, k]) for b in batches for i in range(len(b)) if not math.isnan(float(b[i, k])))
                if k != 1 else math.nan for k in range(3)]
    got = floor.values().tolist()
    assert got[0] == expected[0] and got[2] == expected[2] and math.isnan(got[1])
    floor.reset()
    assert all(math.isnan(v) for v in floor.values().tolist())
