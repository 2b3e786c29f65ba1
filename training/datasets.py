"""Training data: the shapes world, CIFAR-10 and ImageFolder trees, as uint8 pixel sources.

    data = load_data(config)          # config.data: "world" | "cifar10" | "imagefolder"
    x, y = data.train.batch(indices)  # float32 (B, 3, H, W) normalized, int64 (B,)
    data.probe                        # a recorder ProbeSet (world: with concept masks)

Every source hands out uint8 pixels `[B, H, W, 3]` by index and is normalized the
same way as the probe (`(pixels / 255 - mean) / std`). World images are rendered
once per process and kept in memory; CIFAR-10 is read with torchvision's
`CIFAR10(root, download=False)` (which checks the files' md5 sums); an ImageFolder
tree is decoded image by image when a batch asks for it. Real data has no concept
masks: its probe has classes only, so dissection is skipped.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import numpy as np
import torch
import torchvision

from recorder.probe import ProbeSet
from training.config import PROBE_SEED, TrainConfig
from training.world import CLASSES, MEAN, STD, WorldConfig, make_probe, render_batch

__all__ = ["Data", "Split", "augment", "balanced_indices", "batch_indices", "load_data"]

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Split:
    """Images by index from `pixels(indices) -> uint8 [B, H, W, 3]`, labels, normalization."""

    def __init__(self, pixels, labels, mean, std, name: str):
        self._pixels = pixels
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.name = name

    def __len__(self) -> int:
        return len(self.labels)

    def pixels(self, indices) -> torch.Tensor:
        return self._pixels(torch.as_tensor(indices, dtype=torch.int64))

    def batch(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        """(float32 (B, 3, H, W) normalized images, int64 (B,) labels)."""
        indices = torch.as_tensor(indices, dtype=torch.int64)
        x = self.pixels(indices).permute(0, 3, 1, 2).to(torch.float32).div_(255.0)  # (B, 3, H, W)
        return (x - self.mean) / self.std, self.labels[indices]


def _array_split(images: np.ndarray, labels, mean, std, name: str) -> Split:
    images = torch.from_numpy(np.ascontiguousarray(images))  # (N, H, W, 3) uint8
    return Split(lambda idx: images[idx], labels, mean, std, name)


@dataclass
class Data:
    train: Split
    heldout: Split
    probe: ProbeSet
    classes: list[str]


# ------------------------------------------------------------------ the world
@functools.lru_cache(maxsize=4)
def _world_arrays(n: int, seed: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    images, labels, _ = render_batch(n, seed, 0, WorldConfig(size=size))
    return images, labels


@functools.lru_cache(maxsize=2)
def _world_probe(n: int, size: int) -> ProbeSet:
    return make_probe(n, PROBE_SEED, WorldConfig(size=size))


def _world(config: TrainConfig) -> Data:
    size = config.image_size
    train = _array_split(*_world_arrays(config.train_size, config.world_seed, size), MEAN, STD, "world train")
    heldout = _array_split(*_world_arrays(config.heldout_size, config.world_seed + 1, size), MEAN, STD,
                           "world held-out")
    return Data(train, heldout, _world_probe(config.probe_size, size), list(CLASSES))


# ------------------------------------------------------------------ real data
def balanced_indices(labels, n: int) -> np.ndarray:
    """Up to `n` indices taking classes round-robin, each class in data set order."""
    labels = np.asarray(labels)
    per_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    order = [idx[j] for j in range(max(map(len, per_class))) for idx in per_class if j < len(idx)]
    return np.asarray(order[:n], dtype=np.int64)


def _probe_from(split: Split, classes: list[str], n: int, mean, std, source: str) -> ProbeSet:
    idx = balanced_indices(split.labels.numpy(), n)
    return ProbeSet(split.pixels(idx), split.labels[idx], classes, mean=mean, std=std, source=source)


def _cifar10(config: TrainConfig) -> Data:
    root = config.data_root
    try:
        train_ds = torchvision.datasets.CIFAR10(root, train=True, download=False)
        test_ds = torchvision.datasets.CIFAR10(root, train=False, download=False)
    except RuntimeError as exc:
        raise FileNotFoundError(
            f"CIFAR-10 not found under data_root={root!r}: expected {os.path.join(root, 'cifar-10-batches-py')} "
            f"with the python-version batches (torchvision says: {exc})") from exc
    train = _array_split(train_ds.data, train_ds.targets, CIFAR_MEAN, CIFAR_STD, "cifar10 train")
    test = _array_split(test_ds.data, test_ds.targets, CIFAR_MEAN, CIFAR_STD, "cifar10 test")
    heldout_idx = np.arange(min(config.heldout_size, len(test)))
    heldout = _array_split(test_ds.data[heldout_idx], np.asarray(test_ds.targets)[heldout_idx],
                           CIFAR_MEAN, CIFAR_STD, "cifar10 held-out")
    probe = _probe_from(test, list(train_ds.classes), config.probe_size, CIFAR_MEAN, CIFAR_STD,
                        f"cifar10:test,n={config.probe_size}")
    return Data(train, heldout, probe, list(train_ds.classes))


def _folder_split(ds: torchvision.datasets.ImageFolder, indices: np.ndarray, size: int, name: str) -> Split:
    resize = torchvision.transforms.Resize((size, size))

    def pixels(idx: torch.Tensor) -> torch.Tensor:
        images = [np.asarray(resize(ds.loader(ds.samples[int(indices[i])][0]).convert("RGB"))) for i in idx]
        return torch.from_numpy(np.stack(images))  # (B, size, size, 3) uint8

    return Split(pixels, np.asarray(ds.targets)[indices], IMAGENET_MEAN, IMAGENET_STD, name)


def _imagefolder(config: TrainConfig) -> Data:
    """`data_root/train` + `data_root/val` (or `test`) when present, else one tree split in two."""
    root = config.data_root
    if not os.path.isdir(root):
        raise FileNotFoundError(f"ImageFolder data_root={root!r} is not a folder")
    held_dir = next((os.path.join(root, d) for d in ("val", "test") if os.path.isdir(os.path.join(root, d))), None)
    if os.path.isdir(os.path.join(root, "train")) and held_dir:
        train_ds = torchvision.datasets.ImageFolder(os.path.join(root, "train"))
        held_ds = torchvision.datasets.ImageFolder(held_dir)
        if held_ds.classes != train_ds.classes:
            raise ValueError(f"{held_dir} has classes {held_ds.classes} but train has {train_ds.classes}")
        train_idx, held_idx = np.arange(len(train_ds)), np.arange(len(held_ds))
    else:  # one tree: a fixed share of it (seed 0) is held out
        train_ds = held_ds = torchvision.datasets.ImageFolder(root)
        order = np.random.default_rng(0).permutation(len(train_ds))
        n_held = min(config.heldout_size, max(1, len(order) // 5))
        held_idx, train_idx = np.sort(order[:n_held]), np.sort(order[n_held:])
    size = config.image_size
    train = _folder_split(train_ds, train_idx, size, "imagefolder train")
    heldout = _folder_split(held_ds, held_idx[:config.heldout_size], size, "imagefolder held-out")
    probe = _probe_from(_folder_split(held_ds, held_idx, size, "probe"), list(train_ds.classes),
                        config.probe_size, IMAGENET_MEAN, IMAGENET_STD, f"imagefolder:{os.path.basename(root)}")
    return Data(train, heldout, probe, list(train_ds.classes))


def load_data(config: TrainConfig) -> Data:
    """Train / held-out splits and the probe named by `config.data`."""
    loader = {"world": _world, "cifar10": _cifar10, "imagefolder": _imagefolder}[config.data]
    data = loader(config)
    if len(data.train) < config.batch_size:
        raise ValueError(f"the training set has {len(data.train)} images, fewer than "
                         f"batch_size={config.batch_size}")
    return data


# ------------------------------------------------------------------ batches
def batch_indices(step: int, batch_size: int, n: int, seed: int) -> torch.Tensor:
    """The global batch of 1-based `step`: epoch-wise random permutations, last partial batch dropped.

    A function of its arguments only, so every DDP rank and a resumed run draw the same batch.
    """
    per_epoch = n // batch_size
    epoch, j = divmod(step - 1, per_epoch)
    perm = _permutation(n, seed, epoch)
    return perm[j * batch_size:(j + 1) * batch_size]


@functools.lru_cache(maxsize=2)
def _permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def augment(x: torch.Tensor, rows: torch.Tensor, n_global: int, pad: int = 4,
            jitter: float = 0.2) -> torch.Tensor:
    """Random horizontal flips, crops (zero-padded by `pad`) and brightness/contrast jitter.

    The random parameters are drawn from the global torch RNG for the whole global
    batch of `n_global` images; `x` holds the rows `rows` of it. So a DDP rank that
    augments its shard gets exactly the images a single process gets.
    """
    b, _, h, w = x.shape
    flip = torch.rand(n_global) < 0.5                       # (N,)
    shift = torch.randint(0, 2 * pad + 1, (n_global, 2))    # (N, 2): crop offsets
    gain = 1.0 + jitter * (2 * torch.rand(n_global) - 1)    # (N,) contrast
    bias = jitter * (2 * torch.rand(n_global) - 1)          # (N,) brightness, in std units
    flip, shift, gain, bias = flip[rows], shift[rows], gain[rows], bias[rows]
    x = torch.where(flip.view(b, 1, 1, 1), x.flip(3), x)
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))  # (B, 3, H + 2p, W + 2p)
    ys = (shift[:, 0].view(b, 1) + torch.arange(h)).view(b, 1, h, 1).expand(b, 3, h, w + 2 * pad)
    x = padded.gather(2, ys)                                 # (B, 3, H, W + 2p)
    xs = (shift[:, 1].view(b, 1) + torch.arange(w)).view(b, 1, 1, w).expand(b, 3, h, w)
    x = x.gather(3, xs)                                      # (B, 3, H, W)
    return x * gain.view(b, 1, 1, 1) + bias.view(b, 1, 1, 1)
