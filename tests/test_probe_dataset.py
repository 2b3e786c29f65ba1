"""recorder.probe.dataset (through ProbeSet.from_dataset): float, uint8 and PIL images, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from test_probe import MEAN, STD, make_pixels

from recorder.probe import ProbeSet
from recorder.probe.dataset import read_dataset


class TinyDataset(torch.utils.data.Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_from_dataset_float_tensors():
    g = torch.Generator().manual_seed(0)
    items = [(torch.randn(3, 5, 5, generator=g), i % 2) for i in range(5)]
    items[1] = (items[1][0], torch.tensor(1))
    probe = ProbeSet.from_dataset(items, ["a", "b"], mean=MEAN, std=STD, limit=4)
    assert len(probe) == 4 and not probe.is_pixels
    assert probe.labels.tolist() == [0, 1, 0, 1] and probe.mean == MEAN
    torch.testing.assert_close(probe.batch(range(4)), torch.stack([x for x, _ in items[:4]]))
    assert probe.source == "dataset:list"
    assert ProbeSet.from_dataset(TinyDataset(items), ["a", "b"]).source == "dataset:TinyDataset"


def test_from_dataset_uint8_and_pil():
    pixels = make_pixels(4)
    as_arrays = ProbeSet.from_dataset([(p, 0) for p in pixels], ["a"], mean=MEAN, std=STD)
    as_pil = ProbeSet.from_dataset(TinyDataset([(Image.fromarray(p), 0) for p in pixels]), ["a"], mean=MEAN, std=STD)
    assert as_arrays.is_pixels and as_pil.is_pixels
    np.testing.assert_array_equal(as_pil.thumbnails(), pixels)
    torch.testing.assert_close(as_arrays.batch(range(4)), ProbeSet(pixels, [0] * 4, ["a"], mean=MEAN, std=STD).batch(range(4)))
    assert as_arrays.fingerprint == as_pil.fingerprint


@pytest.mark.parametrize(
    "items, match",
    [
        ([(torch.zeros(3, 4, 4), 0), (torch.zeros(3, 4, 5), 0)], r"dataset item 1 has a float image of shape \(3, 4, 5\), but item 0 has a float image of shape \(3, 4, 4\)"),
        ([(torch.zeros(3, 4, 4), 0), (np.zeros((4, 4, 3), np.uint8), 0)], r"dataset item 1 has a uint8 image"),
        ([(torch.zeros(3, 4, 4), 0), torch.zeros(3, 4, 4)], r"dataset item 1 is not an \(image, label\) pair: got Tensor"),
        ([(torch.zeros(3, 4, 4), 0, "x")], r"dataset item 0 is not an \(image, label\) pair: got tuple of length 3"),
        ([(torch.zeros(4, 4), 0)], r"dataset item 0 has an image of shape \(4, 4\)"),
        ([(torch.zeros(3, 4, 4), 0.5)], r"dataset item 0 has label 0.5; expected an int"),
        ([(torch.zeros(3, 4, 4), 3)], r"label 3 at index 0 is out of range; valid: \[0, 2\) for classes"),
        ([], r"probe is empty: the dataset yielded no items"),
    ],
)
def test_from_dataset_errors(items, match):
    with pytest.raises(ValueError, match=match):
        ProbeSet.from_dataset(items, ["a", "b"])


def test_from_dataset_keeps_gray_pil_images_gray():
    ds = [(Image.fromarray(np.full((6, 6), 10 * i, np.uint8), mode="L"), i % 2) for i in range(4)]
    probe = ProbeSet.from_dataset(ds, ["even", "odd"])
    assert probe.channels == 1 and probe.batch([3]).shape == (1, 1, 6, 6)
    assert float(probe.batch([3])[0, 0, 0, 0]) == pytest.approx(30 / 255)


def test_read_dataset_returns_the_arrays_a_probe_is_built_from():
    pixels = make_pixels(3)
    arrays = read_dataset([(p, i) for i, p in enumerate(pixels)], limit=2)
    assert sorted(arrays) == ["images", "labels", "source"]
    np.testing.assert_array_equal(arrays["images"].numpy(), pixels[:2])
    assert arrays["labels"].tolist() == [0, 1] and arrays["source"] == "dataset:list"
