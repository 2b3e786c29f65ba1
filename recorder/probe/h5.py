"""HDF5 files of probe sets: `ProbeSet.to_h5(path)` and `ProbeSet.from_h5(path)`.

    probe.to_h5("probe.h5")
    same = ProbeSet.from_h5("probe.h5")       # same pixels, labels, seg, fingerprint

Layout (`format` attribute "tuneline.probe/1"):

- `images`: uint8 `[N, H, W, C]`, chunked one image per chunk `(1, H, W, C)`;
- `labels`: int32 `[N]`, -1 for an image without a class;
- `seg` (optional): uint16 `[N, L, h, w]` concept ids, 1-based into `concepts`
  (int32 when an id exceeds 65535), chunked `(1, L, h, w)`, gzip-compressed;
- attributes: `classes` and `concepts` as JSON strings (concepts a list of
  `{name, category}`), `mean` and `std` (float64, one value per channel), `format`.

A probe of float images is written as uint8 pixels: its images are denormalized
with its `mean`/`std` (`ProbeSet.pixels()`: full size, every channel), and `mean`/`std` are kept, so
the file reads back as a pixel probe whose model inputs equal the original ones up
to 8-bit rounding (its fingerprint therefore differs from the float probe's).
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

__all__ = ["FORMAT", "read_h5", "write_h5"]

FORMAT = "tuneline.probe/1"


def write_h5(path, *, images: np.ndarray, labels: np.ndarray, classes: list[str], concepts: list[dict],
             mean, std, seg: np.ndarray | None = None) -> None:
    """Write probe arrays to the HDF5 file `path` (overwritten when it exists).

    `images` uint8 `[N, H, W, C]`, `labels` int `[N]`, `seg` int `[N, L, h, w]` or None,
    `concepts` as `{name, category}` dicts.
    """
    h, w = images.shape[1:3]
    with h5py.File(path, "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["classes"] = json.dumps(list(classes))
        f.attrs["concepts"] = json.dumps(list(concepts))
        f.attrs["mean"] = np.asarray(mean, dtype=np.float64)
        f.attrs["std"] = np.asarray(std, dtype=np.float64)
        f.create_dataset("images", data=images, chunks=(1, h, w, images.shape[-1]))
        f.create_dataset("labels", data=np.asarray(labels).astype(np.int32))
        if seg is not None:
            dtype = np.uint16 if len(concepts) <= np.iinfo(np.uint16).max else np.int32
            f.create_dataset(
                "seg", data=seg.astype(dtype), chunks=(1, *seg.shape[1:]), compression="gzip"
            )


def _attr(f: h5py.File, name: str, default):
    value = f.attrs.get(name, default)
    return value.decode() if isinstance(value, bytes) else value


def read_h5(path) -> dict:
    """The arrays of a probe file written by `write_h5`: the keyword arguments of
    `ProbeSet(images, labels, classes, seg=, concepts=, mean=, std=, source=)`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"probe file {str(path)!r} does not exist")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"probe file {str(path)!r} is not an HDF5 file: {e}") from None
    with f:
        fmt = _attr(f, "format", None)
        if fmt != FORMAT:
            raise ValueError(f"probe file {str(path)!r} has format {fmt!r}; expected {FORMAT!r}")
        missing = [name for name in ("images", "labels") if name not in f]
        if missing:
            raise ValueError(
                f"probe file {str(path)!r} has no dataset {missing[0]!r}; it holds {sorted(f)}"
            )
        names = [name for name in ("images", "labels", "seg") if name in f]
        lengths = {name: f[name].shape[0] if f[name].ndim else None for name in names}
        if len(set(lengths.values())) > 1:
            listed = ", ".join(f"{name} {n}" for name, n in lengths.items())
            raise ValueError(
                f"probe file {str(path)!r} has datasets of different lengths: {listed}"
            )
        images = f["images"][()]
        labels = f["labels"][()].astype(np.int64)
        seg = f["seg"][()] if "seg" in f else None
        classes = json.loads(_attr(f, "classes", "[]"))
        concepts = json.loads(_attr(f, "concepts", "[]"))
        mean = f.attrs.get("mean", None)
        std = f.attrs.get("std", None)
    if seg is not None and seg.dtype == np.uint16:
        seg = seg.astype(np.int32)  # torch has no general uint16 support
    return dict(images=images, labels=labels, classes=classes, seg=seg, concepts=concepts,
                mean=mean, std=std, source=str(path))
