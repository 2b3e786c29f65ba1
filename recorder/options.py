"""`RecorderOptions`: every argument of `Recorder` after `layers`, validated once.

    opts = RecorderOptions(probe=probe, store="runs/demo/base", every=100)
    opts.check()                       # one ValueError listing every bad argument

`Recorder` and `recorder.lightning.RecorderCallback` build the same options object,
so both report the same problems with the same words, all at once.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import torch

from recorder.occlusion.settings import occlusion_problems
from recorder.schema import TOPK_BY

__all__ = ["RecorderOptions", "as_step"]


def _is_int(value, minimum: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, numbers.Integral) and value >= minimum


@dataclass(frozen=True)
class RecorderOptions:
    """The knobs of a `Recorder` (see its docstring); `check()` reports every bad one together.

        RecorderOptions(store="runs/x", every=0, quantile=2).check()
        # ValueError: 2 invalid Recorder arguments:
        #   every given an invalid value: 0; expected an integer >= 1
        #   quantile given an invalid value: 2; expected a number in (0, 1), e.g. 0.005
    """

    probe: Any = None  # ProbeSet: the fixed images of every probe pass
    store: str | os.PathLike | None = None  # run folder or URL (s3://bucket/runs/x)
    every: int = 100  # a probe pass whenever step() crosses a multiple of this
    quantile: float = 0.005  # Network Dissection's top quantile
    topk: int = 8  # top images kept per unit
    classes: Sequence[str] | None = None  # class names for online sums without a classed probe
    batch_size: int = 64  # probe images per forward
    online: bool = True  # sum training batches' responses per class
    dissect: bool = True  # Network Dissection of conv layers
    predict: Callable | None = None  # model output -> predicted labels (default: argmax)
    run_name: str | None = None  # default: the store's last path component
    config: Mapping | None = None  # stored with the run
    progress: bool = True  # a progress bar on probe passes longer than a second
    device: torch.device | str | None = None  # where probe images go (default: the model's)
    storage_options: Mapping | None = field(default=None)  # fsspec options for URL stores
    occlusion: Mapping | None = None  # dict(layers, units, patch, stride, fill, measure, every); None: off
    topk_by: Sequence[str] = ("max",)  # top-k images by spatial "max"; add "mean" for topk_mean_*

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def problems(self, *, store_required: bool = True) -> list[str]:
        """One line per invalid argument (empty when all are valid)."""
        out = []

        def bad(name: str, valid: str) -> None:
            out.append(f"{name} given an invalid value: {getattr(self, name)!r}; {valid}")

        if self.store is None:
            if store_required:
                out.append("store is required: the run folder or URL to write, e.g. store='runs/demo/baseline'")
        elif not isinstance(self.store, (str, os.PathLike)) or not os.fspath(self.store):
            bad("store", "expected a folder path or URL, e.g. 'runs/demo/baseline' or 's3://bucket/runs/x'")
        for name in ("every", "topk", "batch_size"):
            if not _is_int(getattr(self, name), 1):
                bad(name, "expected an integer >= 1")
        if isinstance(self.quantile, bool) or not (isinstance(self.quantile, numbers.Real) and 0 < self.quantile < 1):
            bad("quantile", "expected a number in (0, 1), e.g. 0.005")
        for name in ("online", "dissect", "progress"):
            if not isinstance(getattr(self, name), bool):
                bad(name, "expected True or False")
        if self.predict is not None and not callable(self.predict):
            bad("predict", "expected None or a function from model output to predicted labels")
        if self.run_name is not None and not (isinstance(self.run_name, str) and self.run_name):
            bad("run_name", "expected None or a non-empty string")
        for name in ("config", "storage_options"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), Mapping):
                bad(name, "expected None or a dict")
        if self.device is not None:
            try:
                torch.device(self.device)
            except (RuntimeError, TypeError):
                bad("device", "expected None, a torch.device or a device string such as 'cpu' or 'cuda:0'")
        out += self._class_problems()
        out += self._occlusion_problems()
        if self.probe is not None and not hasattr(self.probe, "fingerprint"):
            bad("probe", "expected None or a ProbeSet (ProbeSet.from_h5, from_dataset, from_broden)")
        return out

    def _occlusion_problems(self) -> list[str]:
        out = []
        by = self.topk_by
        if (isinstance(by, str) or not isinstance(by, Sequence) or not by or "max" not in by
                or any(b not in TOPK_BY for b in by) or len(set(by)) != len(by)):
            out.append(f"topk_by given an invalid value: {by!r}; expected ('max',) or ('max', 'mean'): the "
                       "top-k by spatial max is always kept, 'mean' adds the top-k by spatial mean")
        image_size = getattr(self.probe, "image_size", None) if self.probe is not None else None
        out += occlusion_problems(self.occlusion, tuple(image_size) if image_size is not None else None)
        if self.occlusion is not None and self.probe is None:
            out.append("occlusion needs a probe: the top-k probe images of each unit are occluded; pass "
                       "probe=ProbeSet(...) or occlusion=None")
        return out

    def _class_problems(self) -> list[str]:
        classes = self.classes
        if classes is not None and (isinstance(classes, str) or not isinstance(classes, Sequence)
                                    or not all(isinstance(c, str) for c in classes)):
            return [f"classes given an invalid value: {classes!r}; expected a list of class names"]
        if self.probe is None:
            if not classes:
                return ["nothing to record: give probe=ProbeSet(...), or classes=[...] for online mode"]
            return []
        probe_classes = list(getattr(self.probe, "classes", []))
        if classes is not None and probe_classes and list(classes) != probe_classes:
            return [f"classes {list(classes)} differ from the probe's classes {list(self.probe.classes)}"]
        return []

    def check(self, *, owner: str = "Recorder", store_required: bool = True) -> None:
        """Raise one ValueError that lists every invalid argument."""
        problems = self.problems(store_required=store_required)
        if len(problems) == 1:
            raise ValueError(f"{owner}: {problems[0]}")
        if problems:
            raise ValueError(f"{len(problems)} invalid {owner} arguments:\n  " + "\n  ".join(problems))


def as_step(step, what: str) -> int:
    """`step` as an int (a one-element tensor is fine); a TypeError, naming `what`, for anything else."""
    if isinstance(step, torch.Tensor) and step.numel() == 1:
        step = step.item()
    if isinstance(step, bool) or not isinstance(step, numbers.Integral):
        raise TypeError(f"{what} got step={step!r}; steps are integers")
    return int(step)
