"""Rotation control (Bau et al. 2017): record a layer in a randomly rotated basis of its units.

    with RotatedUnits(model, "conv4", seed=0, example=x) as rot:
        logits = model(x)          # the same logits: the rotation is undone before the next layer
        # hooks on "conv4" registered after this (a Recorder's) see the rotated units

The layer's output is multiplied over its unit (channel) axis by a random orthogonal
`Q` (a 1x1 linear map for conv outputs) by a forward hook registered first among the
layer's hooks, so every later hook, e.g. a Recorder's, sees `Q`-rotated units. A
forward pre-hook on the module that consumes the layer (the next module in its
parent's order, found by default) multiplies by `Q^T` again, so the rest of the
network, and the accuracy, do not change. The model's parameters and names are
untouched. When an `example` batch is given, the inversion is checked on it.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["RotatedUnits", "next_module", "random_rotation"]


def random_rotation(k: int, seed: int) -> torch.Tensor:
    """A Haar-random orthogonal `[k, k]` matrix (QR of a Gaussian, signs fixed), from `seed`."""
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(k, k, generator=g, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))).to(torch.float32)


def _rotate_units(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Units of `x` mapped by `q`: y[:, j] = sum_k q[j, k] x[:, k] for (B, K, ...) tensors."""
    if x.dim() == 2:                                   # (B, K)
        return x @ q.T
    return torch.einsum("jk,bk...->bj...", q, x)       # (B, K, H, W): a 1x1 linear map


def next_module(model: nn.Module, layer: str) -> str:
    """The module after `layer` in its parent's child order (walking up past last children)."""
    modules = dict(model.named_modules())
    if layer not in modules:
        raise LookupError(f"unknown layer {layer!r}; valid: {[n for n in modules if n]}")
    name = layer
    while name:
        parent_name, _, child = name.rpartition(".")
        children = list(modules[parent_name]._modules)
        i = children.index(child)
        if i + 1 < len(children):
            return f"{parent_name}.{children[i + 1]}" if parent_name else children[i + 1]
        name = parent_name
    raise ValueError(f"layer {layer!r} is the model's last module: nothing consumes its output")


def _eval_output(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's output in eval() under no_grad; train flags restored."""
    flags = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            return model(x)
    finally:
        for module, training in flags:
            module.training = training


class RotatedUnits:
    """Hooks that rotate the units of `layer` by a random orthogonal matrix and undo it after.

    `consumer` names the module whose input is the layer's output (default: the next
    module, `next_module(model, layer)`). With `example`, the model's output with the
    rotation is checked against the output without it (ValueError if they differ).
    """

    def __init__(self, model: nn.Module, layer: str, seed: int = 0, consumer: str | None = None,
                 example: torch.Tensor | None = None, atol: float = 1e-4):
        model = getattr(model, "module", model)
        modules = dict(model.named_modules())
        if layer not in modules:
            raise LookupError(f"unknown layer {layer!r}; valid: {[n for n in modules if n]}")
        self.layer, self.seed = layer, seed
        self.consumer = consumer or next_module(model, layer)
        if self.consumer not in modules:
            raise LookupError(f"unknown consumer {self.consumer!r}; valid: {[n for n in modules if n]}")
        self.q: torch.Tensor | None = None
        reference = _eval_output(model, example) if example is not None else None
        self._handles = [
            modules[layer].register_forward_hook(self._rotate, prepend=True),
            modules[self.consumer].register_forward_pre_hook(self._unrotate, prepend=True),
        ]
        if example is not None:
            if not torch.allclose(_eval_output(model, example), reference, atol=atol, rtol=1e-4):
                self.close()
                raise ValueError(
                    f"rotating {layer!r} changed the model's output: {self.consumer!r} is not the only "
                    "consumer of its output; pass consumer= the module that takes it as input")

    def _matrix(self, k: int, like: torch.Tensor) -> torch.Tensor:
        if self.q is None:
            self.q = random_rotation(k, self.seed)
        return self.q.to(device=like.device, dtype=like.dtype)

    def _rotate(self, module, inputs, output):
        return _rotate_units(output, self._matrix(output.shape[1], output))

    def _unrotate(self, module, inputs):
        x = inputs[0]
        return (_rotate_units(x, self._matrix(x.shape[1], x).T), *inputs[1:])

    def close(self) -> None:
        """Remove both hooks; the model is as it was."""
        while self._handles:
            self._handles.pop().remove()

    def __enter__(self) -> RotatedUnits:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
