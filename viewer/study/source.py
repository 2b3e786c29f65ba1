"""The run a study draws from: its record, its probe, and its model at each saved checkpoint.

    source = StudySource.open("runs/demo/baseline")     # builder named by the run's config.json
    source.weight_steps                                 # steps whose weights were saved, ascending
    model = source.model_at(1500)                       # eval() model, or None without saved weights
    source.threshold("conv3", 1500)                     # (K,) stored Network Dissection thresholds

The model and probe are rebuilt by the run's builder (`module:function`, config dict ->
(model, probe); `recorder.occlusion.after.load_builder`), then each checkpoint's
`"model"` state dict is loaded. Tests and other callers may pass `model_at` directly.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from recorder.occlusion.after import checkpoint_steps, rebuild_model_and_probe
from recorder.store import Run

__all__ = ["StudySource"]


class StudySource:
    """A run's record and probe plus `model_at(step) -> nn.Module | None` (see the module docstring).

        source = StudySource(run, probe, model_at=lambda step: model, weight_steps=[0])
    """

    def __init__(self, run: Run, probe, model_at: Callable[[int], nn.Module | None], weight_steps,
                 why_no_weights: str | None = None):
        self.run, self.probe, self._model_at = run, probe, model_at
        self.weight_steps = sorted(int(s) for s in weight_steps)
        self.why_no_weights = why_no_weights

    @classmethod
    def open(cls, run_dir, builder: str | None = None) -> StudySource:
        run = Run.open(run_dir)
        if run.path is None:
            raise ValueError(f"a study needs a local run folder with checkpoints; {run.location!r} is a URL")
        _, model, probe = rebuild_model_and_probe(run, builder)
        files = checkpoint_steps(run.path)
        recorded = set(run.steps.tolist())
        steps = [s for s in files if s in recorded]
        why = None if steps else (f"the run at {run.location!r} saved no model weights (no checkpoints/step_<N>.pt "
                                  "at a recorded step)")

        def model_at(step: int) -> nn.Module | None:
            if step not in files:
                return None
            state = torch.load(files[step], map_location="cpu", weights_only=True)
            model.load_state_dict(state["model"] if isinstance(state, dict) and "model" in state else state)
            return model.eval()

        return cls(run, probe, model_at, steps, why)

    def model_at(self, step: int) -> nn.Module | None:
        """The model with the weights of `step` in eval mode, or None when they were not saved."""
        return self._model_at(int(step)) if int(step) in self.weight_steps else None

    def row(self, step: int) -> int:
        """The committed row of `step` (ValueError listing the recorded steps otherwise)."""
        steps = self.run.steps.tolist()
        if step not in steps:
            shown = ", ".join(map(str, steps[:20])) + (" ..." if len(steps) > 20 else "")
            raise ValueError(f"step given an invalid value: {step!r}; the run recorded steps {shown}")
        return steps.index(step)

    def check_layer(self, layer: str, units) -> int:
        """The layer's unit count (ValueError naming a layer or unit the run did not record)."""
        if layer not in self.run.layers:
            raise ValueError(f"layer given an invalid value: {layer!r}; the run recorded {', '.join(self.run.layers)}")
        n = self.run.units[layer]
        bad = [u for u in units if not 0 <= u < n]
        if bad:
            raise ValueError(f"units given an invalid value: {bad}; layer {layer!r} has units 0..{n - 1}")
        return n

    def threshold(self, layer: str, step: int) -> np.ndarray:
        """The stored thresholds `T_k` (K,) of `layer` at `step`."""
        record = self.run.layer(layer)
        if not record.has("threshold"):
            raise ValueError(f"layer {layer!r} has no dissection thresholds recorded; a masks study needs them")
        return np.asarray(record.row("threshold", self.row(step)), dtype=np.float64)

    def best_concepts(self, layer: str, step: int) -> np.ndarray:
        """Each unit's best concept index by IoU at `step` (K,), -1 where no IoU was recorded."""
        record = self.run.layer(layer)
        if not record.has("iou") or not self.run.concepts:
            return np.full(self.run.units[layer], -1)
        iou = np.asarray(record.row("iou", self.row(step)), dtype=np.float64)  # (K, P)
        best = np.where(np.isnan(iou), -np.inf, iou).argmax(-1)
        return np.where(np.isnan(iou).all(-1), -1, best)
