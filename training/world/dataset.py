"""The shapes world as a torch `Dataset` and as a recorder `ProbeSet`."""

from __future__ import annotations

import torch

from recorder.probe import ProbeSet
from training.world.kinds import CLASSES
from training.world.render import WorldConfig, concepts, render, render_batch

__all__ = ["MEAN", "STD", "ShapesWorld", "make_probe"]

# Per-channel mean and std of the default world's pixels (0-1 scale), measured on
# 5000 images of seed 0 at 64x64 (see tests/test_world.py for the check).
MEAN = (0.502, 0.584, 0.553)
STD = (0.307, 0.298, 0.366)


class ShapesWorld(torch.utils.data.Dataset):
    """`n` images of the world `seed`: item `i` is `(image float [3, H, W], label)`.

        train = ShapesWorld(20_000, seed=0)
        x, y = train[3]                      # x normalized with MEAN / STD, y = 3 % 10

    Item `i` is `render(i, seed, config)`, converted to float, scaled to [0, 1] and
    normalized with `MEAN` / `STD`; `transform`, when given, is applied to that
    tensor (e.g. a torchvision v2 augmentation). Items are generated on the fly, so
    the data set costs no memory and is deterministic per index.
    """

    def __init__(self, n: int, seed: int = 0, config: WorldConfig | None = None, transform=None):
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        self.n, self.seed = n, int(seed)
        self.config = config or WorldConfig()
        self.transform = transform
        self.classes = list(CLASSES)
        self._mean = torch.tensor(MEAN, dtype=torch.float32).view(3, 1, 1)
        self._std = torch.tensor(STD, dtype=torch.float32).view(3, 1, 1)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if not -self.n <= i < self.n:
            raise IndexError(f"index {i} is out of range [0, {self.n})")
        image, label, _ = render(i % self.n, self.seed, self.config)
        x = torch.from_numpy(image).permute(2, 0, 1).to(torch.float32).div_(255.0)
        x = (x - self._mean) / self._std
        if self.transform is not None:
            x = self.transform(x)
        return x, label


def make_probe(n: int = 500, seed: int = 1234, config: WorldConfig | None = None) -> ProbeSet:
    """A probe of `n` world images with labels, `CLASSES`, segmentations and `concepts()`.

    Labels are `index % 10`, so every class has `n // 10` or `n // 10 + 1` images.
    Use a seed that no training set uses (the default 1234 is kept for probes).
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    config = config or WorldConfig()
    images, labels, segs = render_batch(n, seed, 0, config)
    return ProbeSet(
        images, labels, CLASSES, seg=segs, concepts=concepts(), mean=MEAN, std=STD,
        source=f"shapes-world:seed={seed},n={n},size={config.size}",
    )
