"""Which input pixels each position of a layer's map depends on, certified by tracing the model.

    window = trace_window(model, "conv3", (3, 64, 64))       # None when the model cannot be certified
    window.rows.cone(5)                   # (13, 31): input rows position 5 of the map depends on
    window.rows.affected(8, 16)           # (1, 6): map rows whose cone meets input rows 8:16
    window.rows.crop(1, 6)                # (0, 35): aligned input rows that compute those exactly

Geometry per axis: position q of the map depends on the input pixels
`left + q * jump ... left + q * jump + size - 1` (its cone: the theoretical receptive
field, not clipped to the image); `left <= 0` comes from the paddings.

Certification. One forward of a random image with hooks on every leaf module checks
that the layer's map is made only by `Conv2d` (zero padding), `MaxPool2d` and
`AvgPool2d` (no ceil mode), pointwise modules (activations, `BatchNorm2d` in eval,
`Dropout`, `Identity`), and sums of two such maps of equal shape (residual adds, in
place or not). Each leaf's input must be a tensor a traced module made (or the model
input), unchanged since, or the elementwise sum of two of them: checked on the values
by a linear fingerprint. Anything else (a concatenation, a slice, a functional op, an
adaptive pool, a norm over positions, attention) leaves the map uncertified, and the
caller runs full images instead.

Why a crop is exact: run the model on input rows `c0:c1` with `c0` a multiple of the
layer's jump. Every traced map of the crop then lies on the full image's grid (crop
position q is full position `q + c0 / jump_of_that_map`), and a position whose cone
lies inside the crop, or leaves it only where the crop ends at the image border, is
computed from the same values as in the full forward: the model's zero padding
replaces real pixels only at positions whose cone leaves the crop inside the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from recorder.hooks import resolve_layers
from recorder.probe_pass import observation_mode

POINTWISE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
             nn.Softplus, nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.BatchNorm2d,
             nn.Dropout, nn.Dropout2d, nn.Identity)


@dataclass(frozen=True)
class Axis:
    """One axis of a layer's geometry (see the module docstring) and its extents.

        axis = Axis(left=-7, jump=4, size=18, positions=16, pixels=64)
        axis.cone(0)          # (-7, 11)
    """

    left: int  # first input pixel position 0 depends on (<= 0)
    jump: int  # input pixels between neighbouring positions
    size: int  # input pixels one position depends on
    positions: int  # map positions along this axis (full image)
    pixels: int  # image pixels along this axis

    def cone(self, q: int) -> tuple[int, int]:
        """Half-open input range position `q` depends on, not clipped to the image."""
        first = self.left + q * self.jump
        return first, first + self.size

    def affected(self, first: int, stop: int) -> tuple[int, int]:
        """Half-open range of positions whose cone meets input pixels `first:stop` (may be empty)."""
        low = (first - self.left - self.size) // self.jump + 1
        high = (stop - 1 - self.left) // self.jump + 1
        return max(low, 0), min(high, self.positions)

    def crop(self, low: int, high: int) -> tuple[int, int]:
        """Input range `c0:c1` that computes positions `low:high` exactly: the union of their
        cones clipped to the image, `c0` a multiple of the jump (crop position 0 is map
        position `c0 // jump`)."""
        first, stop = self.cone(low)[0], self.cone(high - 1)[1]
        return max(first, 0) // self.jump * self.jump, min(stop, self.pixels)


@dataclass(frozen=True)
class LayerWindow:
    """Certified geometry of a layer's map: rows and columns (see `trace_window`)."""

    rows: Axis
    cols: Axis
    units: int  # channels of the map
    chain: tuple[nn.Module, ...] | None = None  # leaf modules whose composition makes the map, when a plain chain
    chain_floats: int = 0  # numbers the chain's outputs hold per image


# --- tracing -------------------------------------------------------------------------------------------


def input_dtype_device(model: nn.Module) -> tuple[torch.dtype, torch.device]:
    """dtype and device of the model's first floating parameter or buffer (float32 on the CPU
    without one): what a probing input to the model is made of."""
    like = next((t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()), None)
    return (torch.float32, torch.device("cpu")) if like is None else (like.dtype, like.device)

def _through(geometry, module: nn.Module):
    """Geometry per axis `((left, jump, size), (left, jump, size))` after a conv or pool leaf; a
    string (the reason) when its kind is not certified."""
    if isinstance(module, nn.Conv2d):
        if module.padding_mode != "zeros":
            return f"padding_mode {module.padding_mode!r}"
        kernel, stride, dilation, padding = module.kernel_size, module.stride, module.dilation, module.padding
        if isinstance(padding, str):  # "valid", or "same" (torch pads total // 2 before)
            padding = tuple(0 if padding == "valid" else d * (k - 1) // 2 for k, d in zip(kernel, dilation))
    else:
        if module.ceil_mode:
            return "ceil_mode=True"
        pair = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v, v)  # noqa: E731
        kernel, stride = pair(module.kernel_size), pair(module.stride or module.kernel_size)
        dilation, padding = pair(getattr(module, "dilation", 1)), pair(module.padding)
    return tuple((left - padding[a] * jump, jump * stride[a], size + dilation[a] * (kernel[a] - 1) * jump)
                 for a, (left, jump, size) in enumerate(geometry))


def _union(first, second):
    """Geometry of the elementwise sum of two maps of equal shape; a string when their jumps differ."""
    out = []
    for (l1, j1, s1), (l2, j2, s2) in zip(first, second):
        if j1 != j2:
            return f"a sum of maps with jumps {j1} and {j2}"
        left = min(l1, l2)
        out.append((left, j1, max(l1 + s1, l2 + s2) - left))
    return tuple(out)


class _Tracer:
    """Hook state: a fingerprint and a geometry (or the reason it has none) per traced tensor."""

    def __init__(self):
        self.entries: dict[int, tuple] = {}  # data_ptr -> (tensor, fingerprint, magnitude, geometry | reason, chain)
        self.weights: dict[tuple, torch.Tensor] = {}
        self.inputs: dict[int, object] = {}  # id(module) -> geometry of its input, between its two hooks
        self.result = self.shape = None

    def fingerprint(self, t: torch.Tensor) -> tuple[float, float]:
        """A linear fingerprint of the values (same weights for every tensor of a shape) and its scale."""
        key = (tuple(t.shape), t.device)
        if key not in self.weights:
            generator = torch.Generator().manual_seed(len(self.weights) + 17)
            self.weights[key] = torch.rand(t.shape, generator=generator, dtype=torch.float64).to(t.device)
        w = self.weights[key]
        return float((t.double() * w).sum()), float((t.double().abs() * w).sum())

    def add(self, t: torch.Tensor, geometry, chain: tuple | None) -> None:
        """`chain`: ((module, floats), ...) whose composition made `t` from the input; None for a sum."""
        self.entries[t.data_ptr()] = (t, *self.fingerprint(t), geometry, chain)

    def geometry_of(self, t, where: str):
        """The geometry and chain of a leaf's input `t`: a traced tensor unchanged since, or a sum of two."""
        if not torch.is_tensor(t) or t.dim() != 4:
            return f"the input of {where} is not a map [B, C, H, W]", None
        value, scale = self.fingerprint(t)
        same = self.entries.get(t.data_ptr())
        if same is not None and same[0] is t and same[1] == value:
            return same[3], same[4]
        candidates = [e for e in self.entries.values() if e[0].shape == t.shape and e[0].device == t.device]
        firsts = [same] if same is not None and same[0] is t else candidates[-16:]
        for first in firsts:
            for second in candidates[-16:]:
                if second is first:
                    continue
                tolerance = 1e-6 * (first[2] + second[2]) + 1e-30
                if abs(value - first[1] - second[1]) <= tolerance:
                    if isinstance(first[3], str) or isinstance(second[3], str):
                        return (first[3] if isinstance(first[3], str) else second[3]), None
                    return _union(first[3], second[3]), None
        return f"the input of {where} was made outside the traced modules (a functional op, slice or concat)", None

    def leaf(self, name: str):
        def pre_hook(module, inputs):
            tensors = [x for x in inputs if torch.is_tensor(x)]
            if len(tensors) != 1:
                self.inputs[id(module)] = f"{name!r} takes {len(tensors)} tensors", None
            else:
                self.inputs[id(module)] = self.geometry_of(tensors[0], repr(name))

        def hook(module, inputs, output):
            geometry, chain = self.inputs.pop(id(module), (f"{name!r} was not traced", None))
            if not torch.is_tensor(output):
                return
            if not isinstance(geometry, str):
                if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
                    geometry = _through(geometry, module)
                    if isinstance(geometry, str):
                        geometry = f"{name!r} ({type(module).__name__}) has {geometry}"
                elif not isinstance(module, POINTWISE):
                    geometry = f"{name!r} ({type(module).__name__}) is not a conv, pool or pointwise module"
            if output.dim() == 4:
                chain = None if chain is None or isinstance(geometry, str) else (*chain, (module, output.numel()))
                self.add(output, geometry, chain)
        return pre_hook, hook


class LayerReached(Exception):
    """Raised from a hook on the traced layer: the rest of the forward is not needed."""


def forward_to_layer(model: nn.Module, x: torch.Tensor, handles: list) -> None:
    """One forward of `x` in observation mode, which a hook may stop by raising `LayerReached`;
    removes the hooks' `handles` afterwards, whatever happens."""
    try:
        with observation_mode(model):
            model(x)
    except LayerReached:
        pass
    finally:
        for handle in reversed(handles):
            handle.remove()


def trace_window(model: nn.Module, layer: str, input_size: tuple[int, int, int]) -> LayerWindow | None:
    """The certified geometry of `layer`'s map for inputs `(C, H, W)`, or None (see `why_not`)."""
    window = _trace(model, layer, input_size)
    return None if isinstance(window, str) else window


def why_not(model: nn.Module, layer: str, input_size: tuple[int, int, int]) -> str | None:
    """Why `layer` of `model` cannot be certified (None when it can)."""
    window = _trace(model, layer, input_size)
    return window if isinstance(window, str) else None


def _trace(model: nn.Module, layer: str, input_size: tuple[int, int, int]) -> LayerWindow | str:
    target = resolve_layers(model, [layer])[layer]
    if "[" in layer:
        return f"layer {layer!r} is an item of a module's output"
    tracer = _Tracer()
    handles = []

    def on_layer(module, inputs, output):
        if tracer.result is None:
            spatial = torch.is_tensor(output) and output.dim() == 4
            tracer.result = tracer.geometry_of(output, f"layer {layer!r}") if spatial \
                else (f"layer {layer!r} has no spatial map [B, K, H, W]", None)
            tracer.shape = tuple(output.shape) if torch.is_tensor(output) else None  # (1, K, h, w)
        raise LayerReached

    dtype, device = input_dtype_device(model)
    x = torch.rand(1, *input_size, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    x = (x - 0.5).to(device=device, dtype=dtype)
    tracer.add(x, ((0, 1, 1), (0, 1, 1)), ())
    for name, module in model.named_modules():
        if not any(True for _ in module.children()):  # a leaf
            pre_hook, hook = tracer.leaf(name)
            handles += [module.register_forward_pre_hook(pre_hook), module.register_forward_hook(hook)]
    handles.append(target.register_forward_hook(on_layer))
    forward_to_layer(model, x, handles)
    if tracer.result is None:
        return f"layer {layer!r} was not called during the forward pass"
    geometry, chain = tracer.result
    if isinstance(geometry, str):
        return geometry
    (left_r, jump_r, size_r), (left_c, jump_c, size_c) = geometry
    _, units, h, w = tracer.shape
    return LayerWindow(Axis(left_r, jump_r, size_r, h, input_size[1]), Axis(left_c, jump_c, size_c, w, input_size[2]),
                       units, None if not chain else tuple(m for m, _ in chain), sum(f for _, f in chain or ()))
