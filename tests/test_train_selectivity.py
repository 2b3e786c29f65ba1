"""training.selectivity: the differentiable SI equals recorder.metrics.si; its gradient moves SI."""

import numpy as np
import pytest
import torch
from torch import nn

from recorder import metrics
from training.models import SmallCNN
from training.selectivity import SelectivityRegularizer, class_means, selectivity_index


def brute_force_class_means(responses: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    mu = np.full((n_classes, responses.shape[1]), np.nan)
    for c in range(n_classes):
        if (labels == c).any():
            mu[c] = responses[labels == c].mean(0)
    return mu


@pytest.mark.parametrize("seed", range(4))
def test_si_equals_recorder_metrics_on_the_same_class_means(seed):
    g = torch.Generator().manual_seed(seed)
    responses = torch.randn(40, 9, generator=g, dtype=torch.float64)
    responses[:, 0] = 0.0               # a dead unit
    responses[:, 1] = -responses[:, 1].abs()  # a unit below zero everywhere: dead on mu_plus
    responses[:, 2] = responses[:, 2].abs()   # a positive unit
    labels = torch.randint(0, 6, (40,), generator=g)
    labels[labels == 4] = 5             # class 4 absent: NaN, left out
    mu = class_means(responses, labels, 6)
    expected_mu = brute_force_class_means(responses.numpy(), labels.numpy(), 6)
    np.testing.assert_allclose(mu.numpy(), expected_mu, equal_nan=True)
    np.testing.assert_allclose(selectivity_index(mu).numpy(), metrics.si(expected_mu), rtol=1e-12, atol=1e-12)
    assert selectivity_index(mu)[0] == 0 and selectivity_index(mu)[1] == 0


def test_units_with_one_valid_class_are_nan_like_the_recorder():
    mu = torch.tensor([[1.0, 2.0], [float("nan"), 3.0], [float("nan"), 1.0]])
    np.testing.assert_allclose(selectivity_index(mu).numpy(), metrics.si(mu.numpy()), equal_nan=True)
    assert torch.isnan(selectivity_index(mu)[0])


def test_regularizer_reads_the_layers_post_relu_spatial_means():
    torch.manual_seed(0)
    model = SmallCNN(depth=2, width=4)
    x, y = torch.randn(12, 3, 16, 16), torch.arange(12) % 3
    kept = {}
    handles = [getattr(model, n).register_forward_hook(lambda m, i, o, n=n: kept.__setitem__(n, o.detach()))
               for n in ("conv1", "conv2")]
    with SelectivityRegularizer(model, ["conv1", "conv2"], n_classes=3) as reg:
        model(x)
        si = reg.mean_si(y)
        with torch.no_grad():
            model(x)  # evaluation passes are not kept
        with pytest.raises(RuntimeError, match="ran no training forward pass"):
            reg.mean_si(y)
    for h in handles:
        h.remove()
    per_layer = [np.nanmean(metrics.si(brute_force_class_means(kept[n].mean((2, 3)).numpy(), y.numpy(), 3)))
                 for n in ("conv1", "conv2")]
    assert si.item() == pytest.approx(np.mean(per_layer), rel=1e-5)
    assert si.requires_grad


@pytest.mark.parametrize("alpha", [1.0, -1.0])
def test_gradient_moves_si_in_the_sign_of_alpha(alpha):
    """A toy: a linear layer + ReLU on three clusters; minimizing -alpha * SI moves SI with alpha."""
    torch.manual_seed(0)
    centers = torch.randn(3, 5)
    x = centers.repeat_interleave(20, 0) + 0.3 * torch.randn(60, 5)
    y = torch.arange(3).repeat_interleave(20)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU())
    reg = SelectivityRegularizer(model, ["1"], n_classes=3)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    history = []
    for _ in range(60):
        model(x)
        si = reg.mean_si(y)
        history.append(si.item())
        opt.zero_grad()
        (-alpha * si).backward()
        opt.step()
    reg.close()
    change = history[-1] - history[0]
    assert alpha * change > 0.05, history[::10]
