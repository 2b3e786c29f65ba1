"""Occlusion of a finished run's checkpoints: `python -m recorder occlude RUN`.

    added = occlude_run("runs/demo/baseline", layers=["conv3"], every=5)   # [(step, [layers]), ...]

The run folder holds `config.json` and `checkpoints/step_<N>.pt` (a dict whose
`"model"` is the state dict, loaded with `weights_only=True`). The model and the
probe are rebuilt by a *builder*: a function `module:function` that takes the run's
config dict and returns `(model, probe)` (the model's weights are then loaded from
each checkpoint). It is named by the key `"builder"` of the run's config (runs of
`python -m training` name `training.rebuild:model_and_probe`) or by `builder=`
(`--builder`). The probe must be the run's (same fingerprint).

Each committed row whose step has a checkpoint (every `every`-th row, counted in
rows) and whose layer has no occlusion yet is occluded with the row's stored top-k
images, by the same computation as a Recorder's rows (`occlusion_arrays`), and
stored in `occlusion/<layer>/` keyed by step: committed rows are never rewritten.
Settings default to the layer's recorded ones (else the Recorder's defaults);
other settings than the layer already has are refused. `units=` limits a layer to
some of its units; a row once occluded (for any units) is not occluded again.
"""

from __future__ import annotations

import importlib
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from recorder.occlusion.receptive_field import theoretical_rf
from recorder.occlusion.rows import occlusion_arrays
from recorder.occlusion.settings import DEFAULTS, OcclusionSettings, layer_problems, occlusion_problems
from recorder.probe_pass import layer_shapes
from recorder.store import Run
from recorder.store.added import AddedOcclusion

__all__ = ["checkpoint_steps", "load_builder", "occlude_run"]

_CHECKPOINT = re.compile(r"^step_(\d+)\.pt$")
_KEYS = ("patch", "stride", "fill", "measure")


def checkpoint_steps(run_dir: str | os.PathLike) -> dict[int, Path]:
    """`{step: path}` of the run's `checkpoints/step_<N>.pt`."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return {}
    return {int(m.group(1)): p for p in folder.iterdir() if (m := _CHECKPOINT.match(p.name))}


def load_builder(spec: str) -> Callable:
    """The function named `module:function` (ValueError naming a spec that does not resolve)."""
    module, sep, name = str(spec).partition(":")
    if not sep or not module or not name:
        raise ValueError(f"builder given an invalid value: {spec!r}; expected 'module:function', e.g. "
                         "'training.rebuild:model_and_probe'")
    try:
        function = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"builder {spec!r} cannot be loaded: {type(exc).__name__}: {exc}") from exc
    if not callable(function):
        raise ValueError(f"builder {spec!r} is not a function")
    return function


def _run_config(run: Run) -> dict:
    path = run.path / "config.json"
    if path.is_file():
        return json.loads(path.read_text())
    return run.config


def rebuild_model_and_probe(run: Run, builder: str | None = None) -> tuple[str, nn.Module, object]:
    """`(builder spec, model, probe)` of a local run, from the builder named by `builder` or by
    the run's config (`module:function`, config dict -> (model, probe)); the probe must be the
    run's own (same fingerprint), since stored top-k indices point into it."""
    config = _run_config(run)
    spec = builder or config.get("builder")
    if not spec:
        raise ValueError(f"the run at {run.location!r} names no builder in its config; pass a builder "
                         "'module:function' (--builder on the command line; a function config dict -> "
                         "(model, probe)), e.g. training.rebuild:model_and_probe")
    model, probe = load_builder(spec)(config)
    fingerprint = run.probe.get("fingerprint")
    if fingerprint is not None and probe.fingerprint != fingerprint:
        raise ValueError(f"builder {spec!r} gave a probe with fingerprint {probe.fingerprint!r}, but the run was "
                         f"recorded with {fingerprint!r}; the top-k images index the run's own probe")
    return spec, model, probe


def _settings(run: Run, layer: str, given: dict, every: int) -> OcclusionSettings:
    """The layer's recorded or added settings, else the defaults; refuse given ones that differ."""
    record = run.layer(layer)
    stored = record.occlusion_settings or {}
    chosen = {key: stored.get(key, DEFAULTS[key]) for key in _KEYS}
    clash = {key: value for key, value in given.items() if value is not None and stored and value != stored[key]}
    if clash:
        raise ValueError(f"layer {layer!r} already has occlusion with "
                         f"{ {key: stored[key] for key in _KEYS} }; cannot add {clash} beside it")
    chosen.update({key: value for key, value in given.items() if value is not None})
    return OcclusionSettings.of({**chosen, "every": every})


def occlude_run(run_dir: str | os.PathLike, *, layers: Sequence[str] | None = None, every: int = 1,
                patch: int | None = None, stride: int | None = None, fill: str | None = None,
                measure: str | None = None, units: Mapping[str, Sequence[int]] | None = None,
                builder: str | None = None, device: str = "cpu", batch_size: int = 256,
                log: Callable[[str], None] | None = None) -> list[tuple[int, list[str]]]:
    """Add occlusion to the checkpoints of the run at `run_dir` (see the module docstring).

    `units` ({layer: [unit indices]}) occludes only those units of a layer (the others'
    rows stay NaN), as `Recorder(occlusion=dict(units=...))` does. Returns `(step, layers
    occluded)` for each checkpoint occluded now.
    """
    run = Run.open(run_dir)
    if run.path is None:
        raise ValueError(f"occlude reads checkpoints from a local run folder; {run.location!r} is a URL")
    settings_given = {"patch": patch, "stride": stride, "fill": fill, "measure": measure}
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"every given an invalid value: {every!r}; expected an integer >= 1 (a row count)")
    spec, model, probe = rebuild_model_and_probe(run, builder)
    model = model.to(device)
    shapes = layer_shapes(model, probe, run.layers, torch.device(device))
    given = {"layers": list(layers) if layers is not None else None, "every": every, "units": units,
             **{key: value for key, value in settings_given.items() if value is not None}}
    problems = occlusion_problems(given, tuple(probe.image_size))
    problems = problems or layer_problems(OcclusionSettings.of(given), run.layers, shapes)
    if problems:
        raise ValueError("; ".join(problems))
    settings = {}
    chosen = list(layers) if layers is not None else [name for name in run.layers if len(shapes[name]) == 3]
    for name in chosen:
        settings[name] = _settings(run, name, settings_given, every)
    image_shape = (probe.channels, *probe.image_size)
    rf = {name: theoretical_rf(model, name, image_shape) for name in chosen}
    checkpoints = checkpoint_steps(run.path)
    writer = AddedOcclusion.open(run.path)
    done = []
    for t, step in enumerate(run.steps.tolist()):
        if t % every or step not in checkpoints:
            continue
        todo = [name for name in chosen if _missing(run, writer, name, t, step)]
        if not todo:
            continue
        state = torch.load(checkpoints[step], map_location=device, weights_only=True)
        model.load_state_dict(state["model"] if isinstance(state, dict) and "model" in state else state)
        groups = {}  # layers with the same settings share one sweep
        for name in todo:
            groups.setdefault(settings[name], []).append(name)
        for setting, names in groups.items():
            index = {name: torch.as_tensor(run.layer(name).row("topk_index", t), dtype=torch.int64) for name in names}
            chosen_units = {name: torch.as_tensor(units[name]) for name in names if name in (units or {})}
            arrays = occlusion_arrays(model, probe, index, setting, rf, chosen_units,
                                      image_size=tuple(probe.image_size), batch_size=batch_size)
            for name in names:
                writer.append(name, step, {key: value.numpy() for key, value in arrays[name].items()},
                              {key: getattr(setting, key) for key in _KEYS}, rf[name].to_dict())
        done.append((step, todo))
        if log is not None:
            log(f"step {step}: occluded {', '.join(todo)}")
    return done


def _missing(run: Run, writer: AddedOcclusion, layer: str, t: int, step: int) -> bool:
    """Whether row `t` of `layer` has no occlusion, recorded or added."""
    record = run.layer(layer)
    if record.has("occlusion") and not np.isnan(record.row("occlusion", t)).all():
        return False
    return step not in writer.steps(layer).tolist()
