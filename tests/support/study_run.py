"""A tiny trained run with saved checkpoints for the study tests (training's smoke settings).

    run_dir = tiny_run(tmp_path / "run")     # steps 0, 3, 6 recorded, each with checkpoints/step_<N>.pt
"""

from __future__ import annotations

from pathlib import Path

from training.config import TrainConfig
from training.train import train

SETTINGS = {"image_size": 16, "train_size": 64, "heldout_size": 20, "probe_size": 48, "depth": 2, "width": 4,
            "batch_size": 16, "steps": 6, "record_every": 3, "threads": 1, "progress": False, "quantile": 0.05}


def tiny_run(out: Path, **overrides) -> Path:
    train(TrainConfig(**{**SETTINGS, **overrides}), out)
    return out
