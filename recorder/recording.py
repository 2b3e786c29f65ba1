"""The training callback: online per-class sums and probe passes, one store row per checkpoint.

    rec = Recorder(model, layers=["layer3", "layer4"], probe=probe,
                   store="runs/demo/baseline", every=100)
    with rec:
        for step, (x, y) in enumerate(loader):
            logits = model(x)
            ...
            rec.step(step, labels=y, logits=logits)
"""

from __future__ import annotations

import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from recorder.distributed import agree, all_ranks_ok, rank_and_world
from recorder.hooks import resolve_layers, signed_layer_note
from recorder.probe_buffers import ProbeBuffers
from recorder.probe_pass import (default_predict, layer_shapes, observation_mode, probe_row_arrays,
                                 run_probe_pass, topk_max_index, topk_mean_row_arrays, topk_row_arrays)
from recorder.occlusion.rows import OcclusionRows
from recorder.occlusion.settings import OcclusionSettings
from recorder.online import OnlineWindow
from recorder.options import RecorderOptions, as_step
from recorder.store import RunWriter
from recorder.store.scalars import check_scalars


# Row arrays that hold NaN only when a layer's activations did (not for classes without images).
_NAN_ONLY_IF_NOT_FINITE = ("sum_true", "sum_pred", "train_sum", "threshold", "topk_value")


def _unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel / DataParallel wrapper."""
    wrappers = (nn.parallel.DistributedDataParallel, nn.DataParallel)
    return model.module if isinstance(model, wrappers) else model


def _model_device(model: nn.Module) -> torch.device:
    """The one device of the model's parameters and buffers (CPU if it has none)."""
    devices = {tensor.device for tensor in (*model.parameters(), *model.buffers())}
    if len(devices) > 1:
        raise ValueError(
            f"the model's parameters and buffers are on several devices "
            f"({', '.join(sorted(map(str, devices)))}); pass device= to the Recorder: the device "
            "its probe images go to (where the model takes its input)")
    return devices.pop() if devices else torch.device("cpu")


def _caller_stacklevel() -> int:
    """`stacklevel` for a warning issued by the caller of this function that points at the
    first frame outside the recorder package (the user's training loop)."""
    here, frame, level = os.path.dirname(__file__), sys._getframe(1), 1
    while frame is not None and os.path.dirname(frame.f_code.co_filename) == here:
        frame, level = frame.f_back, level + 1
    return level


class Recorder:
    """Record how every unit of the named layers responds to each class, once per checkpoint.

        rec = Recorder(model, layers=["features.6"], probe=probe, store="runs/s/run", every=50)
        with rec:
            for step, (x, y) in enumerate(loader):
                logits = model(x); loss = F.cross_entropy(logits, y)
                loss.backward(); opt.step(); opt.zero_grad()
                rec.step(step, labels=y, logits=logits)   # online sums; probe pass when due
        rec.record(step)                                  # an explicit probe pass, any time

    `step()` adds the training batch's per-unit responses to per-class sums (online
    mode) and runs a probe pass at its first call and whenever `step` crosses a
    multiple of `every`. Each row stores the probe pass and the online window since
    the previous row. `close()` adds a final row when `step()` saw a later step.

    Reliability: a row that fails to be written (e.g. a full disk) is not committed,
    and its online window is kept for the next row; NaN or Inf activations are
    recorded as NaN with one RuntimeWarning per layer. Probe images go to `device`
    (default: the device of the model's parameters, followed when the model moves).
    Under DDP, a rank that fails in the probe pass makes every rank raise
    `RankFailedError`; any other hang is bounded by the process group's timeout
    (`init_process_group(timeout=...)`).
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[str],
        *,
        probe=None,
        store: str | os.PathLike | None = None,
        every: int = 100,
        quantile: float = 0.005,
        topk: int = 8,
        classes: Sequence[str] | None = None,
        batch_size: int = 64,
        online: bool = True,
        dissect: bool = True,
        predict: Callable | None = None,
        run_name: str | None = None,
        config: dict | None = None,
        progress: bool = True,
        device: torch.device | str | None = None,
        storage_options: dict | None = None,
        occlusion: dict | None = None,
        topk_by: Sequence[str] = ("max",),
    ):
        options = RecorderOptions(
            probe=probe, store=store, every=every, quantile=quantile, topk=topk, classes=classes,
            batch_size=batch_size, online=online, dissect=dissect, predict=predict, run_name=run_name,
            config=config, progress=progress, device=device, storage_options=storage_options,
            occlusion=occlusion, topk_by=topk_by)
        options.check()
        self.options = options
        self._device = None if device is None else torch.device(device)
        self.model = _unwrap(model)
        self.layers = list(resolve_layers(self.model, layers))
        self.probe = probe
        self.store_path = os.fspath(store)
        self.storage_options = dict(storage_options or {})
        self.every, self.quantile, self.batch_size = every, quantile, batch_size
        self.topk = min(topk, len(probe)) if probe is not None else topk  # a probe may hold fewer images
        # a probe's classes, else classes= (online sums beside a classless probe such as Broden)
        self.classes = list(probe.classes) if probe is not None and probe.classes else list(classes or [])
        self.online = online
        self.dissect = dissect
        self.predict = predict or default_predict
        self.progress = progress
        self._run_info = {"name": run_name or os.path.basename(os.path.normpath(self.store_path)), "config": dict(config or {})}
        self.rank, self.world = rank_and_world()
        self.device = self._device or _model_device(self.model)
        self.units: dict[str, int] | None = None
        self._writer: RunWriter | None = None
        self._last_row_step: int | None = None
        self._last_step_seen: int | None = None
        self._online = OnlineWindow(self.classes, self.layers, self.device)
        self._epoch = math.nan
        self._closed = False
        self._warned_not_finite: set[str] = set()
        self._noted_signed: set[str] = set()
        self._rules_stored = False
        self.shapes: dict[str, tuple] | None = None
        self.topk_by = tuple(topk_by)
        self._occlusion: OcclusionRows | None = None
        if probe is not None:
            shapes, error = None, None
            try:
                shapes = layer_shapes(self.model, probe, self.layers, self.device)
            except Exception as exc:  # noqa: BLE001 - every rank raises it (agree)
                error = exc
            agree(error, "finding the recorded layers' output shapes", self.device)
            self.shapes = shapes
            self._occlusion = None if occlusion is None else OcclusionRows(  # checks layers and units
                self.model, OcclusionSettings.of(occlusion), self.layers, shapes,
                (probe.channels, *probe.image_size), self.topk)
            self._set_units({name: self.shapes[name][0] for name in self.layers})  # in the order given
        self._probe_buffers = ProbeBuffers()  # conv maps and concept labels, reused from row to row
        if online and self.classes:
            self._online.attach(self.model)
        elif online and self.rank == 0:
            warnings.warn("Recorder: online per-class sums are off: the probe has no classes and no "
                          "classes= was given; pass classes=[...] (the names of the training labels) "
                          "to sum training responses per class", stacklevel=2)

    # ----------------------------------------------------------------- setup

    def _set_units(self, units: dict[str, int]) -> None:
        self.units = units
        if self.classes:
            self._online.open(units)
        self._open_writer()

    def _open_writer(self) -> None:
        """Rank 0 creates or resumes the run; every rank learns whether that worked."""

        def open_on_rank0():
            probe_info = self.probe.info() if self.probe is not None else {
                "source": None, "n_images": 0, "fingerprint": None}
            self._writer = RunWriter.open(
                self.store_path, classes=self.classes,
                concepts=list(self.probe.concepts) if self.probe is not None else [],
                layers=self.units, probe=probe_info, run=self._run_info, topk=self.topk,
                **({"storage_options": self.storage_options} if self.storage_options else {}))
            if self.probe is not None:
                self._writer.write_probe(self.probe.thumbnails(), self.probe.labels.numpy())
            self._last_row_step = self._writer.last_step

        self._on_rank0(open_on_rank0, f"rank 0 could not open the run store at {self.store_path!r}")
        if self.world > 1:  # every rank needs the resumed run's last step
            last = torch.tensor([-(2**62) if self._last_row_step is None else self._last_row_step],
                                device=self.device)
            torch.distributed.broadcast(last, src=0)
            self._last_row_step = None if int(last) == -(2**62) else int(last)

    # ---------------------------------------------------------------- online

    def discard_pending(self) -> None:
        """Forget the training responses seen since the last step() (e.g. a replayed batch)."""
        self._online.take()

    def step(self, step: int, labels=None, logits=None, *, epoch: float | None = None,
             metrics: dict[str, float] | None = None) -> None:
        """After a training step: add the batch to the online window; probe pass when due."""
        step = as_step(step, "step()")
        if self._last_step_seen is not None and step <= self._last_step_seen:
            raise ValueError(f"step() got step {step}, not after the previous step {self._last_step_seen}; "
                             "steps must increase")
        if self._last_row_step is not None and step <= self._last_row_step:
            raise ValueError(f"step() got step {step}, not after the last recorded step {self._last_row_step} "
                             f"of the run at {self.store_path!r}; steps must increase (resume training "
                             "after that step, or record into a new store)")
        responses = self._online.take()
        if labels is not None and self.online and self.classes:
            labels = self._online.check(responses, labels)
            if self.units is None:  # no probe: the first batch tells the units
                self._set_units({name: int(responses[name].shape[1]) for name in self.layers})
            self._online.add(responses, labels, logits)
        if epoch is not None:
            self._epoch = float(epoch)
        first = self._last_step_seen is None and self._last_row_step is None  # resumed: keep the grid
        self._last_step_seen = step
        last = self._last_row_step
        if first or last is None or step // self.every > last // self.every:
            self.record(step, metrics=metrics)  # committed with the row
        elif metrics:
            self.log_metrics(metrics, step=step)

    def log_metrics(self, values: dict[str, float], step: int | None = None) -> None:
        """Store each value (e.g. held-out accuracy) at `step`, now: never moved to a row.

        `step` defaults to the last step given to `step()` or `record()`. Values are
        scalars of the run (`run.scalar(name)` -> steps, values); under DDP rank 0
        writes them and the other ranks' calls do nothing, so a call guarded by
        `if rank == 0` is fine.
        """
        values = check_scalars(values)
        if step is None:
            known = [s for s in (self._last_step_seen, self._last_row_step) if s is not None]
            if not known:
                raise ValueError("log_metrics() before any step() or record(): pass step=, the training "
                                 "step the values belong to")
            step = max(known)
        step = as_step(step, "log_metrics()")
        if self.rank != 0 or not values:
            return
        if self._writer is None:
            raise ValueError("log_metrics(): the run store is not open yet (an online-only Recorder opens "
                             "it at the first step() with labels); pass the values after that")
        self._writer.log_scalars(step, values)

    # ------------------------------------------------------------------- rows

    def record(self, step: int, *, epoch: float | None = None, metrics: dict[str, float] | None = None) -> None:
        """Write one row now: a probe pass plus the online window since the last row."""
        step = as_step(step, "record()")
        if self._last_row_step is not None and step <= self._last_row_step:
            raise ValueError(f"record() got step {step}, not after the last recorded step "
                             f"{self._last_row_step}; steps must increase")
        if self.units is None:
            raise ValueError("nothing to record yet: with no probe, call step() with labels first")
        if epoch is not None:
            self._epoch = float(epoch)
        self._follow_model()
        layers = {name: {} for name in self.layers}
        row_metrics = {}
        if self.probe is not None:
            self._probe_rows(step, layers, row_metrics)
        with_window = self._online.is_open and self.online
        if with_window:
            self._online.row_arrays(layers, row_metrics, self.rank)
        row_metrics.update(metrics or {})
        self._write(step, layers, row_metrics)
        if with_window and self.rank == 0:  # written: rank 0 starts a new window too
            self._online.reset()
        self._last_row_step = step

    def _follow_model(self) -> None:
        """Move the online accumulators to the model's device if the model moved since."""
        device = self._device or _model_device(self.model)
        if device != self.device:
            self.device = device
            self._online.to_(device)

    def _probe_rows(self, step: int, layers: dict, row_metrics: dict) -> None:
        with observation_mode(self.model):
            per_image, preds, dissections = run_probe_pass(
                self.model, self.probe, self.layers, self.shapes, self.device,
                batch_size=self.batch_size, predict=self.predict, progress=self.progress,
                description=f"probe pass @ step {step}", quantile=self.quantile, topk=self.topk,
                dissect=self.dissect, buffers=self._probe_buffers)
        occluded = {} if self._occlusion is None else self._occlusion.row_arrays(
            self.model, self.probe, self._writer.n_committed if self._writer is not None else 0,
            {name: topk_max_index(per_image[name], dissections.get(name), self.topk)
             for name in self._occlusion.layers}, self.device)

        def row_arrays():
            labels = self.probe.labels
            for name in self.layers:
                layers[name].update(probe_row_arrays(per_image[name], preds, labels, len(self.classes)))
                if name in dissections:  # conv layers: top-k by the same streaming pass as their maps
                    layers[name].update(dissections[name].row_arrays())
                else:
                    layers[name].update(topk_row_arrays(per_image[name], self.topk))
                if "mean" in self.topk_by:
                    layers[name].update(topk_mean_row_arrays(per_image[name], self.topk))
                layers[name].update(occluded.get(name, {}))
            if self._occlusion is not None:
                self._occlusion.store_attrs(self._writer)
            self._note_signed_layers(layers)
            labeled = labels >= 0
            if self.classes and bool(labeled.any()):
                predicted = preds.labels().cpu()
                row_metrics["probe_accuracy"] = float((predicted == labels)[labeled].float().mean())

        self._on_rank0(row_arrays, f"rank 0 failed to build the row at step {step}")

    def _note_signed_layers(self, layers: dict) -> None:
        """Once per layer: say that a layer with negative responses uses the signed rule."""
        for name in self.layers:
            floor = layers[name].get("response_min")
            if name in self._noted_signed or floor is None or not bool((floor < 0).any()):
                continue
            self._noted_signed.add(name)
            print(signed_layer_note(self.model, name, float(np.nanmin(floor))), file=sys.stderr, flush=True)

    def _warn_not_finite(self, step: int, layers: dict) -> None:
        """One RuntimeWarning per layer, the first time its row holds NaN from NaN/Inf activations."""
        bad = [name for name in self.layers if name not in self._warned_not_finite and any(
            np.isnan(layers[name][key]).any() for key in _NAN_ONLY_IF_NOT_FINITE if key in layers[name])]
        if bad:
            self._warned_not_finite.update(bad)
            names = ", ".join(map(repr, bad))
            warnings.warn(f"Recorder: layer{'s' if len(bad) > 1 else ''} {names} produced NaN or Inf "
                          f"activations (first seen in the row of step {step}); the statistics of the "
                          "affected units are recorded as NaN. Training is not changed; this warning "
                          "is not repeated for these layers.", RuntimeWarning, stacklevel=_caller_stacklevel())

    def _write(self, step: int, layers: dict, row_metrics: dict) -> None:
        def write():
            self._warn_not_finite(step, layers)  # first: a warning turned into an error writes no row
            self._writer.append(step, epoch=self._epoch, wall_time=time.time(), metrics=row_metrics,
                                layers=layers)
            if not self._rules_stored:  # the selectivity rule in force, with each layer
                for name in self.layers:
                    floor = layers[name].get("response_min", layers[name].get("train_min"))
                    if floor is not None:
                        self._writer.set_layer_attrs(name, {"signed": bool(np.any(floor < 0))})
                self._rules_stored = True

        self._on_rank0(write, f"rank 0 failed to write the row at step {step} to {self.store_path!r}")

    def _on_rank0(self, action: Callable[[], None], failure: str) -> None:
        """Run `action` on rank 0; raise on every rank if it failed there."""
        error = None
        if self.rank == 0:
            try:
                action()
            except BaseException as exc:
                error = exc
        if not all_ranks_ok(error is None, self.device):
            if error is not None:
                raise error
            raise RuntimeError(failure)

    # ------------------------------------------------------------- lifetime

    @property
    def last_recorded_step(self) -> int | None:
        return self._last_row_step

    def close(self) -> None:
        """Write a final row if step() saw a later step than the last row; remove the hooks."""
        if self._closed:
            return
        try:
            seen, last = self._last_step_seen, self._last_row_step
            if seen is not None and (last is None or seen > last):
                self.record(seen)
        finally:
            self._remove_hooks()

    def _remove_hooks(self) -> None:
        self._closed = True
        self._probe_buffers = ProbeBuffers()  # the memory goes back
        self._online.detach()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._remove_hooks()

    def __repr__(self) -> str:
        return (f"Recorder(layers={self.layers}, store={self.store_path!r}, every={self.every}, "
                f"last_recorded_step={self._last_row_step})")
