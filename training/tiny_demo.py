"""A first run in a few seconds: a tiny CNN on generated blobs, recorded with `Recorder`.

    python -m training tiny-demo --out runs/tiny

Three classes of 16x16 images (a bright blob in the top half, the bottom half, or
none) plus noise; the probe is a fixed held-out set of them.
"""

from __future__ import annotations

import argparse
import os
import shutil

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recorder import ProbeSet, Recorder

CLASSES = ["top", "bottom", "none"]


def make_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n uint8 images (n, 16, 16, 3) and their labels (n,)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    images = rng.normal(80, 30, size=(n, 16, 16, 3))
    for i, label in enumerate(labels):
        if label < 2:
            y = rng.integers(1, 6) + 8 * label
            x = rng.integers(1, 12)
            images[i, y:y + 3, x:x + 3, rng.integers(0, 3)] += 150
    return np.clip(images, 0, 255).astype(np.uint8), labels


def tiny_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),   # "0": (B, 8, 16, 16)
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),  # "3": (B, 16, 8, 8)
        nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        nn.Linear(64, 3),                            # "7": (B, 3)
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training tiny-demo")
    parser.add_argument("--out", default="runs/tiny")
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    pixels, labels = make_images(2000, seed=0)
    probe = ProbeSet(*make_images(150, seed=1), CLASSES, mean=(0.3,) * 3, std=(0.15,) * 3, source="tiny-demo")
    x_all = torch.from_numpy(((pixels / 255.0 - 0.3) / 0.15).astype(np.float32)).permute(0, 3, 1, 2)
    y_all = torch.from_numpy(labels)
    model = tiny_cnn()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    store = os.path.join(args.out, "tiny")
    if os.path.isdir(os.path.join(store, "record.zarr")):
        shutil.rmtree(store)  # the demo starts from scratch each time
    with Recorder(model, ["0", "3", "7"], probe=probe, store=store, every=30) as rec:
        for step in range(args.steps):
            idx = torch.randint(0, len(x_all), (32,))
            logits = model(x_all[idx])
            loss = F.cross_entropy(logits, y_all[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            rec.step(step, labels=y_all[idx], logits=logits, epoch=step * 32 / len(x_all))
    print(f"recorded run: {store}")
    print(f"summary:      python -m recorder info {store}")
