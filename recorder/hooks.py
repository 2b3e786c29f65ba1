"""Forward hooks on layers named by their dotted `named_modules()` names.

    with LayerHooks(model, ["features.3", "fc", "lstm[0]"], on_output) as hooks:
        model(x)          # on_output("features.3", tensor), ..., on_output("lstm[0]", output[0])

A module whose output is a tuple or list (`nn.LSTM`, `nn.MultiheadAttention`) is
named with the index of the element to record: `"lstm[0]"`, `"attn[0]"`,
`"lstm[1][0]"` (indices chain).

All names are checked before any hook is registered; the handles are owned by
the `LayerHooks` object and removed on `close()`, on exceptions and on exit.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn


class UnknownLayerError(LookupError, ValueError):
    """A layer name that is not among the model's `named_modules()`."""


_INDEXED = re.compile(r"^(?P<module>[^\[\]]+)(?P<index>(?:\[\d+\])*)$")


def split_layer_name(name: str) -> tuple[str, tuple[int, ...]]:
    """`"lstm[1][0]"` -> `("lstm", (1, 0))`: the module's dotted name and the indices into its output."""
    match = _INDEXED.match(name) if isinstance(name, str) else None
    if match is None:
        raise ValueError(f"layer name {name!r} is not valid: use a dotted module name, optionally "
                         "followed by an output index such as 'lstm[0]'")
    return match["module"], tuple(int(i) for i in re.findall(r"\d+", match["index"]))


def select_output(output: Any, name: str) -> Any:
    """The element of a module's `output` that the layer name `name` indexes (the output itself
    for a plain name); a ValueError naming the layer and the output's structure otherwise."""
    _, indices = split_layer_name(name)
    for depth, i in enumerate(indices):
        if not isinstance(output, (tuple, list)):
            where = name[:name.index("[")] + "".join(f"[{j}]" for j in indices[:depth])
            raise ValueError(f"layer {name!r}: {where!r} returned {describe_output(output)}, which has "
                             "no elements to index; drop the index")
        if i >= len(output):
            raise ValueError(f"layer {name!r}: index {i} is out of range; the output is "
                             f"{describe_output(output)}")
        output = output[i]
    return output


def describe_output(output: Any) -> str:
    """A short description of a layer output: `Tensor [2, 8]`, `tuple(Tensor [2, 5, 8], tuple(...))`."""
    if torch.is_tensor(output):
        return f"Tensor {list(output.shape)}"
    if isinstance(output, (tuple, list)):
        return f"{type(output).__name__}(" + ", ".join(describe_output(o) for o in output) + ")"
    return type(output).__name__


def resolve_layers(model: nn.Module, names: Sequence[str]) -> dict[str, nn.Module]:
    """Map each dotted name (optionally indexed, `"lstm[0]"`) to its module; raise listing
    the valid names if any is unknown."""
    if isinstance(names, str):
        names = [names]
    names = list(names)
    if not names:
        raise ValueError("layers is empty: name at least one layer, e.g. layers=['layer4']")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"layers names {repeated} more than once; name each layer once")
    modules = {name: module for name, module in model.named_modules() if name}
    module_names = {n: _INDEXED.match(n)["module"] for n in names if isinstance(n, str) and _INDEXED.match(n)}
    unknown = [n for n in names if module_names.get(n) not in modules]
    if unknown:
        raise UnknownLayerError(_unknown_message(unknown, list(modules)))
    return {n: modules[module_names[n]] for n in names}


def _unknown_message(unknown: list, valid: list[str]) -> str:
    lines = []
    for name in unknown:
        close = difflib.get_close_matches(str(name), valid, n=5, cutoff=0.5)
        hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
        lines.append(f"unknown layer {name!r}{hint}")
    shown = ", ".join(map(repr, valid[:60])) + (" ..." if len(valid) > 60 else "")
    return "; ".join(lines) + f". Valid layer names: {shown}"


_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
                nn.Softplus, nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardtanh)


def activation_after(model: nn.Module, name: str) -> str | None:
    """The name of the activation module registered right after layer `name` (in the
    order of `named_modules()`, which is the order of definition), if there is one."""
    module_name, _ = split_layer_name(name)
    names = [n for n, _ in model.named_modules()]
    modules = dict(model.named_modules())
    if module_name not in modules:
        return None
    subtree = {n for n, _ in modules[module_name].named_modules(prefix=module_name)}
    for following in names[names.index(module_name) + 1:]:
        if following in subtree:
            continue
        return following if isinstance(modules[following], _ACTIVATIONS) else None
    return None


def signed_layer_note(model: nn.Module, name: str, smallest: float) -> str:
    """What to tell a user whose layer `name` responded below 0 (`smallest`): which rule its
    selectivity follows now, and what to record for Morcos' rule on responses >= 0."""
    leaves = [n for n, module in model.named_modules() if n and not list(module.children())]
    after = activation_after(model, name)
    if after:
        hint = f"record {after!r}, the activation after it"
    elif leaves and name == leaves[-1]:  # the last module registered: the output layer, as a rule
        hint = "nothing: these are the model's outputs (logits), for which the signed rule is meant"
    else:
        hint = ("if a functional activation follows it (e.g. F.relu), make it a module (nn.ReLU()) "
                "and record that module")
    return (f"tuneline: layer {name!r} is signed (smallest probe response {smallest:.3g} < 0, as before a "
            f"ReLU, in BatchNorm, logits or tokens): its selectivity is measured above each unit's smallest "
            f"response, and a unit is dead only when constant. For Morcos' selectivity on responses >= 0, "
            f"{hint}.")


def unit_responses(output: Any, layer: str, with_max: bool = True):
    """Reduce one layer output to per-unit responses per image.

    Returns `(mean, max)`, each float32 `[B, K]` (`max` is None unless `with_max`):
    conv `[B, K, H, W]` -> spatial mean and spatial max; linear `[B, K]` -> the value
    itself (both); tokens `[B, T, K]` -> mean and max over tokens. A response that is
    not finite (a NaN or an Inf in the output) is NaN.
    """
    if isinstance(output, (tuple, list)) and output:
        raise ValueError(
            f"layer {layer!r} returned {describe_output(output)}; name the element to record "
            f"with an index, e.g. '{layer}[0]' for the first"
        )
    if not torch.is_tensor(output):
        raise ValueError(
            f"layer {layer!r} returned {describe_output(output)}, not a tensor; "
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
    return nan_if_not_finite(mean), (None if top is None else nan_if_not_finite(top))


def nan_if_not_finite(x: torch.Tensor) -> torch.Tensor:
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
        indexed = "[" in name

        def hook(module, inputs, output):
            self.callback(name, select_output(output, name) if indexed else output)

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


class FailingModule:
    """Names the innermost module that was running when a forward raised.

        with FailingModule(model) as where:
            model(x)                       # raises inside model.fc
        where.name                         # "fc" (None when the forward did not raise)

    Pre- and post-forward hooks on every module keep a stack of the modules entered;
    the hooks are removed on exit.
    """

    def __init__(self, model: nn.Module):
        self._model = model
        self._stack: list[str] = []
        self._handles = []
        self.name: str | None = None

    def __enter__(self) -> FailingModule:
        def leave(module, inputs, output) -> None:  # returns None: the output stays as it is
            self._stack.pop()

        for name, module in self._model.named_modules():
            self._handles.append(module.register_forward_pre_hook(
                lambda m, i, name=name: self._stack.append(name)))
            self._handles.append(module.register_forward_hook(leave))
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        while self._handles:
            self._handles.pop().remove()
        if exc_type is not None and self._stack:
            self.name = self._stack[-1] or type(self._model).__name__
