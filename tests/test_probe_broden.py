"""recorder.probe.broden through ProbeSet.from_broden on a tiny Broden folder built here."""

from __future__ import annotations

import csv
import re

import numpy as np
import pytest
import torch
from PIL import Image

from recorder.probe import ProbeSet
from recorder.schema import Concept

H = W = 16  # image size
SH = SW = 8  # segmentation size
# global number -> (name, label.csv category cell); 300 > 255 exercises the G channel
LABELS = {
    1: ("sky", "object(10)"),
    2: ("tree", "object(5)"),
    3: ("wheel", "part(7);object(2)"),
    4: ("door", "object(3);part(3)"),  # a tie: the first category wins
    5: ("street", "scene(2)"),
    6: ("beach", "scene(1)"),
    300: ("window", "part(4)"),
}
# concept ids (1-based, global-number order) when every category is loaded
CID = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 300: 7}
ALL_CONCEPTS = [
    Concept("sky", "object"), Concept("tree", "object"), Concept("wheel", "part"),
    Concept("door", "object"), Concept("street", "scene"), Concept("beach", "scene"),
    Concept("window", "part"),
]


def seg_map(fill=0, **cells):
    """[SH, SW] global ids: `fill` everywhere, then `cells` like top=1 / left=300 / corner=0."""
    m = np.full((SH, SW), fill, dtype=np.int64)
    regions = {"top": np.s_[: SH // 2], "bottom": np.s_[SH // 2:], "left": np.s_[:, : SW // 2],
               "corner": np.s_[0, 0]}
    for region, value in cells.items():
        m[regions[region]] = value
    return m


def write_seg(path, ids):
    """Broden encoding: R = id % 256, G = id // 256, B = noise (ignored by readers)."""
    ids = np.asarray(ids)
    rgb = np.stack([ids % 256, ids // 256, np.full_like(ids, 77)], axis=-1).astype(np.uint8)
    Image.fromarray(rgb, "RGB").save(path)


# image -> (split, object PNG maps, part PNG maps, scene ids)
ROWS = {
    "img0.png": ("train", [seg_map(top=1, bottom=2)], [seg_map(corner=3), seg_map(left=300)], [5]),
    "img1.png": ("train", [seg_map(4, corner=0)], [], [5, 6]),
    "img2.png": ("val", [], [seg_map(bottom=300)], [6]),  # no object column
    "img3.png": ("val", [seg_map(2)], [], []),
}


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def make_broden(root):
    images = root / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    index, pixels = [], {}
    for name, (split, objects, parts, scenes) in ROWS.items():
        pixels[name] = rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)
        Image.fromarray(pixels[name]).save(images / name)
        stem = name.split(".")[0]
        cells = []
        for cat, maps in (("object", objects), ("part", parts)):
            files = [f"{stem}_{cat}_{k}.png" for k in range(len(maps))]
            for f, m in zip(files, maps):
                write_seg(images / f, m)
            cells.append(";".join(files))
        cells.append(";".join(str(s) for s in scenes))
        index.append([name, split, H, W, SH, SW, *cells])
    header = ["image", "split", "ih", "iw", "sh", "sw", "object", "part", "scene"]
    write_csv(root / "index.csv", header, index)
    write_csv(root / "label.csv", ["number", "name", "category", "frequency", "coverage", "syns"],
              [[n, name, cat, 1, 0.5, ""] for n, (name, cat) in LABELS.items()])
    write_csv(root / "category.csv", ["name", "first", "last", "count", "frequency"],
              [["object", 1, 4, 3, 3], ["part", 3, 300, 3, 2], ["scene", 5, 6, 2, 3]])
    for cat in ("object", "part", "scene"):
        numbers = [n for n, (_, c) in LABELS.items() if cat in c]
        write_csv(root / f"c_{cat}.csv", ["code", "number", "name", "frequency", "coverage"],
                  [[k + 1, n, LABELS[n][0], 1, 0.5] for k, n in enumerate(numbers)])
    return pixels


@pytest.fixture
def broden(tmp_path):
    root = tmp_path / "broden"
    pixels = make_broden(root)
    return root, pixels


# ---------------------------------------------------------------- reading
def test_concepts_images_and_labels(broden):
    root, pixels = broden
    probe = ProbeSet.from_broden(root)
    assert probe.concepts == ALL_CONCEPTS
    assert len(probe) == 4 and probe.classes == [] and probe.labels.tolist() == [-1] * 4
    assert probe.source == str(root) and probe.image_size == (H, W) and probe.seg_size == (SH, SW)
    assert np.array_equal(probe.thumbnails(max_size=H), np.stack(list(pixels.values())))
    assert probe.mean == (0.485, 0.456, 0.406) and probe.std == (0.229, 0.224, 0.225)


def test_seg_layers_values_and_padding(broden):
    probe = ProbeSet.from_broden(broden[0])
    seg = probe.seg_batch(range(4))
    assert seg.shape == (4, 4, SH, SW)  # L = 4: img0 has 1 object + 2 part PNGs + 1 scene id
    # img0: object, part, part, scene
    assert seg[0, 0, 0, 0] == CID[1] and seg[0, 0, -1, 0] == CID[2]
    assert seg[0, 1, 0, 0] == CID[3] and seg[0, 1].count_nonzero() == 1
    assert seg[0, 2, 0, 0] == CID[300] and seg[0, 2, 0, -1] == 0  # id 300 = R 44 + 256 * G 1
    assert (seg[0, 3] == CID[5]).all()  # image-level label fills the layer
    # img1: object, scene, scene, padding
    assert seg[1, 0, 0, 0] == 0 and seg[1, 0, 3, 3] == CID[4]
    assert (seg[1, 1] == CID[5]).all() and (seg[1, 2] == CID[6]).all() and (seg[1, 3] == 0).all()
    # img2 (no object column): part, scene, padding
    assert seg[2, 0, -1, 0] == CID[300] and seg[2, 0, 0, 0] == 0
    assert (seg[2, 1] == CID[6]).all() and (seg[2, 2:] == 0).all()
    # img3: object only
    assert (seg[3, 0] == CID[2]).all() and (seg[3, 1:] == 0).all()


def test_getitem_shapes(broden):
    item = ProbeSet.from_broden(broden[0])[2]
    assert item["image"].shape == (3, H, W) and item["image"].dtype == torch.float32
    assert item["label"] == -1
    assert item["seg"].shape == (4, SH, SW) and item["seg"].dtype == torch.long


def test_categories_filter(broden):
    probe = ProbeSet.from_broden(broden[0], categories=["part"])
    # door counts object(3);part(3) but only part is loaded
    assert probe.concepts == [Concept(n, "part") for n in ("wheel", "door", "window")]
    seg = probe.seg_batch(range(4))
    assert seg.shape == (4, 2, SH, SW)
    assert seg[0, 0, 0, 0] == 1 and seg[0, 1, 0, 0] == 3 and seg[2, 0, -1, 0] == 3
    assert (seg[1] == 0).all() and (seg[3] == 0).all()


def test_image_level_category_alone(broden):
    probe = ProbeSet.from_broden(broden[0], categories=["scene"])
    assert [c.name for c in probe.concepts] == ["street", "beach"]
    seg = probe.seg_batch(range(4))
    assert seg.shape == (4, 2, SH, SW)
    assert (seg[1, 0] == 1).all() and (seg[1, 1] == 2).all() and (seg[3] == 0).all()


def test_split_filter(broden):
    root, pixels = broden
    probe = ProbeSet.from_broden(root, split="val")
    assert len(probe) == 2
    expected = np.stack([pixels["img2.png"], pixels["img3.png"]])
    assert np.array_equal(probe.thumbnails(max_size=H), expected)
    assert probe.seg_batch([0]).shape == (1, 2, SH, SW)  # L is the max over the kept rows


def test_h5_roundtrip(broden, tmp_path):
    probe = ProbeSet.from_broden(broden[0])
    probe.to_h5(tmp_path / "probe.h5")
    back = ProbeSet.from_h5(tmp_path / "probe.h5")
    assert back.concepts == probe.concepts
    assert torch.equal(back.seg_batch(range(4)), probe.seg_batch(range(4)))
    assert torch.equal(back.batch(range(4)), probe.batch(range(4)))


# ---------------------------------------------------------------- errors
def test_seg_size_mismatch(broden):
    root = broden[0]
    write_seg(root / "images" / "img1_object_0.png", np.full((4, 4), 4))
    with pytest.raises(ValueError, match=r"img1_object_0\.png: segmentation is 4x4.*sh, sw = 8, 8"):
        ProbeSet.from_broden(root)


def test_unknown_category(broden):
    with pytest.raises(ValueError, match=r"'bogus'.*valid: \['object', 'part', 'scene'\]"):
        ProbeSet.from_broden(broden[0], categories=["object", "bogus"])


def test_unknown_split(broden):
    with pytest.raises(ValueError, match=r"'test'.*\['train', 'val'\]"):
        ProbeSet.from_broden(broden[0], split="test")


def test_label_outside_label_csv_in_png(broden):
    root = broden[0]
    write_seg(root / "images" / "img0_part_1.png", seg_map(left=999))
    with pytest.raises(ValueError, match=r"img0_part_1\.png: label id 999 is not in label\.csv"):
        ProbeSet.from_broden(root)


def test_label_outside_label_csv_in_index(broden):
    root = broden[0]
    text = (root / "index.csv").read_text().replace(",5;6", ",5;42")
    (root / "index.csv").write_text(text)
    with pytest.raises(ValueError, match=r"row 3 \(img1\.png\): label id 42 is not in label\.csv"):
        ProbeSet.from_broden(root)


def test_missing_files(broden):
    root = broden[0]
    for name in ("img2_part_0.png", "img1.png"):  # img1 is read first, so check it last
        (root / "images" / name).unlink()
        with pytest.raises(FileNotFoundError, match=re.escape(str(root / "images" / name))):
            ProbeSet.from_broden(root)
    (root / "label.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"label\.csv"):
        ProbeSet.from_broden(root)
    (root / "index.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"index\.csv"):
        ProbeSet.from_broden(root)


def test_image_size_mismatch(broden):
    root = broden[0]
    Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(root / "images" / "img3.png")
    with pytest.raises(ValueError, match=r"img3\.png: image is 12x16.*ih, iw = 16, 16"):
        ProbeSet.from_broden(root)
