"""Probe sets: the fixed, ordered images a recorder shows the network at each checkpoint."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from recorder.schema import Concept

__all__ = ["ProbeSet", "normalize_concepts"]

_HASH_CHUNK = 256  # images per chunk when hashing or making thumbnails


def normalize_concepts(concepts) -> list[Concept]:
    """Concepts given as `Concept`, `(name, category)` or `{"name", "category"}` -> `Concept`."""
    out = []
    for i, c in enumerate(concepts or []):
        if isinstance(c, Concept):
            out.append(c)
        elif isinstance(c, dict) and {"name", "category"} <= set(c):
            out.append(Concept(str(c["name"]), str(c["category"])))
        elif isinstance(c, (tuple, list)) and len(c) == 2:
            out.append(Concept(str(c[0]), str(c[1])))
        else:
            raise ValueError(
                f"concept {i} is {c!r}; expected a Concept, a (name, category) pair "
                "or a dict with keys 'name' and 'category'"
            )
    return out


_PIXEL_CHANNELS = (1, 3, 4)  # usual channel counts of uint8 pixels: gray, RGB, RGBA


def _per_channel(name: str, value, channels: int, default: float) -> tuple[float, ...]:
    """`value` (None, a number, or one number per channel) as a tuple of `channels` floats."""
    if value is None:
        return (default,) * channels
    vals = tuple(float(v) for v in np.asarray(value, dtype=np.float64).reshape(-1))
    if len(vals) == 1:
        return vals * channels
    if len(vals) != channels:
        raise ValueError(f"{name} must have 1 or {channels} values (one per image channel), got {value!r}")
    return vals


def _images_layout(images: torch.Tensor) -> str:
    """"pixels" for uint8 `[N, H, W, C]`, "float" for float `[N, C, H, W]`;
    a ValueError naming the shape otherwise."""
    shape = tuple(images.shape)
    expected = (f"images must be uint8 pixels [N, H, W, C] or float model inputs [N, C, H, W], "
                f"got shape {shape} ({images.dtype})")
    if images.ndim != 4:
        raise ValueError(expected)
    if images.dtype == torch.uint8:
        if shape[1] in (1, 3) and shape[-1] not in _PIXEL_CHANNELS:
            raise ValueError(expected + "; this looks channels-first: pass images.permute(0, 2, 3, 1)")
        return "pixels"
    if images.is_floating_point():
        return "float"
    raise ValueError(expected)


def _as_tensor(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    arr = np.ascontiguousarray(x)
    return torch.from_numpy(arr if arr.flags.writeable else arr.copy())


class ProbeSet(torch.utils.data.Dataset):
    """A fixed, ordered set of probe images with optional class labels and segmentations.

        probe = ProbeSet(pixels, labels, ["cat", "dog"], mean=MEAN, std=STD)
        probe = ProbeSet.from_h5("probe.h5")          # or ProbeSet.from_dataset(ds, classes)
        x = probe.batch(range(16))                    # float32 [16, C, H, W] for the model
        item = probe[0]    # {"image": [C, H, W] float32, "label": int, "seg": [L, h, w] long}

    `images` are uint8 pixels `[N, H, W, C]` (any C; `[N, H, W]` for gray),
    fed to the model as `(pixels / 255 - mean) / std` (CHW float32), or float images
    `[N, C, H, W]` (any C) already prepared for the model (kept as they are; `mean`/`std` then describe the
    normalization they carry and are used for thumbnails and `to_h5` only).
    The probe keeps views of the arrays it is given: do not modify them afterwards.
    `labels` are class ids in `[0, len(classes))`, or -1 for an image without a
    class. `seg` is an integer array `[N, L, h, w]` of concept ids, 1-based into
    `concepts` (0 = unlabeled). The order is fixed: the probe pass never shuffles.
    """

    def __init__(
        self,
        images,
        labels=None,
        classes: Sequence[str] | None = None,
        *,
        seg=None,
        concepts=None,
        mean=None,
        std=None,
        source: str = "memory",
    ):
        images = _as_tensor(images)
        if images.dtype == torch.uint8 and images.ndim == 3:  # [N, H, W] gray pixels
            images = images[..., None]
        layout = _images_layout(images)
        n = images.shape[0]
        if n == 0:
            raise ValueError("probe is empty: images has no items (N == 0); give at least one image")
        if layout == "pixels":  # (N, H, W, C) uint8
            self._pixels: torch.Tensor | None = images.contiguous()
            self._float: torch.Tensor | None = None
            self._channels = images.shape[-1]
            self._size = tuple(images.shape[1:3])
        else:  # (N, C, H, W) float
            self._pixels, self._float = None, images.to(torch.float32).contiguous()
            self._channels = images.shape[1]
            self._size = tuple(images.shape[2:])

        self._classes = [] if classes is None else list(classes)
        bad = [c for c in self._classes if not isinstance(c, str)]
        if bad:
            raise ValueError(f"classes must be strings, got {bad[0]!r}")
        dup = sorted({c for c in self._classes if self._classes.count(c) > 1})
        if dup:
            raise ValueError(f"classes must be unique, {dup[0]!r} appears more than once")
        self._labels = self._check_labels(labels, n)

        self._concepts = normalize_concepts(concepts)
        self._seg = self._check_seg(seg, n)

        self._mean = _per_channel("mean", mean, self._channels, 0.0)
        self._std = _per_channel("std", std, self._channels, 1.0)
        if any(s == 0 for s in self._std):
            raise ValueError(f"std must not contain 0, got {self._std}")
        self._mean_t = torch.tensor(self._mean, dtype=torch.float32).view(1, -1, 1, 1)
        self._std_t = torch.tensor(self._std, dtype=torch.float32).view(1, -1, 1, 1)
        self._source = str(source)
        self._fingerprint: str | None = None

    def _check_labels(self, labels, n: int) -> torch.Tensor:
        if labels is None:
            return torch.full((n,), -1, dtype=torch.long)
        arr = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
        if arr.ndim != 1 or len(arr) != n:
            raise ValueError(f"labels must have shape [N] = [{n}] like images, got {arr.shape}")
        if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"labels must be integers, got dtype {arr.dtype}")
        n_cls = len(self._classes)
        bad = np.flatnonzero((arr != -1) & ((arr < 0) | (arr >= n_cls)))
        if len(bad):
            i = int(bad[0])
            if not n_cls:
                raise ValueError(
                    f"label {int(arr[i])} at index {i} needs class names: pass classes=[...] with one "
                    f"name per label id (ids 0..{int(arr.max())} here), or labels=None for a probe "
                    "without classes")
            raise ValueError(f"label {int(arr[i])} at index {i} is out of range; valid: [0, {n_cls}) "
                             f"for classes {self._classes}, or -1 for an image without a class")
        return torch.from_numpy(arr.astype(np.int64))

    def _check_seg(self, seg, n: int) -> torch.Tensor | None:
        if seg is None:
            return None
        arr = seg.cpu().numpy() if isinstance(seg, torch.Tensor) else np.asarray(seg)
        if arr.ndim != 4:
            raise ValueError(f"seg must have shape [N, L, h, w], got {arr.shape}")
        if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"seg must hold integer concept ids, got dtype {arr.dtype}")
        if arr.shape[0] != n:
            raise ValueError(f"seg has {arr.shape[0]} items but images has {n}; they must match")
        if arr.size:
            lo, hi = int(arr.min()), int(arr.max())
            if lo < 0 or hi > len(self._concepts):
                bad = lo if lo < 0 else hi
                raise ValueError(
                    f"seg holds concept id {bad}; valid ids are 0 (unlabeled) to "
                    f"{len(self._concepts)} (1-based into {len(self._concepts)} concepts)"
                )
        if arr.shape[1] == 0:  # no segmentation layers: the same as no seg
            return None
        dtype = torch.int16 if len(self._concepts) < 2**15 else torch.int32
        return torch.from_numpy(np.ascontiguousarray(arr)).to(dtype)

    # ------------------------------------------------------------ properties
    @property
    def classes(self) -> list[str]:
        return list(self._classes)

    @property
    def concepts(self) -> list[Concept]:
        return list(self._concepts)

    @property
    def labels(self) -> torch.Tensor:
        """Class ids, long `[N]`, -1 for images without a class (a copy)."""
        return self._labels.clone()

    @property
    def has_classes(self) -> bool:
        return len(self._classes) > 0

    @property
    def has_seg(self) -> bool:
        return self._seg is not None and self._seg.shape[1] > 0

    @property
    def channels(self) -> int:
        """Channels of the model input (1 for gray, 3 for RGB, any for float inputs)."""
        return self._channels

    @property
    def image_size(self) -> tuple[int, int]:
        return self._size

    @property
    def seg_size(self) -> tuple[int, int] | None:
        return tuple(self._seg.shape[2:]) if self.has_seg else None

    @property
    def mean(self) -> tuple[float, ...]:
        return self._mean

    @property
    def std(self) -> tuple[float, ...]:
        return self._std

    @property
    def source(self) -> str:
        return self._source

    @property
    def is_pixels(self) -> bool:
        """True when images are stored as uint8 pixels, False for float model inputs."""
        return self._pixels is not None

    # ------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self._labels)

    def _index(self, indices) -> torch.Tensor:
        if isinstance(indices, slice):
            indices = range(len(self))[indices]
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64).reshape(-1))
        if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= len(self)):
            bad = int(idx.min()) if int(idx.min()) < 0 else int(idx.max())
            raise IndexError(f"probe index {bad} is out of range [0, {len(self)})")
        return idx

    def __getitem__(self, i: int) -> dict:
        if isinstance(i, torch.Tensor) and i.ndim == 0:
            i = int(i)
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"probe index must be an int, got {type(i).__name__}")
        if not 0 <= i < len(self):
            raise IndexError(f"probe index {i} is out of range [0, {len(self)})")
        return {
            "image": self.batch([i])[0],
            "label": int(self._labels[i]),
            "seg": self.seg_batch([i])[0],
        }

    def batch(self, indices) -> torch.Tensor:
        """Model inputs of `indices`: float32 `[B, C, H, W]`."""
        idx = self._index(indices)
        if self._float is not None:
            return self._float[idx]
        x = self._pixels[idx].permute(0, 3, 1, 2).to(torch.float32) / 255.0
        return ((x - self._mean_t) / self._std_t).contiguous()

    def labels_of(self, indices) -> torch.Tensor:
        """Class ids of `indices`: long `[B]`."""
        return self._labels[self._index(indices)]

    def seg_batch(self, indices) -> torch.Tensor:
        """Segmentations of `indices`: long `[B, L, h, w]` (`[B, 0, H, W]` without seg)."""
        idx = self._index(indices)
        if self._seg is None:
            return torch.zeros((len(idx), 0, *self._size), dtype=torch.long)
        return self._seg[idx].long()

    def shard(self, rank: int, world_size: int) -> tuple[int, int]:
        """Contiguous `(start, stop)` range of `rank` (np.array_split over range(N))."""
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        size, extra = divmod(len(self), world_size)
        start = rank * size + min(rank, extra)
        return start, start + size + (rank < extra)

    # ------------------------------------------------------------ display, identity
    def pixels(self, max_size: int | None = None, *, rgb: bool = False) -> np.ndarray:
        """uint8 `[N, h, w, C]` pixels (float inputs un-normalized with `mean`/`std`),
        area-downscaled to at most `max_size` per side; `rgb=True` gives `[N, h, w, 3]` for
        display (gray replicated, alpha dropped, other channel counts averaged to gray)."""
        if max_size is not None and (isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 1):
            raise ValueError(f"max_size must be a positive int, got {max_size!r}")
        h, w = self._size
        scale = 1.0 if max_size is None else min(1.0, max_size / max(h, w))
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        out = np.empty((len(self), *size, 3 if rgb else self._channels), dtype=np.uint8)
        for start in range(0, len(self), _HASH_CHUNK):
            sl = slice(start, start + _HASH_CHUNK)
            if self._pixels is not None and size == self._size:
                x = self._pixels[sl].permute(0, 3, 1, 2)  # (B, C, H, W) uint8
            else:
                if self._pixels is not None:
                    x = self._pixels[sl].permute(0, 3, 1, 2).to(torch.float32)
                else:
                    x = (self._float[sl] * self._std_t + self._mean_t) * 255.0
                if size != self._size:
                    x = F.interpolate(x, size=size, mode="area")
                x = x.round().clamp(0, 255).to(torch.uint8)
            out[sl] = (_as_rgb(x) if rgb else x).permute(0, 2, 3, 1).numpy()
        return out

    def thumbnails(self, max_size: int = 128) -> np.ndarray:
        """uint8 `[N, h, w, 3]` RGB for display, area-downscaled to at most `max_size` per side."""
        return self.pixels(max_size, rgb=True)

    @property
    def fingerprint(self) -> str:
        """sha256 (first 16 hex) of images, labels, seg, classes, concepts, mean and std."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            images = self._pixels if self._pixels is not None else self._float
            meta = {
                "images": [str(images.dtype), list(images.shape)],
                "seg": None if self._seg is None else list(self._seg.shape),
                "classes": self._classes,
                "concepts": [c.to_dict() for c in self._concepts],
                "mean": self._mean,
                "std": self._std,
            }
            h.update(json.dumps(meta, sort_keys=True).encode())
            h.update(self._labels.numpy().tobytes())
            for start in range(0, len(self), _HASH_CHUNK):
                sl = slice(start, start + _HASH_CHUNK)
                h.update(images[sl].numpy().tobytes())
                if self._seg is not None:  # canonical int32 so storage dtype does not matter
                    h.update(self._seg[sl].to(torch.int32).numpy().tobytes())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def info(self) -> dict:
        """`{"source", "n_images", "fingerprint"}` for the run store's `probe` attribute."""
        return {"source": self._source, "n_images": len(self), "fingerprint": self.fingerprint}

    def __repr__(self) -> str:
        kind = "pixels" if self.is_pixels else "float"
        return (
            f"ProbeSet(n={len(self)}, size={self._size}, {kind}, classes={len(self._classes)}, "
            f"concepts={len(self._concepts)}, source={self._source!r})"
        )

    # ------------------------------------------------------------ constructors, io
    @classmethod
    def from_dataset(cls, ds, classes=None, *, mean=None, std=None, limit=None):
        """Probe from any dataset of `(image, label)` pairs, in dataset order.

        Images may be float tensors `[C, H, W]` (kept as model inputs; `mean`/`std`
        describe the normalization the dataset applied) or PIL images / uint8 HWC or
        HW arrays (kept as pixels, normalized with `mean`/`std`; gray stays 1 channel).
        See `recorder.probe.dataset`.
        """
        from recorder.probe.dataset import read_dataset

        return cls(classes=classes, mean=mean, std=std, **read_dataset(ds, limit))

    def to_h5(self, path) -> None:
        """Write the probe as HDF5 (see `recorder.probe.h5` for the format)."""
        from recorder.probe.h5 import write_h5

        pixels = self._pixels.numpy() if self.is_pixels else self.pixels()
        write_h5(path, images=pixels, labels=self.labels.numpy(), classes=self.classes,
                 concepts=[c.to_dict() for c in self.concepts], mean=self.mean, std=self.std,
                 seg=self._seg.numpy() if self.has_seg else None)

    @classmethod
    def from_h5(cls, path) -> "ProbeSet":
        """Read a probe written by `to_h5` (see `recorder.probe.h5`)."""
        from recorder.probe.h5 import read_h5

        return cls(**read_h5(path))

    @classmethod
    def from_broden(cls, root, categories=None, split=None, *,
                    mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)) -> "ProbeSet":
        """Read a Broden folder of NetDissect (see `recorder.probe.broden`)."""
        from recorder.probe.broden import read_broden

        return cls(**read_broden(root, categories, split, mean=mean, std=std))


def _as_rgb(x: torch.Tensor) -> torch.Tensor:
    """uint8 `(B, C, H, W)` -> `(B, 3, H, W)`: gray replicated, alpha dropped, others averaged."""
    c = x.shape[1]
    if c in (3, 4):
        return x[:, :3]
    gray = x if c == 1 else x.float().mean(1, keepdim=True).round().to(torch.uint8)
    return gray.expand(-1, 3, -1, -1)
