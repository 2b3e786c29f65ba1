"""Study items: masks are the recorder's thresholded maps, Harth's split, pairs equal a brute-force occlusion loop."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from tests.support.study_run import tiny_run
from viewer.study.items import blob_mask, generate, harth_split, unbits, unit_maps
from viewer.study.source import StudySource
from viewer.study.spec import StudySpec


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return StudySource.open(tiny_run(tmp_path_factory.mktemp("study") / "run"))


def _decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _one_map(model, layer, image, unit):
    """The unit's map on one image by a plain forward with a hook (no batching)."""
    out = {}
    handle = dict(model.named_modules())[layer].register_forward_hook(lambda m, i, o: out.update(a=o))
    with torch.no_grad():
        model(image[None])
    handle.remove()
    return out["a"][0, unit].double().numpy()


def test_maps_are_the_recorded_ones(source):
    model = source.model_at(6)
    images = source.probe.batch(torch.arange(len(source.probe)))
    maps = unit_maps(model, "conv2", images, range(8))  # (N, 8, h, w)
    stored = source.threshold("conv2", 6)
    quantile = np.quantile(maps.transpose(1, 0, 2, 3).reshape(8, -1), 0.95, axis=1)  # the run's q = 0.05
    np.testing.assert_allclose(quantile, stored, rtol=1e-4, atol=1e-5)


def test_harth_split_by_hand():
    fires = np.array([0, 1, 1, 0, 1, 1, 0], bool)
    test, rest = harth_split(fires, 2)
    assert test.tolist() == [1, 2] and rest.tolist() == [0, 3, 4, 5, 6]
    with pytest.raises(ValueError, match="fires on only 4 probe images; n_test=5"):
        harth_split(fires, 5)


def test_mask_items_split_and_truth_against_a_per_image_loop(source):
    spec = StudySpec(run=str(source.run.location), layer="conv2", units=[1, 4], step=6, task="masks",
                     n_practice=3, n_test=10, n_examples=4)
    items = generate(source, spec)
    model = source.model_at(6)
    for unit in spec.units:
        threshold = source.threshold("conv2", 6)[unit]
        masks = [(_one_map(model, "conv2", source.probe[i]["image"], unit) > threshold) for i in range(len(source.probe))]
        firing = [i for i, m in enumerate(masks) if m.any()]
        test = [it for it in items.items if it.unit == unit and it.phase == "test"]
        practice = [it for it in items.items if it.unit == unit and it.phase == "practice"]
        assert [it.extra["image"] for it in test] == firing[:10]  # Harth: the first firing images
        assert len(practice) == 3 and not {it.extra["image"] for it in practice} & set(firing[:10])
        assert all(masks[it.extra["image"]].any() for it in practice)
        for it in test + practice:
            np.testing.assert_array_equal(unbits(it.truth, it.public["grid"]), masks[it.extra["image"]])
            shown = _decode(items.images[it.public["image"]])
            np.testing.assert_array_equal(shown, source.probe.pixels(rgb=True)[it.extra["image"]])
            assert set(it.public) == {"kind", "image", "grid"}  # nothing of the truth
        examples = items.context[unit]["examples"]
        assert len(examples) == 4
        blob = unbits(test[0].extra["baselines"]["blob"], test[0].public["grid"])
        seen = [masks[i].sum() for i in range(len(masks)) if masks[i].any() and i not in firing[:10]]
        assert blob.sum() == round(np.mean(seen))


def _brute_force_pair(model, layer, unit, image, patch, stride):
    """Every occluder position by hand: (row, col) of the highest and lowest spatial-mean activation."""
    _, height, width = image.shape
    values = {}
    for top in range(0, height - patch + stride, stride):
        for left in range(0, width - patch + stride, stride):
            x = image.clone()
            square = x[:, top:top + patch, left:left + patch]
            square[:] = square.mean((1, 2), keepdim=True)
            values[(top // stride, left // stride)] = (_one_map(model, layer, x, unit).mean(), x)
    cells = list(values)  # row-major
    scores = np.array([values[c][0] for c in cells])
    high, low = cells[int(scores.argmax())], cells[int(scores.argmin())]
    return high, low, values[high][1], values[low][1]


def test_pair_items_equal_a_brute_force_occlusion_loop(source):
    spec = StudySpec(run=str(source.run.location), layer="conv2", units=[2], step=6, task="pairs", n_test=4,
                     n_practice=1, n_references=3, n_catch=1)
    items = generate(source, spec)
    model = source.model_at(6)
    images = source.probe.batch(torch.arange(len(source.probe)))
    peak = unit_maps(model, "conv2", images, [2])[:, 0].max((1, 2))
    order = np.argsort(-peak, kind="stable")
    trials = [it for it in items.items if not it.extra["catch"]]
    assert [it.extra["image"] for it in trials if it.phase == "test"] == order[10:14].tolist()  # ranks 11-14
    assert [it.extra["image"] for it in trials if it.phase == "practice"] == order[14:15].tolist()
    assert len(items.context[2]["references"]) == 3
    patch = round(0.4 * 16)
    sides = []
    for it in trials:
        image = source.probe[it.extra["image"]]["image"]
        high, low, high_image, low_image = _brute_force_pair(model, "conv2", 2, image, patch, 2)
        assert tuple(it.extra["high"]) == high and tuple(it.extra["low"]) == low
        shown = {side: _decode(items.images[it.public[side]]) for side in ("left", "right")}
        pixels = {"high": _to_pixels(high_image, source.probe), "low": _to_pixels(low_image, source.probe)}
        other = "right" if it.truth == "left" else "left"
        np.testing.assert_array_equal(shown[it.truth], pixels["high"])
        np.testing.assert_array_equal(shown[other], pixels["low"])
        assert set(it.public) == {"kind", "size", "left", "right", "boxes"}
        sides.append(it.truth)
    catch = [it for it in items.items if it.extra["catch"]]
    assert len(catch) == 1 and catch[0].phase == "test"
    values = catch[0].extra["values"]
    image_side = "left" if catch[0].extra["image_left"] else "right"
    assert catch[0].truth == (image_side if values[0] >= values[1] else ("right" if image_side == "left" else "left"))


def _to_pixels(x, probe):
    mean = torch.tensor(probe.mean).reshape(-1, 1, 1)
    std = torch.tensor(probe.std).reshape(-1, 1, 1)
    return ((x * std + mean) * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def test_items_are_deterministic_and_sides_follow_the_seed(source):
    spec = dict(run=str(source.run.location), layer="conv2", units=[0, 3], step=3, task="pairs", n_test=6,
                n_practice=1, n_references=2)
    a, b = generate(source, StudySpec(**spec)), generate(source, StudySpec(**spec))
    assert [(i.public, i.truth, i.extra) for i in a.items] == [(i.public, i.truth, i.extra) for i in b.items]
    assert a.images == b.images
    c = generate(source, StudySpec(**spec, seed=1))
    assert [i.truth for i in c.items] != [i.truth for i in a.items]
    assert {i.truth for i in a.items if not i.extra["catch"]} == {"left", "right"}


def test_blob_is_centred():
    assert blob_mask((3, 3), 1).nonzero() == (np.array([1]), np.array([1]))
    assert blob_mask((4, 4), 4)[1:3, 1:3].all() and blob_mask((4, 4), 4).sum() == 4


def test_generate_refuses_what_the_run_cannot_give(source):
    base = dict(run=str(source.run.location), layer="conv2", units=[0], step=6, task="masks", n_test=10)
    with pytest.raises(ValueError, match="fires on only .* n_test=500"):
        generate(source, StudySpec(**{**base, "n_test": 500}))
    with pytest.raises(ValueError, match="step given an invalid value: 5; the run recorded steps 0, 3, 6"):
        generate(source, StudySpec(**{**base, "step": 5}))
    with pytest.raises(ValueError, match="layer given an invalid value: 'conv9'"):
        generate(source, StudySpec(**{**base, "layer": "conv9"}))
    with pytest.raises(ValueError, match=r"units given an invalid value: \[8\]"):
        generate(source, StudySpec(**{**base, "units": [8]}))
    with pytest.raises(ValueError, match="task given an invalid value"):
        StudySpec(**{**base, "task": "quiz"})
    with pytest.raises(ValueError, match="conditions given an invalid value"):
        StudySpec(**{**base, "task": "pairs", "conditions": ["optimized"]})
