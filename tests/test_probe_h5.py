"""recorder.probe.h5: HDF5 round trips of probe sets, on-disk layout, and read errors."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from recorder.probe import ProbeSet
from recorder.probe.h5 import FORMAT
from recorder.schema import Concept

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
CONCEPTS = [Concept("red", "color"), Concept("sky", "scene"), Concept("grass", "object")]


def make_probe(n=5, seg=True):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(n, 6, 7, 3), dtype=np.uint8)
    labels = np.array([0, 1, -1, 1, 0][:n])
    s = rng.integers(0, 4, size=(n, 2, 3, 4)) if seg else None
    return ProbeSet(
        pixels, labels, ["cat", "dog"], seg=s, concepts=CONCEPTS if seg else None, mean=MEAN, std=STD
    )


def assert_same(a: ProbeSet, b: ProbeSet):
    np.testing.assert_array_equal(a.thumbnails(max_size=10_000), b.thumbnails(max_size=10_000))
    torch.testing.assert_close(a.batch(range(len(a))), b.batch(range(len(b))))
    assert a.labels.tolist() == b.labels.tolist()
    torch.testing.assert_close(a.seg_batch(range(len(a))), b.seg_batch(range(len(b))))
    assert a.classes == b.classes and a.concepts == b.concepts
    assert a.mean == b.mean and a.std == b.std


@pytest.mark.parametrize("seg", [True, False])
def test_roundtrip(tmp_path, seg):
    probe = make_probe(seg=seg)
    path = tmp_path / "probe.h5"
    probe.to_h5(path)
    back = ProbeSet.from_h5(path)
    assert_same(probe, back)
    assert back.fingerprint == probe.fingerprint
    assert back.source == str(path) and back.info()["source"] == str(path)
    assert back.has_seg == seg and back.concepts == (CONCEPTS if seg else [])


def test_layout_chunks_and_compression(tmp_path):
    path = tmp_path / "probe.h5"
    make_probe().to_h5(path)
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] == FORMAT == "tuneline.probe/1"
        assert f["images"].dtype == np.uint8 and f["images"].shape == (5, 6, 7, 3)
        assert f["images"].chunks == (1, 6, 7, 3)
        assert f["labels"].dtype == np.int32 and f["labels"][()].tolist() == [0, 1, -1, 1, 0]
        assert f["seg"].dtype == np.uint16 and f["seg"].shape == (5, 2, 3, 4)
        assert f["seg"].chunks == (1, 2, 3, 4) and f["seg"].compression == "gzip"
        assert json.loads(f.attrs["classes"]) == ["cat", "dog"]
        assert json.loads(f.attrs["concepts"])[1] == {"name": "sky", "category": "scene"}
        np.testing.assert_array_equal(f.attrs["mean"], MEAN)
        np.testing.assert_array_equal(f.attrs["std"], STD)


def test_large_concept_ids_use_int32(tmp_path):
    concepts = [(f"c{i}", "object") for i in range(70_000)]
    seg = np.zeros((2, 1, 2, 2), dtype=np.int64)
    seg[1, 0, 1, 1] = 70_000
    probe = ProbeSet(np.zeros((2, 2, 2, 3), np.uint8), seg=seg, concepts=concepts)
    path = tmp_path / "probe.h5"
    probe.to_h5(path)
    with h5py.File(path, "r") as f:
        assert f["seg"].dtype == np.int32
    back = ProbeSet.from_h5(path)
    assert back[1]["seg"][0, 1, 1].item() == 70_000 and back.fingerprint == probe.fingerprint


def test_float_probe_written_as_denormalized_pixels(tmp_path):
    pixels = make_probe().thumbnails()
    x = (torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    probe = ProbeSet(x, [0, 1, 0, 1, 0], ["a", "b"], mean=MEAN, std=STD)
    path = tmp_path / "probe.h5"
    probe.to_h5(path)
    back = ProbeSet.from_h5(path)
    assert back.is_pixels and back.mean == MEAN and back.std == STD
    np.testing.assert_array_equal(back.thumbnails(), pixels)
    torch.testing.assert_close(back.batch(range(5)), x, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- errors
def test_missing_file(tmp_path):
    path = tmp_path / "nope.h5"
    with pytest.raises(FileNotFoundError, match=r"probe file '.*nope\.h5' does not exist"):
        ProbeSet.from_h5(path)


def test_not_hdf5(tmp_path):
    path = tmp_path / "text.h5"
    path.write_text("hello")
    with pytest.raises(ValueError, match=r"text\.h5' is not an HDF5 file"):
        ProbeSet.from_h5(path)


def edit(path, fn):
    with h5py.File(path, "a") as f:
        fn(f)


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda f: f.attrs.__setitem__("format", "other/2"), r"has format 'other/2'; expected 'tuneline.probe/1'"),
        (lambda f: f.attrs.__delitem__("format"), r"has format None; expected 'tuneline.probe/1'"),
        (lambda f: f.__delitem__("labels"), r"has no dataset 'labels'; it holds \['images', 'seg'\]"),
        (lambda f: f.__delitem__("images"), r"has no dataset 'images'"),
        (
            lambda f: (f.__delitem__("labels"), f.create_dataset("labels", data=np.zeros(4, np.int32))),
            r"datasets of different lengths: images 5, labels 4, seg 5",
        ),
        (
            lambda f: (f.__delitem__("seg"), f.create_dataset("seg", data=np.zeros((6, 1, 2, 2), np.uint16))),
            r"datasets of different lengths: images 5, labels 5, seg 6",
        ),
    ],
)
def test_read_errors(tmp_path, change, match):
    path = tmp_path / "probe.h5"
    make_probe().to_h5(path)
    edit(path, change)
    with pytest.raises(ValueError, match=match):
        ProbeSet.from_h5(path)


def test_bad_contents_are_validated(tmp_path):
    path = tmp_path / "probe.h5"
    make_probe().to_h5(path)
    edit(path, lambda f: f.attrs.__setitem__("concepts", json.dumps([{"name": "red", "category": "color"}])))
    with pytest.raises(ValueError, match=r"seg holds concept id \d; valid ids are 0 \(unlabeled\) to 1"):
        ProbeSet.from_h5(path)
