"""`RecorderCallback`: the `Recorder` as a Lightning callback (imports `lightning`; `recorder` does not).

    trainer = L.Trainer(callbacks=[RecorderCallback(["net.layer4"], probe=probe,
                                                    store="runs/demo/baseline", every=100)])
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.types import STEP_OUTPUT
from torch import nn

from recorder.hooks import UnknownLayerError
from recorder.options import RecorderOptions
from recorder.recording import Recorder

RECORDER_KWARGS = RecorderOptions.names()  # the Recorder's arguments after `layers`
DEFAULT_STORE = "recorder"  # under trainer.default_root_dir when store=None


def _invalid(option: str, value: Any, valid: str) -> ValueError:
    return ValueError(f"RecorderCallback option {option!r} given an invalid value: {value!r}; {valid}")


def _as_names(option: str, value: Any, *, allow_empty: bool) -> tuple[str, ...]:
    names = (value,) if isinstance(value, str) else value
    if not isinstance(names, Sequence) or not all(isinstance(n, str) and n for n in names) or (
            not names and not allow_empty):
        raise _invalid(option, value, "expected a name or a list of names, e.g. ['layer4']")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise _invalid(option, value, f"names {repeated} appear more than once")
    return tuple(names)


def default_labels(batch: Any) -> Any:
    """The labels of an `(x, y, ...)` batch: its second item."""
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[1]
    raise TypeError(f"RecorderCallback cannot find labels in a training batch of type {type(batch).__name__}; "
                    "batches are (x, y) by default, pass get_labels=lambda batch: ... for others")


def default_logits(outputs: STEP_OUTPUT) -> torch.Tensor | None:
    """`outputs["logits"]` when `training_step` returns a dict holding them, else None."""
    if isinstance(outputs, Mapping) and torch.is_tensor(outputs.get("logits")):
        return outputs["logits"]
    return None


class RecorderCallback(pl.Callback):
    """Record how the units of the named layers become tuned while a LightningModule trains.

        probe = ProbeSet.from_h5("probe.h5")
        recorder = RecorderCallback(["net.layer3", "net.layer4"], probe=probe,
                                    store="runs/demo/baseline", every=100, log_metrics=["val_acc"])
        trainer = L.Trainer(max_steps=5000, callbacks=[recorder])
        trainer.fit(module, train_loader, val_loader)      # rows at steps 1, 100, 200, ..., 5000
        run = RunStore.open("runs/demo/baseline")

    Takes the arguments of `Recorder` except the model: `layers` are dotted names in
    the LightningModule, or in its submodule `module` (an attribute path, e.g. "net").
    `store=None` writes to `<trainer.default_root_dir>/recorder`. The step is
    `trainer.global_step` (optimizer steps): with gradient accumulation the labels of
    the micro-batches of one optimizer step are passed to `Recorder.step` together.

    Args:
        get_labels: `batch -> labels`; default: the second item of an `(x, y)` batch.
        get_logits: `outputs of training_step -> logits or None` (train accuracy);
            default: `outputs["logits"]` when present.
        log_metrics: names in `trainer.callback_metrics` (e.g. "val_acc"), or "all" for
            every scalar there, stored after each validation at the current global step
            (`run.scalar("val_acc")` -> steps, values).
        **recorder_kwargs: the `Recorder` arguments after `layers` (`probe`, `store`,
            `every`, `quantile`, `topk`, `classes`, `batch_size`, `online`, `dissect`,
            `predict`, `run_name`, `config`, `progress`, `device`, `storage_options`),
            validated together at once; `progress` defaults to whether the Trainer shows a progress bar, `device` to
            the module's device, followed when Lightning moves it).
    """

    def __init__(
        self,
        layers: str | Sequence[str],
        *,
        module: str | None = None,
        get_labels: Callable[[Any], Any] | None = None,
        get_logits: Callable[[STEP_OUTPUT], torch.Tensor | None] | None = None,
        log_metrics: str | Sequence[str] = (),
        **recorder_kwargs: Any,
    ):
        unknown = sorted(set(recorder_kwargs) - set(RECORDER_KWARGS))
        if unknown:
            raise TypeError(f"RecorderCallback got unknown argument(s) {unknown}; "
                            f"valid Recorder arguments: {list(RECORDER_KWARGS)}")
        self.layers = _as_names("layers", layers, allow_empty=False)
        self.log_metrics = "all" if log_metrics == "all" else _as_names("log_metrics", log_metrics, allow_empty=True)
        if module is not None and not (isinstance(module, str) and all(p.isidentifier() for p in module.split("."))):
            raise _invalid("module", module, "expected None (the LightningModule) or an attribute path, e.g. 'net'")
        for option, fn in (("get_labels", get_labels), ("get_logits", get_logits)):
            if fn is not None and not callable(fn):
                raise _invalid(option, fn, "expected None or a function")
        # the Recorder's own checks, now rather than at fit start; store=None means the default folder
        self.options = RecorderOptions(**recorder_kwargs)
        self.options.check(owner="RecorderCallback", store_required=False)
        self.store = self.options.store
        self.every = self.options.every
        self.module = module
        self.get_labels = get_labels or default_labels
        self.get_logits = get_logits or default_logits
        self.recorder_kwargs = recorder_kwargs
        self.recorder: Recorder | None = None
        self._loaded: dict[str, Any] | None = None  # state from a checkpoint, until fit starts
        self._last_global_step = 0  # the step of the last flush (step() call or skip)
        self._skip_through: int | None = None  # resumed behind the store: its rows up to here stand
        self._labels: list[torch.Tensor] = []  # micro-batches since the last flush
        self._logits: list[torch.Tensor | None] = []

    @property
    def state_key(self) -> str:
        return self._generate_state_key(layers=self.layers, store=None if self.store is None else os.fspath(self.store))

    # ---------------------------------------------------------------- start

    def _target(self, pl_module: pl.LightningModule) -> nn.Module:
        target: Any = pl_module
        for i, part in enumerate(self.module.split(".") if self.module else []):
            if not isinstance(getattr(target, part, None), nn.Module):
                where = ".".join(["pl_module", *self.module.split(".")[:i]])
                children = [name for name, _ in target.named_children()]
                raise AttributeError(f"Cannot use RecorderCallback(module={self.module!r}) with "
                                     f"{type(pl_module).__name__}: {where} has no submodule {part!r}; "
                                     f"its submodules: {children}")
            target = getattr(target, part)
        return target

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Build the Recorder on the module (checks every layer name before any hook is registered)."""
        self.recorder = None
        target = self._target(pl_module)
        store = self.store if self.store is not None else os.path.join(trainer.default_root_dir, DEFAULT_STORE)
        kwargs = {"progress": trainer.progress_bar_callback is not None, **self.recorder_kwargs, "store": store}
        try:
            self.recorder = Recorder(target, self.layers, **kwargs)
        except UnknownLayerError as exc:
            name = type(pl_module).__name__ + (f".{self.module}" if self.module else "")
            raise UnknownLayerError(f"Cannot use RecorderCallback on {name}: {exc}") from exc
        self._labels, self._logits = [], []

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Check the store against the (possibly resumed) global step."""
        rec, step, loaded = self._recorder("on_train_start"), trainer.global_step, self._loaded
        self._last_global_step, self._skip_through, self._loaded = step, None, None
        last = rec.last_recorded_step
        if loaded is not None and loaded.get("last_recorded_step") is not None and (
                last is None or last < loaded["last_recorded_step"]):
            rank_zero_warn(f"RecorderCallback: the checkpoint was recorded up to step "
                           f"{loaded['last_recorded_step']} but the store {rec.store_path!r} has rows only up "
                           f"to step {last}; recording continues from step {step}")
        if last is None or last <= step:
            return
        if loaded is None:
            raise RuntimeError(
                f"Cannot use RecorderCallback with store {rec.store_path!r}: it has rows up to step {last} but "
                f"training starts at step {step}; resume from the checkpoint of that run "
                "(trainer.fit(..., ckpt_path=...)) or choose a new store")
        rank_zero_warn(f"RecorderCallback: resumed at step {step}, behind the store's last row at step {last}; "
                       f"its rows are kept and steps up to {last} are not recorded again")
        self._skip_through = last

    # -------------------------------------------------------------- batches

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: STEP_OUTPUT,
                           batch: Any, batch_idx: int) -> None:
        """Keep the batch's labels; once the optimizer has stepped, pass them to `Recorder.step`."""
        rec = self._recorder("on_train_batch_end")
        self._labels.append(torch.as_tensor(self.get_labels(batch)).detach().reshape(-1))
        logits = self.get_logits(outputs)
        self._logits.append(None if logits is None else logits.detach())
        step = trainer.global_step
        if step <= self._last_global_step:  # accumulating gradients: the optimizer has not stepped yet
            return
        labels, logits = torch.cat(self._labels), self._logits
        logits = None if any(t is None for t in logits) else torch.cat(logits)
        self._labels, self._logits = [], []
        self._last_global_step = step
        if self._skip_through is not None and step <= self._skip_through:
            rec.discard_pending()  # a replayed step the store already has: drop its responses
            return
        self._skip_through = None
        n_batches = trainer.num_training_batches
        epoch = trainer.current_epoch + ((batch_idx + 1) / n_batches if 0 < n_batches < float("inf") else 0)
        rec.step(step, labels=labels, logits=logits, epoch=epoch)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Store the `log_metrics` values of `trainer.callback_metrics` at the current step."""
        if not self.log_metrics or trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        found = trainer.callback_metrics
        if self.log_metrics == "all":
            values = {name: float(v) for name, v in found.items() if not torch.is_tensor(v) or v.numel() == 1}
            self._recorder("on_validation_end").log_metrics(values)
            return
        missing = [name for name in self.log_metrics if name not in found]
        if missing:
            raise KeyError(f"RecorderCallback(log_metrics={list(self.log_metrics)}): {missing} not found in "
                           f"trainer.callback_metrics after validation; logged metrics: {sorted(found)}")
        self._recorder("on_validation_end").log_metrics({name: float(found[name]) for name in self.log_metrics})

    # ------------------------------------------------------------------ end

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Close the Recorder: the final row, while the model is still on its device."""
        if self.recorder is not None:
            self.recorder.close()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Close the Recorder if training never ran (no row then); remove its hooks."""
        if self.recorder is not None:
            self.recorder.close()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Remove the Recorder's hooks if they are still there."""
        if self.recorder is not None:
            self.recorder.close()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        """Remove the Recorder's hooks without a final row."""
        if self.recorder is not None:
            self.recorder.__exit__(type(exception), exception, exception.__traceback__)

    # ---------------------------------------------------------------- state

    def state_dict(self) -> dict[str, Any]:
        """The store and its last recorded step, checked against the store when a resumed fit starts."""
        rec = self.recorder
        return {"last_recorded_step": None if rec is None else rec.last_recorded_step,
                "store": None if rec is None else rec.store_path}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Remember a checkpoint's state until training starts."""
        self._loaded = dict(state_dict)

    def _recorder(self, hook: str) -> Recorder:
        if self.recorder is None:
            raise RuntimeError(f"RecorderCallback.{hook} ran before on_fit_start built the Recorder")
        return self.recorder

    def __repr__(self) -> str:
        return (f"RecorderCallback(layers={list(self.layers)}, store={self.store!r}, every={self.every}, "
                f"module={self.module!r})")
