"""Receptive fields: the layer's theoretical one, and each unit's empirical one from occlusion.

    rf = theoretical_rf(model, "conv3", (3, 64, 64))       # rf.size == (18, 18), rf.jump == (4, 4)
    top = occlude_topk(model, {"conv3": idx}, probe, 8, 4, "mean", "peak")["conv3"]
    cells = peak_cells(top.peak, rf, (64, 64), patch=8, stride=4)   # (K, k, 2)
    canvas = empirical_rf(top.maps["peak"], cells)                  # (K, 2gh - 1, 2gw - 1)
    size = rf_size(canvas, stride=4)                                # (K,) input pixels

Theoretical RF. A forward of one blank image with hooks on every leaf module gives
the order in which modules run and which tensor each one reads; each tensor's
geometry (RF size, jump between neighbouring positions, centre of position 0, in
input pixels) follows from the geometry of the tensor its module read:
`Conv2d`, `MaxPool2d`, `AvgPool2d` by their kernel size, stride, dilation and padding
(r' = r + (k_eff - 1) j, j' = j s, start' = start + ((k_eff - 1) / 2 - pad) j);
every other leaf module that keeps the spatial size (ReLU, BatchNorm, Dropout,
Identity, ...) is taken as pointwise: identity. A leaf of another kind that changes
the spatial size raises. This is exact for chains of such modules (VGG, AlexNet, the
small CNN). A tensor made outside any module (`x + y`, `torch.cat`) takes the
geometry of the latest module output; in-place sums (`out += identity`, as in
ResNet blocks) keep the tensor of the main branch, whose RF contains the shortcut's.
A gradient-support method is not used: a max-pool passes the gradient to one input
of its window and a ReLU to none when inactive, so the support of one gradient
misses pixels the unit can see.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from recorder.hooks import resolve_layers
from recorder.occlusion.grid import grid_shape
from recorder.occlusion.window import LayerReached, forward_to_layer, input_dtype_device


@dataclass(frozen=True)
class ReceptiveField:
    """Geometry of one layer's map in input pixels, per axis (rows, cols).

        rf = ReceptiveField(size=(18, 18), jump=(4, 4), start=(1.5, 1.5))
        rf.window(2, 3)      # (r0, r1, c0, c1): input rows r0:r1, cols c0:c1 seen by position (2, 3)
    """

    size: tuple[int, int]  # input pixels one map position can see
    jump: tuple[int, int]  # input pixels between neighbouring map positions
    start: tuple[float, float]  # input coordinate of the centre of map position (0, 0)

    def centre(self, i, j):
        """Input coordinates (rows, cols) of the centre of map position(s) (i, j)."""
        return self.start[0] + i * self.jump[0], self.start[1] + j * self.jump[1]

    def window(self, i: int, j: int) -> tuple[int, int, int, int]:
        """Half-open input window `(r0, r1, c0, c1)` of map position (i, j), not clipped to the image."""
        (y, x), (h, w) = self.centre(i, j), self.size
        r0, c0 = round(y - (h - 1) / 2), round(x - (w - 1) / 2)
        return r0, r0 + h, c0, c0 + w

    def to_dict(self) -> dict:
        return {key: list(value) for key, value in asdict(self).items()}


_IDENTITY = ((1, 1), (1, 1), (0.0, 0.0))  # a tensor in input space: size, jump, start


def _pair(value) -> tuple[int, int]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _through(geometry, module: nn.Module):
    """Geometry after a Conv2d / MaxPool2d / AvgPool2d; None for a module of another kind."""
    if isinstance(module, nn.Conv2d):
        kernel, stride, dilation = module.kernel_size, module.stride, module.dilation
        padding = module.padding
        if isinstance(padding, str):  # "valid" or "same" (stride 1): torch pads total // 2 first
            padding = tuple(0 if padding == "valid" else d * (k - 1) // 2 for k, d in zip(kernel, dilation))
    elif isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        kernel, stride = _pair(module.kernel_size), _pair(module.stride or module.kernel_size)
        dilation = _pair(getattr(module, "dilation", 1))
        padding = _pair(module.padding)
    else:
        return None
    size, jump, start = geometry
    out = []
    for axis in range(2):
        k_eff = dilation[axis] * (kernel[axis] - 1) + 1
        out.append((size[axis] + (k_eff - 1) * jump[axis], jump[axis] * stride[axis],
                    start[axis] + ((k_eff - 1) / 2 - padding[axis]) * jump[axis]))
    return tuple(zip(*out))


def theoretical_rf(model: nn.Module, layer: str, input_size: tuple[int, int, int]) -> ReceptiveField:
    """The theoretical receptive field of `layer`'s map for inputs of `input_size` (C, H, W).

        theoretical_rf(SmallCNN(depth=4), "conv3", (3, 64, 64)).size   # (18, 18)

    See the module docstring for the modules understood and what is assumed.
    """
    module_of_layer = resolve_layers(model, [layer])[layer]
    geometry: dict[int, tuple] = {}
    alive: list[torch.Tensor] = []  # keeps every traced tensor alive so that no data_ptr is reused
    latest = [_IDENTITY]
    found: list[tuple] = []

    def lookup(tensor):
        return geometry.get(tensor.data_ptr(), latest[0]) if torch.is_tensor(tensor) else latest[0]

    def on_leaf(name):
        def hook(module, inputs, output):
            if not torch.is_tensor(output):
                return
            before = lookup(inputs[0]) if inputs else latest[0]
            after = _through(before, module)
            if after is None:
                same = (output.dim() == 4 and inputs and torch.is_tensor(inputs[0]) and inputs[0].dim() == 4
                        and inputs[0].shape[2:] == output.shape[2:])
                if output.dim() == 4 and not same:
                    raise ValueError(f"cannot compute the theoretical receptive field through module {name!r} "
                                     f"({type(module).__name__}), which changes the spatial size; understood "
                                     "are Conv2d, MaxPool2d, AvgPool2d and modules that keep the spatial size")
                after = before
            geometry[output.data_ptr()] = after
            alive.append(output)
            latest[0] = after
        return hook

    def on_layer(module, inputs, output):
        if not found:
            if not torch.is_tensor(output) or output.dim() != 4:
                shape = tuple(output.shape) if torch.is_tensor(output) else type(output).__name__
                raise ValueError(f"layer {layer!r} has output {shape}; a receptive field needs a spatial map "
                                 "[B, K, H, W]")
            found.append(lookup(output))
        raise LayerReached

    dtype, device = input_dtype_device(model)
    x = torch.zeros(1, *input_size, dtype=dtype, device=device)
    geometry[x.data_ptr()] = _IDENTITY
    handles = [m.register_forward_hook(on_leaf(name)) for name, m in model.named_modules()
               if not any(True for _ in m.children())]
    handles.append(module_of_layer.register_forward_hook(on_layer))
    forward_to_layer(model, x, handles)
    if not found:
        raise ValueError(f"layer {layer!r} was not called during the forward pass")
    size, jump, start = found[0]
    return ReceptiveField(tuple(int(v) for v in size), tuple(int(v) for v in jump), tuple(float(v) for v in start))


def peak_cells(peak: torch.Tensor, rf: ReceptiveField, image_size: tuple[int, int], patch: int,
               stride: int) -> torch.Tensor:
    """The occluder cell under the input position of each map peak.

    `peak` (..., 2) holds map rows and columns (`TopkOcclusion.peak`); the input position
    is the centre of the peak's theoretical window, clipped to the image; its cell is the
    one whose square's centre is nearest. Returns (..., 2) int64 cell rows and columns.
    """
    height, width = image_size
    gh, gw = grid_shape(height, width, patch, stride)
    y, x = rf.centre(peak[..., 0].double(), peak[..., 1].double())
    y, x = y.clamp(0, height - 1), x.clamp(0, width - 1)
    row = torch.floor((y - (patch - 1) / 2) / stride + 0.5).long().clamp(0, gh - 1)
    col = torch.floor((x - (patch - 1) / 2) / stride + 0.5).long().clamp(0, gw - 1)
    return torch.stack([row, col], -1)


def empirical_rf(peak_maps: torch.Tensor, peak_cells: torch.Tensor) -> torch.Tensor:
    """Each unit's empirical receptive field `(K, 2gh - 1, 2gw - 1)`.

        canvas = empirical_rf(top.maps["peak"], cells)    # (K, k, gh, gw), (K, k, 2)

    Each map is shifted so that its peak cell lands at the centre `(gh - 1, gw - 1)`;
    the canvas is the mean, per canvas cell, over the maps that reach it (NaN where
    none does). NaN maps (units not occluded) are left out.
    """
    n_units, k, gh, gw = peak_maps.shape
    if tuple(peak_cells.shape) != (n_units, k, 2):
        raise ValueError(f"peak_cells has shape {tuple(peak_cells.shape)}; expected {(n_units, k, 2)} to match "
                         f"peak_maps {tuple(peak_maps.shape)}")
    device = peak_maps.device
    cells = peak_cells.to(device)
    rows = (gh - 1 - cells[..., 0, None]) + torch.arange(gh, device=device)  # (K, k, gh)
    cols = (gw - 1 - cells[..., 1, None]) + torch.arange(gw, device=device)  # (K, k, gw)
    target = (rows[..., :, None] * (2 * gw - 1) + cols[..., None, :]).reshape(n_units, -1)  # (K, k*gh*gw)
    values = peak_maps.float().reshape(n_units, -1)
    seen = torch.isfinite(values)
    canvas = (2 * gh - 1) * (2 * gw - 1)
    sums = torch.zeros(n_units, canvas, device=device).scatter_add_(1, target, values.where(seen, 0.0))
    counts = torch.zeros(n_units, canvas, device=device).scatter_add_(1, target, seen.float())
    return (sums / counts).reshape(n_units, 2 * gh - 1, 2 * gw - 1)  # 0 / 0 -> NaN where no map reaches


def rf_size(rf: torch.Tensor, stride: int) -> torch.Tensor:
    """`sqrt(area)` in input pixels (cells x stride^2) where each unit's RF is at least half
    its maximum: `(K, a, b) -> (K,)`. NaN for a unit whose maximum is not positive."""
    flat = rf.float().flatten(1)  # (K, a*b)
    peak = flat.nan_to_num(nan=-math.inf).amax(1)  # (K,)
    cells = (flat >= peak[:, None] / 2).sum(1)
    size = torch.sqrt(cells.float() * stride**2)
    return size.where(peak > 0, torch.full_like(size, float("nan")))
