"""Any dataset of `(image, label)` pairs as the arrays of a probe set.

    arrays = read_dataset(torchvision.datasets.CIFAR10(root, train=False), limit=500)
    probe = ProbeSet(classes=CIFAR10_CLASSES, mean=MEAN, std=STD, **arrays)
    # the same as ProbeSet.from_dataset(ds, CIFAR10_CLASSES, mean=MEAN, std=STD, limit=500)

Images in dataset order: float tensors `[C, H, W]` (model inputs) stacked as
`[N, C, H, W]` float32, or PIL images and uint8 `[H, W, C]` / `[H, W]` arrays stacked as
`[N, H, W, C]` uint8 pixels (gray stays one channel). Labels are ints. Every image must
have the kind and shape of the first; a bad item is named by its index.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["read_dataset"]


def read_dataset(ds, limit: int | None = None) -> dict:
    """`{"images", "labels", "source"}` from the first `limit` items of `ds` (all by default)."""
    images, labels, kind, shape = [], [], None, None
    for i, item in enumerate(ds):
        if limit is not None and i >= limit:
            break
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise ValueError(
                f"dataset item {i} is not an (image, label) pair: got {type(item).__name__}"
                + (f" of length {len(item)}" if isinstance(item, (tuple, list)) else "")
            )
        img, label = item
        img_kind, img = _dataset_image(img, i)
        if kind is None:
            kind, shape = img_kind, img.shape
        elif img_kind != kind or img.shape != shape:
            raise ValueError(
                f"dataset item {i} has a {img_kind} image of shape {tuple(img.shape)}, but "
                f"item 0 has a {kind} image of shape {tuple(shape)}; all must match"
            )
        images.append(img)
        labels.append(_dataset_label(label, i))
    if not images:
        raise ValueError("probe is empty: the dataset yielded no items")
    return {"images": torch.stack(images), "labels": np.asarray(labels, dtype=np.int64),
            "source": f"dataset:{type(ds).__name__}"}


def _dataset_image(img, i: int) -> tuple[str, torch.Tensor]:
    """('float', [C, H, W] float32) or ('uint8', [H, W, C] uint8) for one dataset image."""
    if hasattr(img, "convert") and hasattr(img, "mode"):  # PIL image: gray stays gray
        img = np.asarray(img.convert("L" if img.mode in ("1", "L", "I", "I;16", "F") else "RGB"))
    if isinstance(img, torch.Tensor):
        t = img.detach().cpu()
    else:
        arr = np.ascontiguousarray(img)
        t = torch.from_numpy(arr if arr.flags.writeable else arr.copy())
    if t.is_floating_point() and t.ndim == 3:
        return "float", t.to(torch.float32)
    if t.dtype == torch.uint8 and t.ndim == 2:
        return "uint8", t[..., None]
    if t.dtype == torch.uint8 and t.ndim == 3:
        return "uint8", t
    raise ValueError(
        f"dataset item {i} has an image of shape {tuple(t.shape)} ({t.dtype}); expected a "
        "float tensor [C, H, W], a PIL image or a uint8 array [H, W, C] or [H, W]"
    )


def _dataset_label(label, i: int) -> int:
    if isinstance(label, torch.Tensor) and label.numel() == 1 and not label.is_floating_point():
        return int(label.item())
    if isinstance(label, (int, np.integer)) and not isinstance(label, bool):
        return int(label)
    raise ValueError(f"dataset item {i} has label {label!r}; expected an int")
