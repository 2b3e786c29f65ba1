"""Forward hooks on layers named by their dotted `named_modules()` names.

    with LayerHooks(model, ["features.3", "fc"], on_output) as hooks:
        model(x)          # on_output("features.3", tensor), on_output("fc", tensor)

All names are checked before any hook is registered; the handles are owned by
the `LayerHooks` object and removed on `close()`, on exceptions and on exit.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn


class UnknownLayerError(LookupError, ValueError):
    """A layer name that is not among the model's `named_modules()`."""


def resolve_layers(model: nn.Module, names: Sequence[str]) -> dict[str, nn.Module]:
    """Map each dotted name to its module; raise listing the valid names if any is unknown."""
    if isinstance(names, str):
        names = [names]
    names = list(names)
    if not names:
        raise ValueError("layers is empty: name at least one layer, e.g. layers=['layer4']")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"layers names {repeated} more than once; name each layer once")
    modules = {name: module for name, module in model.named_modules() if name}
    unknown = [n for n in names if not isinstance(n, str) or n not in modules]
    if unknown:
        raise UnknownLayerError(_unknown_message(unknown, list(modules)))
    return {n: modules[n] for n in names}


def _unknown_message(unknown: list, valid: list[str]) -> str:
    lines = []
    for name in unknown:
        close = difflib.get_close_matches(str(name), valid, n=5, cutoff=0.5)
        hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
        lines.append(f"unknown layer {name!r}{hint}")
    shown = ", ".join(map(repr, valid[:60])) + (" ..." if len(valid) > 60 else "")
    return "; ".join(lines) + f". Valid layer names: {shown}"


def unit_responses(output: Any, layer: str, with_max: bool = True):
    """Reduce one layer output to per-unit responses per image.

    Returns `(mean, max)`, each float32 `[B, K]` (`max` is None unless `with_max`):
    conv `[B, K, H, W]` -> spatial mean and spatial max; linear `[B, K]` -> the value
    itself (both); tokens `[B, T, K]` -> mean and max over tokens. A response that is
    not finite (a NaN or an Inf in the output) is NaN.
    """
    if not torch.is_tensor(output):
        raise ValueError(
            f"layer {layer!r} returned {type(output).__name__}, not a tensor; "
            "record a submodule whose output is a tensor"
        )
    x = output.detach()
    if not x.is_floating_point():
        raise ValueError(f"layer {layer!r} returned a {x.dtype} tensor; unit responses need floats")
    x = x.float()
    if x.dim() == 4:  # (B, K, H, W)
        flat = x.flatten(2)  # (B, K, H*W)
        mean, top = flat.mean(2), (flat.amax(2) if with_max else None)
    elif x.dim() == 2:  # (B, K)
        mean, top = x, (x if with_max else None)
    elif x.dim() == 3:  # (B, T, K)
        mean, top = x.mean(1), (x.amax(1) if with_max else None)
    else:
        raise ValueError(
            f"layer {layer!r} has output shape {tuple(x.shape)}; supported shapes are "
            "[B, K, H, W] (conv), [B, K] (linear) and [B, T, K] (tokens)"
        )
    return _nan_if_not_finite(mean), (None if top is None else _nan_if_not_finite(top))


def _nan_if_not_finite(x: torch.Tensor) -> torch.Tensor:
    """NaN where `x` is NaN or +-Inf (elementwise, no device sync)."""
    return x.masked_fill(~torch.isfinite(x), float("nan"))


class LayerHooks:
    """Forward hooks that pass each named layer's output to a callback.

        with LayerHooks(model, ["layer3"], lambda name, out: print(name, out.shape)):
            model(x)

    `callback(name, output)` is called once per forward of each layer.
    """

    def __init__(self, model: nn.Module, names: Sequence[str], callback: Callable[[str, Any], None]):
        self.modules = resolve_layers(model, names)
        self.callback = callback
        self._handles = []
        try:
            for name, module in self.modules.items():
                self._handles.append(module.register_forward_hook(self._make_hook(name)))
        except BaseException:
            self.close()
            raise

    def _make_hook(self, name: str):
        def hook(module, inputs, output):
            self.callback(name, output)

        return hook

    @property
    def active(self) -> bool:
        return bool(self._handles)

    def close(self) -> None:
        """Remove every hook (newest first); safe to call twice."""
        while self._handles:
            self._handles.pop().remove()

    def __enter__(self) -> LayerHooks:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
