"""Occlusion on input crops equals a plain loop of full occluded forwards, on chains and on ResNet-18."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from recorder.occlusion import discrepancy, occlude_topk
from recorder.occlusion.window import why_not
from training.models import SmallCNN, resnet18_small

from support.occlusion_reference import MEASURES, brute_force, layer_map

def crop_sizes(model: nn.Module, first: str, run) -> set[tuple[int, int]]:
    """The input sizes the module `first` saw while `run()` ran (called through hooks or `forward`)."""
    module, sizes = dict(model.named_modules())[first], set()
    plain = module.forward

    def forward(x):
        sizes.add(tuple(x.shape[-2:]))
        return plain(x)

    module.forward = forward
    try:
        run()
    finally:
        del module.forward
    return sizes


def images_with_border_peaks(n: int, size: tuple[int, int], seed: int) -> torch.Tensor:
    x = torch.randn(n, 3, *size, generator=torch.Generator().manual_seed(seed))
    x[0, :, -3:, -3:] += 4.0  # bright corners pull peaks of many units to the map's border
    x[1 % n, :, :3, :3] -= 4.0
    return x


def chain() -> nn.Sequential:
    """Padding, dilation, strides, even kernels, 'same' padding, both pools with padding, BatchNorm."""
    torch.manual_seed(3)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Conv2d(6, 6, 3, stride=2, padding=2, dilation=2), nn.LeakyReLU(0.1),
        nn.MaxPool2d(3, stride=1, padding=1),
        nn.Conv2d(6, 8, 2, padding="same"), nn.GELU(),
        nn.AvgPool2d(3, stride=2, padding=1),
        nn.Conv2d(8, 8, (3, 1), stride=(1, 2), padding=(1, 0)),
    )
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def small_cnn() -> SmallCNN:
    torch.manual_seed(0)
    return SmallCNN(depth=4, width=4).eval()


def resnet() -> nn.Module:
    torch.manual_seed(0)
    return resnet18_small().eval()


def resnet_imagenet() -> nn.Module:
    """torchvision's own stem: conv 7x7 stride 2 and a max-pool 3/2 with padding."""
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=3).eval()


CASES = {  # model, layer, first module, image size, patch, stride: every grid's last row is cut by the border
    "small_cnn.conv3": (small_cnn, "conv3", "conv1.conv", (31, 26), 6, 4),
    "small_cnn.conv2.conv": (small_cnn, "conv2.conv", "conv1.conv", (22, 19), 5, 3),
    "chain": (chain, "9", "0", (29, 27), 5, 3),
    "resnet.layer1": (resnet, "layer1", "conv1", (23, 18), 5, 4),
    "resnet.layer2": (resnet, "layer2", "conv1", (40, 34), 6, 7),
    "imagenet_resnet.layer1": (resnet_imagenet, "layer1", "conv1", (64, 58), 12, 10),
}
FAST = ["small_cnn.conv3", "small_cnn.conv2.conv", "chain"]
SLOW = pytest.mark.slow  # ResNet-18 is wide: its brute force takes minutes on a busy CPU


@pytest.mark.parametrize(("case", "fill"), [(case, fill) for case in FAST for fill in ("zero", "mean", "noise")]
                         + [("resnet.layer1", "mean")]
                         + [pytest.param(case, fill, marks=SLOW) for case in CASES if case not in FAST
                            for fill in ("zero", "mean", "noise") if (case, fill) != ("resnet.layer1", "mean")])
def test_crops_equal_brute_force(case, fill):
    build, layer, first, size, patch, stride = CASES[case]
    model = build()
    assert why_not(model, layer, (3, *size)) is None
    images = images_with_border_peaks(1 if case.startswith(("resnet", "imagenet")) else 2, size, seed=len(case))
    want = [brute_force(model, layer, image, patch, stride, fill, seed=4) for image in images]
    for measure in MEASURES:
        got = {}
        sizes = crop_sizes(model, first, lambda: got.update(
            D=discrepancy(model, layer, images, patch, stride, fill, measure, seed=4, batch_size=5)))
        assert min(h * w for h, w in sizes) < size[0] * size[1]  # crops were run
        for n in range(len(images)):
            torch.testing.assert_close(got["D"][n], want[n][measure], atol=1e-5, rtol=0)
    assert max(float(d.abs().max()) for d in want[0].values()) > 1e-2  # the maps are not all zero


def test_peaks_on_the_border_are_covered():
    build, layer, _, size, _, _ = CASES["small_cnn.conv3"]
    maps = layer_map(build(), layer, images_with_border_peaks(2, size, seed=len("small_cnn.conv3")))
    h, w = maps.shape[-2:]
    flat = maps.flatten(2).argmax(2)
    rows, cols = flat // w, flat % w
    assert bool(((rows == 0) | (rows == h - 1) | (cols == 0) | (cols == w - 1)).any())


@pytest.mark.parametrize("case", ["small_cnn.conv3", "resnet.layer1"])
def test_occlude_topk_peak_alone_and_with_mean(case):
    """"peak" alone runs each peak's cone; with "mean" it comes from the changed regions: both equal
    the full-image path, for units whose top-k share images."""
    build, layer, _, size, patch, stride = CASES[case]
    model = build()
    probe = images_with_border_peaks(5, size, seed=9)
    index = torch.tensor([[0, 3], [1, 0], [4, 4], [2, 1], [0, 1]])  # (K, k)
    chosen = {layer: [0, 3, 5, 6, 2]}
    full = occlude_topk(model, {layer: index}, probe, patch, stride, "mean", ("mean", "max", "peak"),
                        units=chosen, windowed=False)[layer]
    alone = occlude_topk(model, {layer: index}, probe, patch, stride, "mean", "peak", units=chosen,
                         windowed=True, batch_size=3)[layer]
    both = occlude_topk(model, {layer: index}, probe, patch, stride, "mean", ("max", "peak", "mean"), units=chosen,
                        windowed=True)[layer]
    torch.testing.assert_close(alone.maps["peak"], full.maps["peak"], atol=1e-5, rtol=0)
    torch.testing.assert_close(alone.peak, full.peak)
    for measure in MEASURES:
        torch.testing.assert_close(both.maps[measure], full.maps[measure], atol=1e-5, rtol=0)


class Branches(nn.Module):
    """Two convs whose maps are concatenated: the crop geometry cannot be certified."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.a, self.b = nn.Conv2d(3, 3, 3, padding=1), nn.Conv2d(3, 3, 5, padding=2)
        self.relu = nn.ReLU()
        self.c = nn.Conv2d(6, 4, 3, padding=1)

    def forward(self, x):
        return self.c(self.relu(torch.cat([self.a(x), self.b(x)], 1)))


@pytest.mark.parametrize("fill", ["zero", "mean", "noise"])
def test_fallback_for_branches(fill):
    model = Branches().eval()
    size, patch, stride = (13, 11), 4, 3
    images = images_with_border_peaks(2, size, seed=2)
    assert "outside the traced modules" in why_not(model, "c", (3, *size))
    got = {}
    sizes = crop_sizes(model, "a", lambda: got.update(
        {m: discrepancy(model, "c", images, patch, stride, fill, m, seed=4) for m in MEASURES}))
    assert sizes == {size}  # only full images ran
    for n, image in enumerate(images):
        want = brute_force(model, "c", image, patch, stride, fill, seed=4)
        for measure in MEASURES:
            torch.testing.assert_close(got[measure][n], want[measure], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match=r"layer 'c' cannot be occluded on input crops: .*windowed=None"):
        discrepancy(model, "c", images, patch, stride, windowed=True)


def test_windowed_bad_value():
    with pytest.raises(ValueError, match=r"windowed.*'yes'"):
        discrepancy(small_cnn(), "conv2", torch.zeros(1, 3, 16, 16), 4, 2, windowed="yes")


def test_unknown_unit_on_the_crop_path():
    with pytest.raises(ValueError, match=r"units \[16\].*0\.\.15"):
        discrepancy(small_cnn(), "conv3", torch.zeros(1, 3, 16, 16), 4, 2, units=[16])
