"""Checkpoints of a run: `checkpoints/step_<N>.pt`, loadable with `torch.load(..., weights_only=True)`.

    save_checkpoint(run_dir, step, model, optimizer, scheduler)
    path = latest_checkpoint(run_dir)          # None when the run has none
    state = load_checkpoint(path)              # {"model", "optimizer", "scheduler", "step", "rng", "config"}

A checkpoint holds the model's `state_dict` (unwrapped from DDP), the optimizer's
and scheduler's state, the step (optimizer updates done), the torch CPU RNG state
(dropout and augmentation draw from it) and the run's config. It is written to a
temporary file and renamed, so a crash never leaves half a checkpoint.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from torch import nn

__all__ = ["checkpoint_path", "checkpoint_steps", "latest_checkpoint", "load_checkpoint", "save_checkpoint"]

FOLDER = "checkpoints"
_NAME = re.compile(r"^step_(\d+)\.pt$")


def checkpoint_path(run_dir: str | os.PathLike, step: int) -> Path:
    return Path(run_dir) / FOLDER / f"step_{step}.pt"


def checkpoint_steps(run_dir: str | os.PathLike) -> list[int]:
    """Steps of the run's checkpoints, ascending."""
    folder = Path(run_dir) / FOLDER
    if not folder.is_dir():
        return []
    return sorted(int(m.group(1)) for p in folder.iterdir() if (m := _NAME.match(p.name)))


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    steps = checkpoint_steps(run_dir)
    return checkpoint_path(run_dir, steps[-1]) if steps else None


def save_checkpoint(run_dir: str | os.PathLike, step: int, model: nn.Module, optimizer=None, scheduler=None,
                    config: dict | None = None) -> Path:
    """Write `checkpoints/step_<step>.pt` atomically; returns its path."""
    path = checkpoint_path(run_dir, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "model": getattr(model, "module", model).state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "step": int(step),
        "rng": torch.get_rng_state(),
        "config": config or {},
    }
    tmp = path.with_suffix(".pt.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | os.PathLike) -> dict:
    """A checkpoint's dict, read with `weights_only=True` onto the CPU."""
    return torch.load(path, map_location="cpu", weights_only=True)
