"""Tiny models and probes shared by the tests."""

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recorder.probe import ProbeSet

CLASSES = ["circle", "square", "stripe"]


class TinyNet(nn.Module):
    """Conv -> BN -> ReLU -> Dropout -> conv -> pool -> linear; layers 'conv1', 'block.conv', 'fc'."""

    def __init__(self, n_classes: int = 3, width: int = 6, batchnorm: bool = True, dropout: float = 0.3):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width) if batchnorm else nn.Identity()
        self.drop = nn.Dropout(dropout)
        self.block = nn.Sequential()
        self.block.add_module("conv", nn.Conv2d(width, width * 2, 3, padding=1))
        self.block.add_module("relu", nn.ReLU())
        self.fc = nn.Linear(width * 2, n_classes)

    def forward(self, x):
        x = self.drop(torch.relu(self.bn(self.conv1(x))))  # (B, w, H, W)
        x = self.block(x)  # (B, 2w, H, W)
        return self.fc(x.mean((2, 3)))  # (B, C)


def tiny_probe(n: int = 24, size: int = 8, seed: int = 0, classes=CLASSES) -> ProbeSet:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    labels = np.arange(n) % len(classes)
    return ProbeSet(pixels, labels, list(classes), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                    source="tiny")


def sgd_steps(model, data, rec=None, lr=0.01, rank=0, world=1, after_step=None):
    """Plain SGD over (x, y) batches, each rank taking its share of every batch; `rec.step` after each."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for step, (x, y) in enumerate(data):
        x, y = x[rank::world], y[rank::world]
        logits = model(x)
        F.cross_entropy(logits, y).backward()
        opt.step()
        opt.zero_grad()
        if rec is not None:
            rec.step(step, labels=y, logits=logits)
        if after_step is not None:
            after_step(step)
    return model


def batches(n_steps: int, batch: int = 8, size: int = 8, seed: int = 1, n_classes: int = 3):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n_steps):
        yield torch.randn(batch, 3, size, size, generator=g), torch.randint(0, n_classes, (batch,), generator=g)


CONCEPTS = [("ball", "object"), ("box", "object"), ("bar", "object"), ("day", "scene"), ("night", "scene")]


def seg_probe(n=14, size=8, seg_size=12, seed=0):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    seg = np.zeros((n, 2, seg_size, seg_size), dtype=np.int64)
    for i in range(n):
        if i % 4 != 3:  # every fourth image carries no object label at all
            seg[i, 0] = rng.integers(0, 4, size=(seg_size, seg_size))
        if i % 5 != 4:  # image-level scene label on most images
            seg[i, 1] = 4 + i % 2
    return ProbeSet(pixels, np.arange(n) % 3, CLASSES, seg=seg, concepts=CONCEPTS, mean=(0.5,) * 3,
                    std=(0.25,) * 3, source="seg-probe")
