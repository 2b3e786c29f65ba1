"""recorder.probe.ProbeSet: items, batches, validation, thumbnails, fingerprint, shards."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recorder.probe import ProbeSet
from recorder.schema import Concept

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
CLASSES = ["circle", "square", "triangle"]
CONCEPTS = [Concept("red", "color"), Concept("sky", "scene"), Concept("grass", "object")]


def make_pixels(n=6, h=8, w=10, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)


def make_probe(n=6, seg=True, **kwargs):
    pixels = make_pixels(n)
    labels = np.arange(n) % 3
    labels[-1] = -1
    s = np.random.default_rng(1).integers(0, 4, size=(n, 2, 4, 5)) if seg else None
    kwargs = dict(seg=s, concepts=CONCEPTS if seg else None, mean=MEAN, std=STD) | kwargs
    return ProbeSet(pixels, labels, CLASSES, **kwargs)


# ---------------------------------------------------------------- items
def test_getitem_shapes_dtypes_and_normalization():
    probe = make_probe()
    pixels = make_pixels()
    assert len(probe) == 6
    item = probe[2]
    assert set(item) == {"image", "label", "seg"}
    assert item["image"].dtype == torch.float32 and item["image"].shape == (3, 8, 10)
    assert item["label"] == 2 and isinstance(item["label"], int)
    assert item["seg"].dtype == torch.long and item["seg"].shape == (2, 4, 5)
    assert probe[5]["label"] == -1
    # by hand: (pixel / 255 - mean) / std, channel first
    r, c = 3, 7
    for ch in range(3):
        want = (pixels[2, r, c, ch] / 255.0 - MEAN[ch]) / STD[ch]
        assert item["image"][ch, r, c].item() == pytest.approx(want, rel=1e-5, abs=1e-6)
    want = (torch.from_numpy(pixels).permute(0, 3, 1, 2).double() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    torch.testing.assert_close(probe.batch(range(6)).double(), want, rtol=1e-5, atol=1e-5)


def test_properties():
    probe = make_probe()
    assert probe.classes == CLASSES and probe.concepts == CONCEPTS
    assert probe.has_classes and probe.has_seg
    assert probe.image_size == (8, 10) and probe.seg_size == (4, 5)
    assert probe.mean == MEAN and probe.std == STD and probe.source == "memory"
    assert probe.labels.dtype == torch.long and probe.labels.tolist() == [0, 1, 2, 0, 1, -1]
    assert probe.info() == {"source": "memory", "n_images": 6, "fingerprint": probe.fingerprint}
    assert isinstance(probe, torch.utils.data.Dataset)


def test_no_classes_no_seg():
    probe = ProbeSet(make_pixels(3))
    assert not probe.has_classes and not probe.has_seg and probe.seg_size is None
    assert probe.classes == [] and probe.concepts == []
    assert probe.labels.tolist() == [-1, -1, -1]
    assert probe[0]["seg"].shape == (0, 8, 10) and probe[0]["seg"].dtype == torch.long
    assert probe.seg_batch([0, 2]).shape == (2, 0, 8, 10)
    # default mean/std: pixels / 255
    torch.testing.assert_close(probe[1]["image"], torch.from_numpy(make_pixels(3)[1]).permute(2, 0, 1).float() / 255)


def test_float_images_kept_as_is():
    x = torch.randn(4, 3, 6, 6, dtype=torch.float64)
    probe = ProbeSet(x, [0, 1, 0, 1], ["a", "b"])
    assert not probe.is_pixels
    torch.testing.assert_close(probe[3]["image"], x[3].float())
    torch.testing.assert_close(probe.batch([3, 0]), x[[3, 0]].float())


def test_batch_labels_seg_equal_items():
    probe = make_probe()
    idx = [4, 0, 2, 2]
    torch.testing.assert_close(probe.batch(idx), torch.stack([probe[i]["image"] for i in idx]))
    assert probe.labels_of(idx).tolist() == [probe[i]["label"] for i in idx]
    torch.testing.assert_close(probe.seg_batch(idx), torch.stack([probe[i]["seg"] for i in idx]))
    torch.testing.assert_close(probe.batch(torch.tensor(idx)), probe.batch(np.array(idx)))
    assert probe.batch([]).shape == (0, 3, 8, 10)


@pytest.mark.parametrize("i", [-1, 6, 100])
def test_index_errors(i):
    probe = make_probe()
    with pytest.raises(IndexError, match=rf"probe index {i} is out of range \[0, 6\)"):
        probe[i]
    with pytest.raises(IndexError, match=rf"probe index {i} is out of range"):
        probe.batch([0, i])


def test_seg_values_and_concept_forms():
    seg = np.zeros((2, 1, 3, 3), dtype=np.int64)
    seg[1, 0, 0, 0] = 2
    forms = [("red", "color"), {"name": "sky", "category": "scene"}]
    probe = ProbeSet(make_pixels(2), seg=seg, concepts=forms)
    assert probe.concepts == [Concept("red", "color"), Concept("sky", "scene")]
    assert probe[1]["seg"][0, 0, 0].item() == 2


# ---------------------------------------------------------------- validation
PX = make_pixels(3)


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((np.zeros((0, 4, 4, 3), np.uint8),), {}, r"probe is empty"),
        ((np.zeros((3, 4), np.uint8),), {}, r"images must be uint8 pixels \[N, H, W, C\] or float model inputs \[N, C, H, W\], got shape \(3, 4\)"),
        ((np.zeros((3, 3, 8, 8), np.uint8),), {}, r"got shape \(3, 3, 8, 8\) \(torch.uint8\); this looks channels-first"),
        ((np.zeros((3, 4, 4, 3), np.int32),), {}, r"got shape \(3, 4, 4, 3\) \(torch.int32\)"),
        ((PX, [0, 1]), {"classes": ["a", "b"]}, r"labels must have shape \[N\] = \[3\] like images, got \(2,\)"),
        ((PX, [0.0, 1.0, 0.0], ["a", "b"]), {}, r"labels must be integers, got dtype float64"),
        ((PX, [0, 2, 5], ["a", "b"]), {}, r"label 2 at index 1 is out of range; valid: \[0, 2\) for classes"),
        ((PX, [0, -2, 0], ["a", "b"]), {}, r"label -2 at index 1 is out of range"),
        ((PX, [-1, 0, -1]), {}, r"label 0 at index 1 needs class names: pass classes=\[...\]"),
        ((PX, None, ["a", "a"]), {}, r"classes must be unique, 'a' appears more than once"),
        ((PX, None, ["a", 3]), {}, r"classes must be strings, got 3"),
        ((PX,), {"seg": np.zeros((2, 1, 4, 4), int)}, r"seg has 2 items but images has 3"),
        ((PX,), {"seg": np.zeros((3, 4, 4), int)}, r"seg must have shape \[N, L, h, w\], got \(3, 4, 4\)"),
        ((PX,), {"seg": np.zeros((3, 1, 4, 4), float)}, r"seg must hold integer concept ids"),
        ((PX,), {"seg": np.full((3, 1, 4, 4), 3), "concepts": CONCEPTS[:2]}, r"seg holds concept id 3; valid ids are 0 \(unlabeled\) to 2"),
        ((PX,), {"seg": np.full((3, 1, 4, 4), -1), "concepts": CONCEPTS}, r"seg holds concept id -1"),
        ((PX,), {"concepts": ["sky"]}, r"concept 0 is 'sky'; expected a Concept, a \(name, category\) pair"),
        ((PX,), {"mean": (0.5, 0.5)}, r"mean must have 1 or 3 values \(one per image channel\), got \(0.5, 0.5\)"),
        ((PX,), {"std": (1, 2, 3, 4)}, r"std must have 1 or 3 values"),
        ((PX,), {"std": (1.0, 0.0, 1.0)}, r"std must not contain 0, got \(1.0, 0.0, 1.0\)"),
    ],
)
def test_constructor_errors(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ProbeSet(*args, **kwargs)


def test_getitem_type_error():
    with pytest.raises(TypeError, match="probe index must be an int, got str"):
        make_probe()["0"]


# ---------------------------------------------------------------- shard
@pytest.mark.parametrize("n", [1, 5, 7, 12])
@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_shard_covers_every_index_once(n, world_size):
    probe = ProbeSet(make_pixels(n, 2, 2))
    ranges = [probe.shard(r, world_size) for r in range(world_size)]
    covered = [i for start, stop in ranges for i in range(start, stop)]
    assert covered == list(range(n))
    want = [(int(a[0]), int(a[-1]) + 1) if len(a) else None for a in np.array_split(np.arange(n), world_size)]
    assert [r if r[0] < r[1] else None for r in ranges] == want


def test_shard_errors():
    with pytest.raises(ValueError, match=r"rank 2 is not in \[0, world_size=2\)"):
        make_probe().shard(2, 2)


# ---------------------------------------------------------------- thumbnails
def test_thumbnails_pixels_and_downscale():
    probe = make_probe()
    np.testing.assert_array_equal(probe.thumbnails(), make_pixels())
    small = probe.thumbnails(max_size=5)  # 8x10 -> 4x5, area = 2x2 block means
    assert small.shape == (6, 4, 5, 3) and small.dtype == np.uint8
    px = make_pixels().astype(np.float64)
    want = px.reshape(6, 4, 2, 5, 2, 3).mean(axis=(2, 4))
    np.testing.assert_allclose(small, np.round(want), atol=1)


def test_thumbnails_of_float_images_undo_normalization():
    pixels = make_pixels(3)
    x = (torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    x[0, 0, 0, 0] = 100.0  # out of range: clipped
    probe = ProbeSet(x, mean=MEAN, std=STD)
    thumbs = probe.thumbnails()
    assert thumbs[0, 0, 0, 0] == 255
    thumbs[0, 0, 0, 0] = pixels[0, 0, 0, 0]
    np.testing.assert_array_equal(thumbs, pixels)
    assert probe.thumbnails(max_size=4).shape == (3, 3, 4, 3)  # 8x10 -> round(3.2) x 4


# ---------------------------------------------------------------- fingerprint
def test_fingerprint_equal_content_and_changes():
    a, b = make_probe(), make_probe()
    assert a.fingerprint == b.fingerprint and len(a.fingerprint) == 16
    int(a.fingerprint, 16)
    pixels = make_pixels()
    pixels[3, 2, 1, 0] ^= 1
    labels = np.array([0, 1, 2, 0, 1, -1])
    seg = np.random.default_rng(1).integers(0, 4, size=(6, 2, 4, 5))
    one_pixel = ProbeSet(pixels, labels, CLASSES, seg=seg, concepts=CONCEPTS, mean=MEAN, std=STD)
    assert one_pixel.fingerprint != a.fingerprint
    labels[0] = 1
    one_label = ProbeSet(make_pixels(), labels, CLASSES, seg=seg, concepts=CONCEPTS, mean=MEAN, std=STD)
    assert one_label.fingerprint != a.fingerprint
    labels[0] = 0
    seg[0, 0, 0, 0] = (seg[0, 0, 0, 0] + 1) % 4
    one_seg = ProbeSet(make_pixels(), labels, CLASSES, seg=seg, concepts=CONCEPTS, mean=MEAN, std=STD)
    assert one_seg.fingerprint != a.fingerprint
    assert make_probe(concepts=CONCEPTS[::-1]).fingerprint != a.fingerprint


def test_dataloader_collates_items():
    probe = make_probe()
    batch = next(iter(torch.utils.data.DataLoader(probe, batch_size=6)))
    torch.testing.assert_close(batch["image"], probe.batch(range(6)))
    assert batch["label"].tolist() == probe.labels.tolist()
    assert F.mse_loss(batch["image"], probe.batch(range(6))).item() == 0


def test_gray_pixels_feed_one_channel_and_show_as_gray_rgb(tmp_path):
    gray = np.arange(2 * 4 * 5, dtype=np.uint8).reshape(2, 4, 5) * 3  # [N, H, W]
    probe = ProbeSet(gray, [0, 1], ["a", "b"], mean=0.5, std=0.25)
    assert probe.channels == 1 and probe.mean == (0.5,) and probe.std == (0.25,)
    x = probe.batch([0, 1])
    assert x.shape == (2, 1, 4, 5)
    expected = (gray.astype(np.float32) / 255.0 - 0.5) / 0.25
    np.testing.assert_allclose(x[:, 0].numpy(), expected, rtol=1e-6)
    thumbs = probe.thumbnails()
    assert thumbs.shape == (2, 4, 5, 3)
    for c in range(3):
        np.testing.assert_array_equal(thumbs[..., c], gray)
    probe.to_h5(tmp_path / "gray.h5")
    back = ProbeSet.from_h5(tmp_path / "gray.h5")
    assert back.channels == 1 and back.fingerprint == probe.fingerprint
    assert torch.equal(back.batch([0, 1]), x)


def test_float_inputs_with_any_channel_count_round_trip(tmp_path):
    x = torch.rand(3, 5, 4, 4)  # five channels, already model inputs in [0, 1]
    probe = ProbeSet(x, None, mean=0.0, std=1.0)
    assert probe.channels == 5 and probe.batch([2]).shape == (1, 5, 4, 4)
    assert probe.pixels().shape == (3, 4, 4, 5)
    assert probe.thumbnails().shape == (3, 4, 4, 3)
    np.testing.assert_array_equal(probe.thumbnails()[..., 0],
                                  (x.numpy() * 255).round().clip(0, 255).astype(np.uint8).mean(1).round())
    probe.to_h5(tmp_path / "five.h5")
    back = ProbeSet.from_h5(tmp_path / "five.h5")
    assert back.channels == 5
    torch.testing.assert_close(back.batch(range(3)), x, atol=0.5 / 255 + 1e-6, rtol=0)
