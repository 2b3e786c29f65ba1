"""Occlusion-pair trials against a plain loop over every occluder position."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from recorder.occlusion import occlusion_pair


def net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3), nn.ReLU())


def activation(model, x: torch.Tensor, unit: int) -> float:
    with torch.no_grad():
        return float(model(x[None])[0, unit].mean())


def test_pair_equals_loop():
    model = net().eval()
    image = torch.rand(3, 20, 20, generator=torch.Generator().manual_seed(4))
    unit = 2
    pair = occlusion_pair(model, "4", unit, image)  # patch 40 % of 20 = 8, stride 2, fill mean, measure mean
    assert (pair.patch, pair.stride, pair.fill) == (8, 2, "mean")
    tried = {}
    for r in range(0, 20 - 8 + 2, 2):
        for c in range(0, 20 - 8 + 2, 2):
            x = image.clone()
            x[:, r:r + 8, c:c + 8] = x[:, r:r + 8, c:c + 8].mean((1, 2), keepdim=True).clone()
            tried[(r // 2, c // 2)] = activation(model, x, unit)
    assert len(tried) == 7 * 7
    high, low = max(tried, key=tried.get), min(tried, key=tried.get)
    assert (pair.high, pair.low) == (high, low)
    assert pair.high_value == pytest.approx(tried[high], abs=1e-5)
    assert pair.low_value == pytest.approx(tried[low], abs=1e-5)
    assert pair.clean_value == pytest.approx(activation(model, image, unit), abs=1e-5)
    assert pair.high_value > pair.low_value
    shown_high, shown_low = pair.images(image)
    assert activation(model, shown_high, unit) == pytest.approx(pair.high_value, abs=1e-5)
    assert activation(model, shown_low, unit) == pytest.approx(pair.low_value, abs=1e-5)


def test_pair_bad_input():
    model = net()
    with pytest.raises(ValueError, match=r"image.*\(1, 3, 20, 20\)"):
        occlusion_pair(model, "4", 0, torch.zeros(1, 3, 20, 20))
    with pytest.raises(ValueError, match=r"units \[9\]"):
        occlusion_pair(model, "4", 9, torch.zeros(3, 20, 20))
    with pytest.raises(ValueError, match="patch.*30"):
        occlusion_pair(model, "4", 0, torch.zeros(3, 20, 20), patch=30)
