import numpy as np
import pytest
import torch
from torch import nn

from recorder.online import OnlineWindow


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))


def open_window(model) -> OnlineWindow:
    window = OnlineWindow(["a", "b"], ["1"], torch.device("cpu"))
    window.attach(model)
    window.open({"1": 4})
    return window


def test_sums_per_class_equal_a_loop_over_images():
    model = tiny_model()
    window = open_window(model)
    batches = [(torch.randn(5, 3, 6, 6), torch.tensor([0, 1, 1, 0, 1])) for _ in range(3)]
    expected_sum, expected_count, expected_min = np.zeros((2, 4)), np.zeros(2), np.full(4, np.inf)
    correct = 0
    for x, y in batches:
        logits = model(x)  # a training forward: the hook keeps layer "1"'s responses
        responses = window.take()
        assert responses["1"].shape == (5, 4)
        window.add(responses, window.check(responses, y), logits)
        with torch.no_grad():  # the reference, one image at a time (no_grad: not seen by the window)
            for i in range(len(y)):
                response = model[1](model[0](x[i:i + 1])).mean((2, 3))[0].numpy()
                expected_sum[y[i]] += response
                expected_count[y[i]] += 1
                expected_min = np.minimum(expected_min, response)
        correct += int((logits.argmax(1) == y).sum())
    layers, metrics = {"1": {}}, {}
    window.row_arrays(layers, metrics, rank=0)
    np.testing.assert_allclose(layers["1"]["train_sum"], expected_sum, rtol=1e-5)
    np.testing.assert_array_equal(layers["1"]["train_count"], expected_count)
    np.testing.assert_allclose(layers["1"]["train_min"], expected_min, rtol=1e-5)
    assert metrics["train_accuracy"] == correct / 15
    window.reset()
    window.row_arrays(layers, metrics, rank=0)
    assert layers["1"]["train_count"].sum() == 0


def test_forwards_without_gradients_and_after_detach_add_nothing():
    model = tiny_model()
    window = open_window(model)
    with torch.no_grad():
        model(torch.randn(2, 3, 6, 6))  # a probe pass or an evaluation loop
    assert window.take() == {"1": None}
    with pytest.raises(ValueError, match="the model ran no training forward since the previous step"):
        window.check(window.take(), torch.tensor([0, 1]))
    window.detach()
    model(torch.randn(2, 3, 6, 6))
    assert window.take() == {"1": None}


def test_labels_that_do_not_fit_are_refused():
    model = tiny_model()
    window = open_window(model)
    model(torch.randn(2, 3, 6, 6))
    responses = window.take()
    with pytest.raises(TypeError, match="labels of dtype torch.float32"):
        window.check(responses, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"labels\[1\] = 2 is outside the class range \[0, 2\)"):
        window.check(responses, torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="saw 2 training images since the last step\\(\\) but labels has 3"):
        window.check(responses, torch.tensor([0, 1, 1]))
    assert window.check(responses, [1, 0]).tolist() == [1, 0]
