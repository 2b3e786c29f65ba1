"""Memory that a Recorder keeps from one probe pass to the next.

    buffers = ProbeBuffers()
    run_probe_pass(model, probe, layers, shapes, device, buffers=buffers)  # allocates
    run_probe_pass(model, probe, layers, shapes, device, buffers=buffers)  # reuses
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from recorder.dissect.labels import ConceptLabels

__all__ = ["ProbeBuffers"]


class ProbeBuffers:
    """Memory kept from one probe pass to the next, on the CPU: the buffers of the conv maps
    and the probe's prepared concept labels.

        buffers = ProbeBuffers()
        maps = buffers.take("layer1", (512, 64, 32, 32), torch.device("cpu"))  # (N, K, h, w)
        maps is buffers.take("layer1", (512, 64, 32, 32), torch.device("cpu"))  # True: reused
        labels = buffers.labels(probe, slice(0, 512), make)  # make() once, then kept

    Freed, blocks this large go back to the operating system, and the next pass pays a
    page fault per 4 KiB to get them again: on a virtual machine about as long as the
    forward pass itself. On CUDA the caching allocator already reuses memory, and a
    held buffer would be taken from training, so nothing is kept there. Labels are
    kept up to `label_bytes` in all.
    """

    def __init__(self, label_bytes: int = 1 << 28):
        self._maps: dict[str, torch.Tensor] = {}
        self._labels: dict[tuple[int, int], ConceptLabels] = {}
        self._labels_of = None  # the probe the kept labels belong to
        self._label_room = label_bytes

    def take(self, name: str, shape: tuple[int, ...], device: torch.device | str) -> torch.Tensor:
        """An uninitialized float32 tensor of `shape` on `device`: the one kept for `name` if it fits."""
        device = torch.device(device)
        held = self._maps.get(name)
        if held is not None and tuple(held.shape) == tuple(shape) and held.device == device:
            return held
        buffer = torch.empty(shape, dtype=torch.float32, device=device)
        if device.type == "cpu":
            self._maps[name] = buffer
        return buffer

    def labels(self, probe, rows: slice, make: Callable[[], ConceptLabels]) -> ConceptLabels:
        """The concept labels of probe images `rows`: `make()`, kept for the next pass when on
        the CPU and within the byte budget."""
        if self._labels_of is not probe:
            self._labels, self._labels_of = {}, probe
        key = (rows.start, rows.stop)
        if key in self._labels:
            return self._labels[key]
        labels = make()
        size = sum(x.numel() * x.element_size() for x in (labels.seg, labels.packed, labels.pixels) if x is not None)
        if labels.seg.device.type == "cpu" and size <= self._label_room:
            self._labels[key] = labels
            self._label_room -= size
        return labels
