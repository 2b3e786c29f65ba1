"""Theoretical RF against a hand computation and gradient support; empirical RF on a unit of known footprint."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from recorder.occlusion import empirical_rf, occlude_topk, peak_cells, rf_size, theoretical_rf
from training.models import SmallCNN


def stack() -> nn.Sequential:
    """conv 3 -> ReLU -> max-pool 2 -> dilated conv -> avg-pool 3/2 -> conv (3, 1) stride (1, 2)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(2, 2, 3, padding=2, dilation=2), nn.AvgPool2d(3, stride=2, padding=1),
        nn.Conv2d(2, 2, (3, 1), stride=(1, 2), padding=(1, 0)),
    ).double()
    for p in model.parameters():  # positive weights: every input pixel a position sees reaches it
        p.data = p.data.abs() + 0.1
    return model


def test_stack_by_hand():
    # conv1: r 3, j 1, start 0; max-pool 2: r 4, j 2, start 0.5; dilated conv (k_eff 5, pad 2): r 12;
    # avg-pool 3/2 pad 1: r 16, j 4, start 0.5; conv (3, 1) stride (1, 2): rows r 24 j 4, cols r 16 j 8
    rf = theoretical_rf(stack(), "5", (1, 32, 32))
    assert (rf.size, rf.jump, rf.start) == ((24, 16), (4, 8), (0.5, 0.5))
    assert rf.window(4, 2) == (5, 29, 9, 25)


def gradient_support(model, position, size=32, draws=60) -> torch.Tensor:
    """Input pixels whose gradient of the output at `position` is nonzero on some positive input."""
    support = torch.zeros(size, size, dtype=torch.bool)
    generator = torch.Generator().manual_seed(0)
    for _ in range(draws):  # max-pool sends the gradient to one pixel per window: take the union
        x = (torch.rand(1, 1, size, size, generator=generator, dtype=torch.float64) + 0.1).requires_grad_()
        model(x)[0, 0][position].backward()
        support |= x.grad[0, 0] != 0
    return support


@pytest.mark.parametrize("position", [(4, 2), (0, 0), (7, 3)])
def test_stack_equals_gradient_support(position):
    model = stack()
    rf = theoretical_rf(model, "5", (1, 32, 32))
    r0, r1, c0, c1 = rf.window(*position)
    want = torch.zeros(32, 32, dtype=torch.bool)
    want[max(r0, 0):r1, max(c0, 0):c1] = True
    assert torch.equal(gradient_support(model, position), want)


def test_small_cnn_layers():
    model = SmallCNN(depth=4, width=4)
    # conv3 = conv, pool, conv, pool, conv: r 3, 4, 8, 10, 18; conv4 adds pool (22) and conv (38)
    assert theoretical_rf(model, "conv3", (3, 64, 64)) == theoretical_rf(model, "conv3.relu", (3, 64, 64))
    assert theoretical_rf(model, "conv3", (3, 64, 64)).size == (18, 18)
    rf = theoretical_rf(model, "conv4", (3, 64, 64))
    assert (rf.size, rf.jump, rf.start) == ((38, 38), (8, 8), (3.5, 3.5))


def test_unknown_resizing_module():
    model = nn.Sequential(nn.Conv2d(1, 1, 3), nn.Upsample(scale_factor=2), nn.Conv2d(1, 1, 3))
    with pytest.raises(ValueError, match="'1'.*Upsample"):
        theoretical_rf(model, "2", (1, 16, 16))
    with pytest.raises(ValueError, match="spatial map"):
        theoretical_rf(nn.Sequential(nn.Flatten(), nn.Linear(16, 2)), "1", (1, 4, 4))


FOOTPRINT = torch.tensor([[0.0, 1.0, 0.2, 0.0, 0.0],   # a 5x5 kernel whose support is 3 rows x 2 cols,
                          [0.0, 0.8, 0.6, 0.0, 0.0],   # off the kernel's centre column
                          [0.0, 0.3, 0.9, 0.0, 0.0],
                          [0.0, 0.0, 0.0, 0.0, 0.0],
                          [0.0, 0.0, 0.0, 0.0, 0.0]])


def test_empirical_rf_of_known_footprint():
    conv = nn.Conv2d(1, 1, 5, padding=2, bias=False)
    conv.weight.data = FOOTPRINT[None, None].clone()
    model = nn.Sequential(conv)
    size = 20
    images = torch.zeros(4, 1, size, size)
    for n, (r, c) in enumerate([(2, 3), (9, 11), (12, 1), (5, 13)]):  # bright squares at different places
        images[n, 0, r:r + 6, c:c + 6] = 1.0
    top = occlude_topk(model, {"0": torch.tensor([[0, 1, 2, 3]])}, images, 1, 1, "zero", "peak")["0"]
    rf = theoretical_rf(model, "0", (1, size, size))
    cells = peak_cells(top.peak, rf, (size, size), 1, 1)  # (1, 4, 2)
    assert len(set(map(tuple, cells[0].tolist()))) == 4  # the peaks are at four different places
    canvas = empirical_rf(top.maps["peak"], cells)[0]  # (39, 39)
    centre = size - 1
    got = canvas[centre - 2:centre + 3, centre - 2:centre + 3]  # the kernel's 5x5 around the centre
    torch.testing.assert_close(got, FOOTPRINT, atol=1e-6, rtol=0)
    outside = canvas.clone()
    outside[centre - 2:centre + 3, centre - 2:centre + 3] = 0
    assert torch.nan_to_num(outside).abs().max() == 0
    # cells at least half the maximum (1.0): 1.0, 0.8, 0.6, 0.9 -> 4 cells
    assert rf_size(canvas[None], 1).item() == 2.0
    assert rf_size(canvas[None], 3).item() == 6.0


def test_empirical_rf_shifts_and_averages():
    maps = torch.zeros(1, 2, 3, 3)
    maps[0, 0, 0, 0] = 2.0  # image 0: value at its peak cell (0, 0)
    maps[0, 1, 2, 1] = 4.0  # image 1: value at its peak cell (2, 1)
    maps[0, 1, 0, 0] = 1.0
    maps[0, 1, 2, 2] = 1.0
    maps[0, 0, 2, 2] = float("nan")  # a missing value is left out of the mean
    cells = torch.tensor([[[0, 0], [2, 1]]])
    canvas = empirical_rf(maps, cells)[0]  # (5, 5), centre (2, 2)
    assert canvas.shape == (5, 5)
    assert canvas[2, 2] == 3.0  # (2 + 4) / 2
    assert canvas[0, 1] == 1.0  # only image 1 reaches (0, 1), with its (0, 0)
    assert canvas[2, 3] == 0.5  # image 0's (0, 1) = 0 and image 1's (2, 2) = 1
    assert canvas[4, 4].isnan()  # only image 0's NaN lands there
    assert canvas[0, 0].isnan() and canvas[4, 3] == 0  # (0, 0): no map reaches; (4, 3): image 0's (2, 1)
    assert rf_size(torch.full((1, 3, 3), -1.0), 2).isnan().all()


def test_peak_cells_map_centres():
    model = SmallCNN(depth=3, width=4)
    rf = theoretical_rf(model, "conv3", (3, 64, 64))  # centre of position i: 1.5 + 4 i
    peak = torch.tensor([[0, 0], [15, 15], [7, 3]])
    # patch 8, stride 4: square i centred at 4 i + 3.5 -> nearest (round half up) to 1.5 + 4 p
    cells = peak_cells(peak, rf, (64, 64), 8, 4)
    want = [[min(max(math.floor((1.5 + 4 * p - 3.5) / 4 + 0.5), 0), 14) for p in row] for row in peak.tolist()]
    assert cells.tolist() == want


def test_resnet_follows_the_main_branch():
    from training.models import resnet18_small

    model = resnet18_small()
    # layer1: stem 3 + four 3x3 convs -> 11; layer2: 3x3 stride 2 (+2), then three 3x3 at jump 2 (+12) -> 25
    assert theoretical_rf(model, "layer1", (3, 64, 64)).size == (11, 11)
    rf = theoretical_rf(model, "layer2", (3, 64, 64))
    assert (rf.size, rf.jump, rf.start) == ((25, 25), (2, 2), (0.0, 0.0))
