"""training.world: determinism, masks that match the drawn pixels, probe files, CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from recorder.probe import ProbeSet
from recorder.schema import Concept
from training import make_probe as make_probe_cli
from training import show_world as show_world_cli
from training.world import (
    CATEGORIES, CLASSES, COLOR_NAMES, COLORS, KINDS, MEAN, PARTS, SCENES, STD, TEXTURES,
    ShapesWorld, WorldConfig, concept_id, concepts, make_probe, render, render_batch,
)

EXACT = WorldConfig(noise=0.0, color_jitter=0.0, shading=0.0)  # pixels are palette RGB
N_CHECK = 40  # images per mask check: four of each class


def names(ids):
    table = concepts()
    return {table[int(i) - 1].name for i in np.unique(ids) if i}


def test_concepts_are_unique_and_ordered():
    cs = concepts()
    assert len({c.name for c in cs}) == len(cs)
    assert all(isinstance(c, Concept) for c in cs)
    assert [c.category for c in cs] == sorted((c.category for c in cs), key=CATEGORIES.index)
    by_cat = {cat: [c.name for c in cs if c.category == cat] for cat in CATEGORIES}
    assert by_cat["object"] == CLASSES and len(CLASSES) == 10
    assert by_cat["part"] == PARTS and by_cat["color"] == COLOR_NAMES
    assert by_cat["texture"] == TEXTURES and by_cat["scene"] == SCENES
    assert concept_id("object", CLASSES[0]) == 1
    with pytest.raises(KeyError, match="no color concept 'teal'"):
        concept_id("color", "teal")


def test_render_is_deterministic_per_seed_and_index():
    image, label, seg = render(13, seed=5)
    again = render(13, seed=5)
    np.testing.assert_array_equal(image, again[0])
    np.testing.assert_array_equal(seg, again[2])
    assert label == again[1] == 3
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert seg.shape == (5, 64, 64) and seg.dtype == np.uint8
    assert not np.array_equal(image, render(13, seed=6)[0])
    assert not np.array_equal(image, render(23, seed=5)[0])
    with pytest.raises(ValueError, match="non-negative"):
        render(-1, seed=5)


def test_render_batch_and_dataset_match_render():
    images, labels, segs = render_batch(4, seed=2, start=10)
    ds = ShapesWorld(20, seed=2)
    mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    for j in range(4):
        image, label, seg = render(10 + j, seed=2)
        np.testing.assert_array_equal(images[j], image)
        np.testing.assert_array_equal(segs[j], seg)
        assert labels[j] == label == (10 + j) % 10
        x, y = ds[10 + j]
        assert x.shape == (3, 64, 64) and x.dtype == torch.float32 and y == label
        expected = (torch.from_numpy(image).permute(2, 0, 1).float() / 255 - mean) / std
        torch.testing.assert_close(x, expected)
    assert ds.classes == CLASSES and len(ds) == 20
    with pytest.raises(IndexError, match="out of range"):
        ds[20]
    flipped = ShapesWorld(20, seed=2, transform=lambda t: t.flip(-1))
    torch.testing.assert_close(flipped[3][0], ds[3][0].flip(-1))


@pytest.mark.parametrize("config", [EXACT, WorldConfig(noise=0.0, color_jitter=0.0)], ids=["flat", "shaded"])
def test_masks_line_up_with_drawn_pixels(config):
    rgb = np.array([COLORS[c] for c in COLOR_NAMES], dtype=np.uint8)
    color0 = concept_id("color", COLOR_NAMES[0])
    plain = concept_id("texture", "plain")
    for i in range(N_CHECK):
        image, label, seg = render(i, seed=3, config=config)
        obj, part, color, texture, scene = seg
        kind = KINDS[label]
        # the color and texture layers are labeled everywhere; the scene layer is constant
        assert color.min() >= color0 and color.max() < color0 + len(COLOR_NAMES)
        assert names(texture) <= set(TEXTURES) and texture.min() > 0
        assert np.unique(scene).size == 1 and names(scene) <= set(SCENES)
        # the object mask is exactly the union of its parts, all parts of this kind
        assert names(obj) == {kind.name}
        np.testing.assert_array_equal(obj > 0, part > 0)
        assert names(part) <= {p.name for p in kind.parts}
        # object pixels have the palette RGB of their color label (no shading on objects)
        on = obj > 0
        np.testing.assert_array_equal(image[on], rgb[color[on] - color0])
        if config.shading == 0:
            np.testing.assert_array_equal(image, rgb[color - color0])
        # a plain part is painted in one color, drawn from its palette
        for spec in kind.parts:
            pid = concept_id("part", spec.name)
            sel = (part == pid) & (texture == plain)
            if sel.any():
                assert len(names(color[sel])) == 1 and names(color[sel]) <= set(spec.colors)


def test_textures_off_and_other_sizes():
    for i in range(10):
        image, _, seg = render(i, seed=4, config=WorldConfig(size=40, textures=False))
        assert image.shape == (40, 40, 3) and seg.shape == (5, 40, 40)
        assert names(seg[3]) == {"plain"}
        assert seg[0].any()


def test_every_class_in_a_balanced_probe():
    probe = make_probe(30, seed=7, config=WorldConfig(size=32))
    assert isinstance(probe, ProbeSet) and len(probe) == 30
    assert probe.classes == CLASSES and probe.concepts == concepts()
    assert np.bincount(probe.labels.numpy(), minlength=10).tolist() == [3] * 10
    assert probe.seg_size == (32, 32) and probe.seg_batch([0]).shape == (1, 5, 32, 32)
    assert probe.mean == pytest.approx(MEAN) and probe.std == pytest.approx(STD)
    item = probe[4]
    assert item["label"] == 4 and item["image"].shape == (3, 32, 32)


def test_mean_and_std_describe_the_pixels():
    images, _, _ = render_batch(500, seed=1)
    x = images.reshape(-1, 3).astype(np.float32) / 255.0
    np.testing.assert_allclose(x.mean(0), MEAN, atol=0.03)
    np.testing.assert_allclose(x.std(0), STD, atol=0.03)


def test_probe_h5_roundtrip_keeps_seg_and_concepts(tmp_path):
    probe = make_probe(20, seed=8)
    path = tmp_path / "probe.h5"
    probe.to_h5(path)
    back = ProbeSet.from_h5(path)
    assert back.concepts == probe.concepts and back.classes == CLASSES
    torch.testing.assert_close(back.seg_batch(range(20)), probe.seg_batch(range(20)))
    assert back.labels.tolist() == probe.labels.tolist()
    assert back.fingerprint == probe.fingerprint


@pytest.mark.parametrize(
    "name, value, match",
    [("noise", -1.0, "'noise' given an invalid value: -1.0"), ("size", 8, "'size'"),
     ("distractors", 2.5, "'distractors'"), ("scene_bias", 2, "'scene_bias'")],
)
def test_config_rejects_bad_values(name, value, match):
    with pytest.raises(ValueError, match=match):
        WorldConfig(**{name: value})


def test_make_probe_cli_writes_a_readable_file(tmp_path, capsys):
    out = tmp_path / "p.h5"
    make_probe_cli.main(["--out", str(out), "--n", "12", "--seed", "3", "--size", "32"])
    assert "wrote" in capsys.readouterr().out
    probe = ProbeSet.from_h5(out)
    assert len(probe) == 12 and probe.image_size == (32, 32) and probe.has_seg
    assert probe.concepts == concepts()


def test_show_world_cli_writes_a_png(tmp_path):
    out = tmp_path / "w.png"
    show_world_cli.main(["--out", str(out), "--n", "3", "--seed", "1"])
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width == 5 * 128 and im.height > 3 * 128


def test_python_m_training_dispatches_both_commands(tmp_path):
    from training.__main__ import main

    main(["make-probe", "--out", str(tmp_path / "cli.h5"), "--n", "10", "--size", "32"])
    main(["show-world", "--out", str(tmp_path / "cli.png"), "--n", "2", "--size", "32"])
    assert len(ProbeSet.from_h5(tmp_path / "cli.h5")) == 10 and (tmp_path / "cli.png").stat().st_size > 0
