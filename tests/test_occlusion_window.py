"""Certified layer geometry: agrees with the theoretical RF, refuses what it cannot certify."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from recorder.occlusion import theoretical_rf
from recorder.occlusion.grid import OcclusionGrid, noise_image
from recorder.occlusion.window import Axis, trace_window, why_not
from training.models import SmallCNN, resnet18_small


@pytest.mark.parametrize(("build", "layers"), [
    (lambda: SmallCNN(depth=4, width=4), ["conv1", "conv2.conv", "conv3", "conv4"]),
    (resnet18_small, ["conv1", "layer1", "layer2", "layer3.0.conv1", "layer4"]),
])
def test_geometry_equals_theoretical_rf(build, layers):
    model = build()
    for layer in layers:
        window, rf = trace_window(model, layer, (3, 64, 64)), theoretical_rf(model, layer, (3, 64, 64))
        for axis, size, jump, start in zip((window.rows, window.cols), rf.size, rf.jump, rf.start):
            assert (axis.size, axis.jump, axis.left + (axis.size - 1) / 2) == (size, jump, start)


def test_small_cnn_conv3_by_hand():
    window = trace_window(SmallCNN(depth=4, width=16), "conv3", (3, 64, 48))
    assert window.rows == Axis(left=-7, jump=4, size=18, positions=16, pixels=64)
    assert window.cols == Axis(left=-7, jump=4, size=18, positions=12, pixels=48)
    assert window.units == 64


def test_axis_against_cones():
    axis = Axis(left=-7, jump=4, size=18, positions=16, pixels=64)
    for first in range(0, 64, 3):
        stop = min(first + 8, 64)
        want = [q for q in range(16) if axis.cone(q)[0] < stop and axis.cone(q)[1] > first]
        low, high = axis.affected(first, stop)
        assert list(range(low, high)) == want
        c0, c1 = axis.crop(low, high)
        assert c0 % 4 == 0 and 0 <= c0 <= max(axis.cone(low)[0], 0) and c1 == min(axis.cone(high - 1)[1], 64)
    gappy = Axis(left=0, jump=3, size=1, positions=5, pixels=15)  # a 1x1 conv with stride 3 skips pixels
    assert gappy.affected(1, 3) == (1, 1)  # empty: no position sees pixels 1 and 2


class Functional(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        return self.b(F.relu(self.a(x)))


class Sliced(Functional):
    def forward(self, x):
        return self.b(self.a(x)[:, :, 1:, 1:])


class Residual(nn.Module):
    def __init__(self, in_place: bool):
        super().__init__()
        self.in_place = in_place
        self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 5, padding=2)
        self.skip = nn.Conv2d(3, 4, 1)
        self.relu = nn.ReLU()

    def forward(self, x):
        out = self.b(self.a(x))
        if self.in_place:
            out += self.skip(x)
        else:
            out = out + self.skip(x)
        return self.relu(out)


@pytest.mark.parametrize(("model", "layer", "reason"), [
    (Functional(), "b", "outside the traced modules"),
    (Sliced(), "b", "outside the traced modules"),
    (nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(4)), "1", "AdaptiveAvgPool2d"),
    (nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4), nn.Conv2d(4, 4, 3)), "2", "GroupNorm"),
    (nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect")), "0", "padding_mode 'reflect'"),
    (nn.Sequential(nn.Conv2d(3, 4, 3), nn.MaxPool2d(2, ceil_mode=True)), "1", "ceil_mode"),
    (nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 14 * 14, 3)), "2", "spatial map"),
])
def test_refuses(model, layer, reason):
    assert reason in why_not(model, layer, (3, 16, 16))
    assert trace_window(model, layer, (3, 16, 16)) is None


@pytest.mark.parametrize("in_place", [True, False])
def test_residual_sum_is_the_union_of_both_branches(in_place):
    window = trace_window(Residual(in_place), "relu", (3, 16, 16))
    assert window.rows == Axis(left=-3, jump=1, size=7, positions=16, pixels=16)


def test_occlude_crops_equal_occlude_then_crop():
    grid = OcclusionGrid.of(14, 11, 4, 3)
    images = torch.randn(3, 2, 14, 11, generator=torch.Generator().manual_seed(0))
    image_index, cells = torch.tensor([0, 2, 1, 2]), torch.tensor([0, 7, 19, 13])
    top, left = torch.tensor([0, 2, 8, 4]), torch.tensor([0, 3, 5, 1])
    noise = noise_image(2, 14, 11, seed=3)
    for fill in ("zero", "mean", "noise"):
        full = grid.occlude(images, image_index, cells, fill, noise)
        got = grid.occlude_crops(images, image_index, cells, top, left, (6, 5), fill, noise, grid.square_means(images))
        for p in range(4):
            want = full[p, :, top[p]:top[p] + 6, left[p]:left[p] + 5]
            torch.testing.assert_close(got[p], want, atol=1e-6, rtol=0)
