"""Models for the sweeps: a small CNN family and ResNet-18 adapted to small images.

    model = SmallCNN(depth=4, width=16, batchnorm=False, dropout=0.0)   # layers conv1..conv4, fc
    model = resnet18_small(n_classes=10)                              # layers layer1..layer4, fc
    record_layers(model)        # ['conv1', 'conv2', 'conv3', 'conv4', 'fc']
    conv_layers(model)          # the conv layers among them: ['conv1', ..., 'conv4']

Recommended record layers are modules whose output is post-ReLU (a conv block or
a residual stage) plus the logits layer `fc`, so a unit's response is what the
next layer sees. Names are dotted `named_modules()` names and stay stable across
widths, depths and options.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from training.config import TrainConfig

__all__ = ["ConvBlock", "SmallCNN", "build_model", "conv_layers", "record_layers", "resnet18_small"]


class ConvBlock(nn.Sequential):
    """conv 3x3 -> (BatchNorm) -> ReLU; submodules `conv`, `bn` (optional), `relu`."""

    def __init__(self, c_in: int, c_out: int, batchnorm: bool):
        super().__init__()
        self.add_module("conv", nn.Conv2d(c_in, c_out, 3, padding=1, bias=not batchnorm))
        if batchnorm:
            self.add_module("bn", nn.BatchNorm2d(c_out))
        self.add_module("relu", nn.ReLU())


class SmallCNN(nn.Module):
    """`depth` conv blocks (2x2 max-pool between them), global average pool, linear classifier.

        model = SmallCNN(depth=4, width=16)      # channels 16, 32, 64, 64
        logits = model(x)                        # x (B, 3, H, W) -> (B, n_classes)

    Layers `conv1` .. `conv<depth>` (post-ReLU), `pool1` .., `drop1` .., `gap`,
    `drop`, `fc`. Channels double per block, capped at 4x `width`.
    """

    def __init__(self, depth: int = 4, width: int = 16, batchnorm: bool = False, dropout: float = 0.0,
                 n_classes: int = 10):
        super().__init__()
        if depth < 1 or width < 1:
            raise ValueError(f"SmallCNN needs depth >= 1 and width >= 1, got depth={depth}, width={width}")
        self.depth = depth
        channels = [width * min(2**i, 4) for i in range(depth)]
        c_in = 3
        for i, c_out in enumerate(channels, start=1):
            self.add_module(f"conv{i}", ConvBlock(c_in, c_out, batchnorm))
            if i < depth:
                self.add_module(f"pool{i}", nn.MaxPool2d(2))
                self.add_module(f"drop{i}", nn.Dropout(dropout))
            c_in = c_out
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(c_in, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(1, self.depth + 1):
            x = getattr(self, f"conv{i}")(x)                            # (B, C_i, H / 2^(i-1), W / 2^(i-1))
            if i < self.depth:
                x = getattr(self, f"drop{i}")(getattr(self, f"pool{i}")(x))  # (B, C_i, H / 2^i, W / 2^i)
        x = self.gap(x).flatten(1)                                      # (B, C_depth)
        return self.fc(self.drop(x))                                    # (B, n_classes)


def resnet18_small(n_classes: int = 10) -> torchvision.models.ResNet:
    """torchvision ResNet-18 for small images (e.g. 64x64): conv1 3x3 stride 1, no max-pool.

    Layers keep torchvision's names: `conv1`, `bn1`, `relu`, `layer1` .. `layer4`
    (residual stages, post-ReLU), `avgpool`, `fc`. `maxpool` is an Identity.
    """
    model = torchvision.models.resnet18(weights=None, num_classes=n_classes)
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def build_model(config: TrainConfig, n_classes: int) -> nn.Module:
    """The model named by `config.model`, initialized from the current torch RNG."""
    if config.model == "cnn":
        return SmallCNN(config.depth, config.width, config.batchnorm, config.dropout, n_classes)
    if config.model == "resnet18":
        return resnet18_small(n_classes)
    raise ValueError(f"config 'model' given an invalid value: {config.model!r}; expected 'cnn' or 'resnet18'")


def conv_layers(model: nn.Module) -> list[str]:
    """The recommended conv record layers (post-ReLU), shallow to deep."""
    model = getattr(model, "module", model)  # DistributedDataParallel
    if isinstance(model, SmallCNN):
        return [f"conv{i}" for i in range(1, model.depth + 1)]
    if isinstance(model, torchvision.models.ResNet):
        return ["layer1", "layer2", "layer3", "layer4"]
    raise TypeError(f"no recommended layers for {type(model).__name__}; name record_layers explicitly")


def record_layers(model: nn.Module) -> list[str]:
    """The recommended record layers: the conv layers of `conv_layers(model)` and `fc`."""
    return [*conv_layers(model), "fc"]
