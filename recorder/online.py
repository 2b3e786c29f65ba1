"""Online mode: per-class sums of the training batches' responses since the last row.

    window = OnlineWindow(classes=["cat", "dog"], layers=["conv1"], device="cpu")
    window.attach(model)                    # hooks on the layers and on the model's forward
    window.open({"conv1": 16})              # once the layers' unit counts are known
    logits = model(x)                       # each training forward: responses pending
    responses = window.take()               # the batch's responses since the last take()
    labels = window.check(responses, y)     # clear errors for labels that do not fit
    window.add(responses, labels, logits)   # into the sums, the floors and the accuracy
    window.row_arrays(layers, metrics, rank)  # all-reduced: train_sum/count/min, train_accuracy
    window.reset()                          # a new window once rank 0's row is written
    window.detach()

Only forwards with gradients enabled count as training: the probe pass (no_grad)
and evaluation loops leave the window alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from recorder.accumulators import ClassSums, Floor
from recorder.distributed import all_reduce
from recorder.hooks import LayerHooks, unit_responses

__all__ = ["OnlineWindow"]


class OnlineWindow:
    """The online window of a Recorder: responses pending since the last `take()`, and per
    class and unit their sums, counts, each unit's smallest response, and the training
    accuracy from the logits, since the last row.

        window = OnlineWindow(["cat", "dog"], ["conv1"], torch.device("cpu"))
        window.attach(model); window.open({"conv1": 16})
        logits = model(x); responses = window.take()          # {"conv1": (B, 16)}
        window.add(responses, window.check(responses, y), logits)
    """

    def __init__(self, classes: Sequence[str], layers: Sequence[str], device: torch.device):
        self.classes, self.layers, self.device = list(classes), list(layers), device
        self.sums: dict[str, ClassSums] | None = None  # per layer, once open()
        self.floors: dict[str, Floor] = {}  # each unit's smallest training response in the window
        self.hits = torch.zeros(2, dtype=torch.int64, device=device)  # (correct, seen)
        self._pending: dict[str, list[torch.Tensor]] = {name: [] for name in self.layers}
        self._forwards = self._forwards_taken = 0  # training forwards of the model since the last take()
        self._hooks: LayerHooks | None = None
        self._forward_hook = None
        self._closed = False

    @property
    def is_open(self) -> bool:
        return self.sums is not None

    def open(self, units: dict[str, int]) -> None:
        """Start the sums, once each layer's number of units is known."""
        self.sums = {name: ClassSums(len(self.classes), k, self.device) for name, k in units.items()}
        self.floors = {name: Floor(k, self.device) for name, k in units.items()}

    # ------------------------------------------------------------- hooks

    def attach(self, model: nn.Module) -> None:
        """Hook the recorded layers and the model's forward of training steps."""
        self._hooks = LayerHooks(model, self.layers, self._on_output)
        self._forward_hook = model.register_forward_pre_hook(self._on_forward)

    def detach(self) -> None:
        """Remove the hooks; later forwards add nothing."""
        self._closed = True
        if self._hooks is not None:
            self._hooks.close()
        if self._forward_hook is not None:
            self._forward_hook.remove()
            self._forward_hook = None

    def _on_output(self, name: str, output) -> None:
        if torch.is_grad_enabled() and not self._closed:
            self._pending[name].append(unit_responses(output, name, with_max=False)[0])

    def _on_forward(self, module, inputs) -> None:
        if torch.is_grad_enabled():
            self._forwards += 1

    # ------------------------------------------------------------ batches

    def take(self) -> dict[str, torch.Tensor | None]:
        """The responses (B, K) per layer pending since the last take() (None: not called)."""
        self._forwards_taken, self._forwards = self._forwards, 0
        taken = {name: (torch.cat(parts) if parts else None) for name, parts in self._pending.items()}
        for parts in self._pending.values():
            parts.clear()
        return taken

    def check(self, responses: dict, labels) -> torch.Tensor:
        """`labels` as long (B,) on the window's device; a clear error when they are not class
        ids, when no training forward ran, or when a layer saw another number of images."""
        labels = torch.as_tensor(labels)
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise TypeError(f"step() got labels of dtype {labels.dtype}; labels are integer class ids "
                            f"in [0, {len(self.classes)}) (e.g. y.long()), not scores or one-hot rows")
        labels = labels.to(self.device).long().reshape(-1)
        bad = (labels < 0) | (labels >= len(self.classes))
        if bool(bad.any()):
            first = int(bad.nonzero()[0])
            raise ValueError(
                f"labels[{first}] = {int(labels[first])} is outside the class range "
                f"[0, {len(self.classes)}) of classes {self.classes}")
        if not self._forwards_taken:
            raise ValueError("step() was called with labels but the model ran no training forward since "
                             "the previous step(); call step() once per batch, after model(x) (with "
                             "gradients enabled)")
        for name in self.layers:
            batch = responses[name]
            if batch is None:
                raise ValueError(
                    f"layer {name!r} was not called in a training forward pass since the last "
                    "step(); record layers that the model's forward uses")
            if batch.shape[0] != labels.shape[0]:
                raise ValueError(
                    f"layer {name!r} saw {batch.shape[0]} training images since the last step() "
                    f"but labels has {labels.shape[0]}; call step() once per training batch")
        return labels

    def add(self, responses: dict, labels: torch.Tensor, logits) -> None:
        """Add a checked batch: responses (B, K) per layer, labels (B,), logits (B, C) or None."""
        for name in self.layers:
            self.sums[name].add(responses[name], labels)
            self.floors[name].add(responses[name])
        if logits is not None:
            logits = logits.detach()
            self.hits[0] += (logits.argmax(1).to(self.device) == labels).sum()
            self.hits[1] += labels.shape[0]

    # --------------------------------------------------------------- rows

    def row_arrays(self, layers: dict, row_metrics: dict, rank: int) -> None:
        """Merge the ranks' windows and put `train_sum`, `train_count`, `train_min` into each
        layer's row and `train_accuracy` into the metrics (rank 0). Rank 0 keeps the merged
        sums until its row is written, so that a failed write loses no training responses;
        the other ranks restart."""
        for accumulator in (*self.sums.values(), *self.floors.values()):
            accumulator.all_reduce()
        all_reduce([self.hits])
        if rank != 0:
            self.reset()
            return
        for name, sums in self.sums.items():
            layers[name]["train_sum"] = sums.sum.cpu().numpy().astype(np.float32)
            layers[name]["train_count"] = sums.count.cpu().numpy().copy()
            layers[name]["train_min"] = self.floors[name].values().cpu().numpy()
        correct, seen = (int(v) for v in self.hits)
        if seen:
            row_metrics["train_accuracy"] = correct / seen

    def reset(self) -> None:
        for accumulator in (*self.sums.values(), *self.floors.values()):
            accumulator.reset()
        self.hits.zero_()

    def to_(self, device: torch.device) -> None:
        """Move the window to `device` (the model moved)."""
        self.device = device
        for accumulator in (*(self.sums or {}).values(), *self.floors.values()):
            accumulator.to_(device)
        self.hits = self.hits.to(device)
