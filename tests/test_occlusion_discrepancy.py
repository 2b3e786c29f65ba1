"""discrepancy / occlude_topk against a plain loop over occluder positions and against Captum."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

from recorder.occlusion import discrepancy, occlude_topk, pixel_map
from support.occlusion_reference import brute_force as brute_force_all
from support.occlusion_reference import layer_map

H, W, P, S = 14, 11, 4, 3  # corners 0, 3, 6, 9, 12 and 0, 3, 6, 9: the last squares are cut by the border


def tiny_net(batchnorm: bool = False) -> nn.Sequential:
    torch.manual_seed(0)
    layers = [nn.Conv2d(3, 5, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(5, 6, 3, padding=1)]
    if batchnorm:
        layers += [nn.BatchNorm2d(6), nn.Dropout(0.5)]
    layers += [nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4)]
    return nn.Sequential(*layers)


def measure_of(a: torch.Tensor, measure: str, peak: torch.Tensor) -> torch.Tensor:
    """m(A) for each unit of one image's map a (K, h, w); peak (K,) flat positions."""
    flat = a.flatten(1)
    if measure == "mean":
        return flat.mean(1)
    if measure == "max":
        return flat.max(1).values
    return flat[torch.arange(len(flat)), peak]


def brute_force(model, layer, image, patch, stride, fill, measure, seed=0) -> torch.Tensor:
    """D (K, gh, gw) of one image: one occluder position at a time, by slicing."""
    return brute_force_all(model, layer, image, patch, stride, fill, seed)[measure]


@pytest.fixture(scope="module")
def images():
    return torch.randn(3, 3, H, W, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("fill", ["zero", "mean", "noise"])
@pytest.mark.parametrize("measure", ["mean", "max", "peak"])
@pytest.mark.parametrize("layer", ["1", "3"])
def test_equals_brute_force(images, fill, measure, layer):
    model = tiny_net().eval()
    got = discrepancy(model, layer, images, P, S, fill, measure, batch_size=7)
    assert got.shape == (3, 5 if layer == "1" else 6, 5, 4)
    want = torch.stack([brute_force(model, layer, image, P, S, fill, measure) for image in images])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert got.abs().amax() > 1e-2  # the maps are not all zero


def test_units_select_rows(images):
    model = tiny_net().eval()
    full = discrepancy(model, "3", images, P, S, "mean", "peak")
    some = discrepancy(model, "3", images, P, S, "mean", "peak", units=[4, 1])
    torch.testing.assert_close(some, full[:, [4, 1]], atol=1e-6, rtol=0)


@pytest.mark.parametrize("fill", ["zero", "noise"])
@pytest.mark.parametrize("measure", ["mean", "max", "peak"])
def test_pixel_map_equals_captum(images, fill, measure):
    captum_attr = pytest.importorskip("captum.attr")
    model = tiny_net().eval()
    layer = "3"
    D = discrepancy(model, layer, images, P, S, fill, measure)
    pixels = pixel_map(D, (H, W), P, S)  # (N, K, H, W)
    noise = torch.randn(3, H, W, generator=torch.Generator().manual_seed(0))
    baseline = 0.0 if fill == "zero" else noise[None]
    for n, image in enumerate(images):
        peak = layer_map(model, layer, image[None])[0].flatten(1).argmax(1)
        for unit in (0, 5):
            def f(x, unit=unit):
                a = layer_map(model, layer, x)  # (B, K, h, w)
                return torch.stack([measure_of(one, measure, peak)[unit] for one in a])

            want = captum_attr.Occlusion(f).attribute(image[None], sliding_window_shapes=(3, P, P), strides=(3, S, S),
                                                      baselines=baseline, perturbations_per_eval=16)
            # captum spreads one value over the channels too: each channel of its map is the same
            torch.testing.assert_close(pixels[n, unit], want[0, 0], atol=1e-5, rtol=0)
            torch.testing.assert_close(want[0, 1], want[0, 0])


def test_occlude_topk_equals_discrepancy_per_unit(images):
    model = tiny_net().eval()
    more = torch.randn(6, 3, H, W, generator=torch.Generator().manual_seed(2))
    probe = torch.cat([images, more])  # (9, 3, H, W)
    index = {"1": torch.tensor([[0, 4, 8], [2, 2, 5], [7, 1, 0], [3, 4, 6], [8, 7, 6]]),
             "3": torch.tensor([[5, 0], [1, 3], [8, 2], [4, 4], [6, 7], [0, 5]])}
    got = occlude_topk(model, index, probe, P, S, "mean", ("mean", "peak"), batch_size=50)
    for layer, rows in index.items():
        assert got[layer].maps["mean"].shape == (*rows.shape, 5, 4)
        for unit, top in enumerate(rows):
            for measure in ("mean", "peak"):
                want = discrepancy(model, layer, probe[top], P, S, "mean", measure)[:, unit]  # (k, gh, gw)
                torch.testing.assert_close(got[layer].maps[measure][unit], want, atol=1e-6, rtol=0)
            clean = layer_map(model, layer, probe[top])[:, unit].flatten(1).argmax(1)  # (k,)
            h, w = got[layer].layer_size
            torch.testing.assert_close(got[layer].peak[unit], torch.stack([clean // w, clean % w], 1))


def test_occlude_topk_chosen_units(images):
    model = tiny_net().eval()
    index = {"3": torch.tensor([[2, 0], [1, 1]])}
    got = occlude_topk(model, index, images, P, S, "zero", "max", units={"3": [5, 2]})["3"].maps["max"]
    want = discrepancy(model, "3", images, P, S, "zero", "max", units=[5, 2])
    torch.testing.assert_close(got[0], want[[2, 0], 0])
    torch.testing.assert_close(got[1], want[[1, 1], 1])


def test_forward_stops_at_the_layer(images):
    model = tiny_net().eval()
    calls = []
    model[-1].register_forward_hook(lambda *a: calls.append(1))  # the classifier
    discrepancy(model, "3", images, P, S)
    occlude_topk(model, {"1": torch.tensor([[0, 1]]), "3": torch.tensor([[2, 1]])}, images, P, S)
    assert calls == []


def test_restores_flags_and_rng_and_weights(images):
    model = tiny_net(batchnorm=True).train()
    model[1].eval()  # a mixed state must come back as it was
    flags = [m.training for m in model.modules()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    random.seed(3), np.random.seed(3), torch.manual_seed(3)
    rng = random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state()
    discrepancy(model, "5", images, P, S, "noise", "peak")
    occlude_topk(model, {"6": torch.tensor([[0, 1]])}, images, P, S, "mean")
    assert [m.training for m in model.modules()] == flags
    assert random.getstate() == rng[0]
    assert (np.random.get_state()[1] == rng[1]).all()
    assert torch.equal(torch.get_rng_state(), rng[2])
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_eval_mode_is_used(images):
    """Dropout after the layer's BatchNorm would change the maps if the sweep ran in train mode."""
    model = tiny_net(batchnorm=True)
    want = discrepancy(model.eval(), "5", images, P, S)
    torch.testing.assert_close(discrepancy(model.train(), "5", images, P, S), want)


@pytest.mark.parametrize(("kwargs", "match"), [
    (dict(patch=15), "patch.*15"),
    (dict(patch=0), "patch.*0"),
    (dict(stride=0), "stride.*0"),
    (dict(stride=-2), "stride.*-2"),
    (dict(fill="blur"), "fill.*'blur'.*zero"),
    (dict(measure="median"), "measure.*'median'.*peak"),
    (dict(layer="7"), "layer '7'.*spatial map"),
    (dict(layer="nope"), "nope"),
    (dict(units=[6]), r"units \[6\].*0\.\.5"),
    (dict(batch_size=0), "batch_size.*0"),
])
def test_bad_input(images, kwargs, match):
    args = dict(layer="3", patch=P, stride=S, fill="zero", measure="mean") | kwargs
    with pytest.raises(ValueError, match=match):
        discrepancy(tiny_net(), args.pop("layer"), images, **args)


def test_bad_images():
    with pytest.raises(ValueError, match=r"images.*\(3, 14, 11\)"):
        discrepancy(tiny_net(), "3", torch.zeros(3, H, W), P, S)
    with pytest.raises(ValueError, match="topk_index"):
        occlude_topk(tiny_net(), {"3": torch.zeros(4, dtype=torch.int64)}, torch.zeros(2, 3, H, W), P, S)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_equals_cpu(images):
    model = tiny_net().eval()
    want = discrepancy(model, "3", images, P, S, "noise", "peak")
    got = discrepancy(model.cuda(), "3", images, P, S, "noise", "peak")
    assert got.device.type == "cuda"
    torch.testing.assert_close(got.cpu(), want, atol=1e-5, rtol=0)


def test_occlude_topk_reads_a_probe_set():
    from training.world import make_probe

    probe = make_probe(6, seed=1)
    model = tiny_net().eval()
    index = {"3": torch.tensor([[5, 0], [2, 2]])}
    from_probe = occlude_topk(model, index, probe, 16, 12, "mean", "peak")["3"].maps["peak"]
    from_tensor = occlude_topk(model, index, probe.batch(range(6)), 16, 12, "mean", "peak")["3"].maps["peak"]
    assert from_probe.shape == (2, 2, 5, 5)
    torch.testing.assert_close(from_probe, from_tensor)
