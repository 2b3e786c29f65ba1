"""Probe sets from the Broden data set layout of NetDissect (Bau et al. 2017).

    probe = read_broden("broden1_224", categories=["object", "part"], split="val")
    probe = ProbeSet.from_broden("broden1_224")          # the same, through ProbeSet
    probe[0]["seg"]        # long [L, sh, sw] concept ids, 1-based into probe.concepts

Layout read from `root`:

- `index.csv`: `image,split,ih,iw,sh,sw,<one column per category>`. `image` is a
  path under `images/`. A category cell is empty, a `;`-separated list of
  segmentation PNGs under `images/` (pixel categories: object, part, material,
  color), or `;`-separated integer label ids (image-level categories: scene,
  texture; the label covers the whole image).
- `label.csv`: `number,name,category,...`; `number` is the global label id and
  `category` is like `object(123);part(4)`: a label's category is the loaded one
  with the largest count (first on ties).
- `category.csv` and `c_<category>.csv` are read, when present, for validation only.
- Segmentation PNGs hold the global label id as `R + 256 * G` (0 = unlabeled).

Concepts are the labels of the loaded categories in global-number order. Each PNG
and each image-level id of an image is one segmentation layer; images with fewer
layers are padded with zero layers. A label id that is in `label.csv` but belongs to
no loaded category is read as 0 (unlabeled). Broden images have no classes.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from recorder.schema import Concept

__all__ = ["read_broden"]

_FIXED = ("image", "split", "ih", "iw", "sh", "sw")
_CAT_COUNT = re.compile(r"^\s*([^()]+?)\s*(?:\((\d+)\))?\s*$")
_LUT_SIZE = 1 << 16  # every id that R + 256 * G can encode


def _read_csv(path: Path, required=True) -> tuple[list[str], list[dict]] | None:
    if not path.is_file():
        if required:
            raise FileNotFoundError(f"Broden file not found: {path}")
        return None
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def _split(cell) -> list[str]:
    return [t.strip() for t in (cell or "").split(";") if t.strip()]


def _int(value, what: str) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise ValueError(f"{what} must be an integer, got {value!r}") from None


def _parse_categories(cell: str, number: int) -> list[tuple[str, int]]:
    """`"object(123);part(4)"` -> `[("object", 123), ("part", 4)]` (no count: 0)."""
    out = []
    for token in _split(cell):
        m = _CAT_COUNT.match(token)
        if m is None:
            raise ValueError(f"label.csv: label {number} has a malformed category {token!r}")
        out.append((m.group(1), int(m.group(2) or 0)))
    return out


def _read_labels(root: Path, loaded: list[str]):
    """(concepts, lut): lut maps a global id to its concept id, 0 if not loaded, -1 if unknown."""
    _, rows = _read_csv(root / "label.csv")
    labels: dict[int, tuple[str, list[tuple[str, int]]]] = {}
    for row in rows:
        number = _int(row.get("number"), "label.csv: number")
        if number == 0:  # the unlabeled entry some releases carry
            continue
        if number < 0 or number >= _LUT_SIZE:
            raise ValueError(f"label.csv: label number {number} is outside [1, {_LUT_SIZE})")
        if number in labels:
            raise ValueError(f"label.csv: label number {number} appears more than once")
        name = (row.get("name") or "").strip()
        labels[number] = (name, _parse_categories(row.get("category"), number))
    lut = np.full(_LUT_SIZE, -1, dtype=np.int32)
    lut[list(labels)] = 0
    lut[0] = 0
    concepts = []
    for number in sorted(labels):
        name, cats = labels[number]
        cats = [(c, n) for c, n in cats if c in loaded]
        if cats:
            best = max(range(len(cats)), key=lambda i: (cats[i][1], -i))  # first on ties
            concepts.append(Concept(name, cats[best][0]))
            lut[number] = len(concepts)
    return concepts, lut


def _check_tables(root: Path, loaded: list[str], lut: np.ndarray) -> None:
    """Validate `category.csv` and `c_<category>.csv` against index.csv and label.csv."""
    table = _read_csv(root / "category.csv", required=False)
    if table is not None:
        names = [(r.get("name") or "").strip() for r in table[1]]
        missing = [c for c in loaded if c not in names]
        if missing:
            raise ValueError(f"category.csv does not list categories {missing}; it lists {names}")
    for cat in loaded:
        table = _read_csv(root / f"c_{cat}.csv", required=False)
        for row in table[1] if table is not None else []:
            number = _int(row.get("number"), f"c_{cat}.csv: number")
            if not 0 <= number < _LUT_SIZE or lut[number] < 0:
                raise ValueError(f"c_{cat}.csv: label number {number} is not in label.csv")


def _decode_png(path: Path, size: tuple[int, int], lut: np.ndarray) -> np.ndarray:
    """Concept ids `[sh, sw]` of one segmentation PNG (label id = R + 256 * G)."""
    try:
        img = Image.open(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"Broden segmentation not found: {path}") from None
    with img:
        if (img.height, img.width) != size:
            raise ValueError(
                f"{path}: segmentation is {img.height}x{img.width} (h x w), but index.csv "
                f"says sh, sw = {size[0]}, {size[1]}"
            )
        if img.mode in ("L", "I", "I;16"):  # single channel: the value is the label id
            ids = np.asarray(img, dtype=np.int64)
        else:
            a = np.asarray(img if img.mode in ("RGB", "RGBA") else img.convert("RGB"))
            ids = a[..., 0].astype(np.int64) + 256 * a[..., 1].astype(np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= _LUT_SIZE):
        bad = int(ids.min()) if ids.min() < 0 else int(ids.max())
        raise ValueError(f"{path}: label id {bad} is not in label.csv")
    out = lut[ids]
    if (out < 0).any():
        raise ValueError(f"{path}: label id {int(ids[out < 0][0])} is not in label.csv")
    return out


def _read_image(path: Path, size: tuple[int, int]) -> np.ndarray:
    try:
        img = Image.open(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"Broden image not found: {path}") from None
    with img:
        a = np.asarray(img.convert("RGB"))
    if a.shape[:2] != size:
        raise ValueError(
            f"{path}: image is {a.shape[0]}x{a.shape[1]} (h x w), but index.csv says "
            f"ih, iw = {size[0]}, {size[1]}"
        )
    return a


def _shared_size(rows: list[dict], keys: tuple[str, str], row_no: list[int]) -> tuple[int, int]:
    sizes = [tuple(_int(r.get(k), f"index.csv: {k}") for k in keys) for r in rows]
    for i, s in enumerate(sizes):
        if s != sizes[0]:
            raise ValueError(
                f"index.csv row {row_no[i]} ({rows[i]['image']}) has {keys[0]}, {keys[1]} = {s}, "
                f"but row {row_no[0]} has {sizes[0]}; all images must share one size"
            )
    return sizes[0]


def read_broden(root, categories=None, split=None, mean=(0.485, 0.456, 0.406),
                std=(0.229, 0.224, 0.225)) -> dict:
    """Read the Broden folder `root` (see the module docstring): the keyword arguments of
    `ProbeSet(images, labels, classes, seg=, concepts=, mean=, std=, source=)`.

    `categories`: names of index.csv category columns to load (default: all).
    `split`: keep only rows whose `split` column equals it (e.g. "train", "val").
    """
    root = Path(root)
    header, rows = _read_csv(root / "index.csv")
    missing = [c for c in _FIXED if c not in header]
    if missing:
        raise ValueError(f"{root / 'index.csv'} lacks columns {missing}; its header is {header}")
    valid = header[header.index("sw") + 1:]
    if categories is None:
        loaded = list(valid)
    else:
        loaded = [categories] if isinstance(categories, str) else list(categories)
        bad = [c for c in loaded if c not in valid]
        if bad or not loaded:
            raise ValueError(
                f"categories given an invalid value: {bad or loaded!r}; valid: {valid}"
            )
        loaded = list(dict.fromkeys(loaded))
    row_no = list(range(2, len(rows) + 2))  # line numbers in index.csv (header is line 1)
    if split is not None:
        present = sorted({(r.get("split") or "") for r in rows})
        if split not in present:
            raise ValueError(f"split given an invalid value: {split!r}; index.csv has {present}")
        keep = [i for i, r in enumerate(rows) if (r.get("split") or "") == split]
        rows, row_no = [rows[i] for i in keep], [row_no[i] for i in keep]
    if not rows:
        raise ValueError(f"{root / 'index.csv'} lists no images")

    concepts, lut = _read_labels(root, loaded)
    _check_tables(root, loaded, lut)
    img_size = _shared_size(rows, ("ih", "iw"), row_no)
    seg_size = _shared_size(rows, ("sh", "sw"), row_no)
    cells = [[t for c in loaded for t in _split(r.get(c))] for r in rows]
    n_layers = max(len(c) for c in cells)

    images = np.empty((len(rows), *img_size, 3), dtype=np.uint8)
    dtype = np.int16 if len(concepts) < 2**15 else np.int32
    seg = np.zeros((len(rows), n_layers, *seg_size), dtype=dtype)
    images_dir = root / "images"
    for i in tqdm(range(len(rows)), desc="reading Broden", unit="img", delay=1, leave=False):
        images[i] = _read_image(images_dir / rows[i]["image"], img_size)
        for j, token in enumerate(cells[i]):
            if re.fullmatch(r"-?\d+", token):  # image-level label: covers the whole image
                number = int(token)
                if not 0 < number < _LUT_SIZE or lut[number] < 0:
                    raise ValueError(
                        f"index.csv row {row_no[i]} ({rows[i]['image']}): label id {number} "
                        "is not in label.csv"
                    )
                seg[i, j] = lut[number]
            else:
                seg[i, j] = _decode_png(images_dir / token, seg_size, lut)
    return dict(images=images, labels=None, classes=[], seg=seg, concepts=concepts,
                mean=mean, std=std, source=str(root))
