"""Rebuild a run's model and probe from its `config.json` (the builder of `python -m recorder occlude`).

    model, probe = model_and_probe(json.load(open("runs/demo/baseline/config.json")))
    # python -m recorder occlude runs/demo/baseline --layers conv3,conv4

The model is built with fresh weights (the caller loads a checkpoint's state dict);
the probe is the one `training.train` recorded with. Runs of the rotation control
(`training.rotate`) are refused: their units are rotated after loading.
"""

from __future__ import annotations

from dataclasses import fields

from torch import nn

from training.config import TrainConfig
from training.datasets import _world_probe, load_data
from training.models import build_model
from training.world import CLASSES

__all__ = ["model_and_probe"]

BUILDER = "training.rebuild:model_and_probe"


def model_and_probe(config: dict) -> tuple[nn.Module, object]:
    """`(model, probe)` of a run of `python -m training train` from its config dict."""
    if "rotation" in config:
        raise ValueError("this run is a rotation control (training.rotate): its units are rotated after each "
                         "checkpoint is loaded, so the plain model would not be the recorded one; occlude "
                         f"its source run {config['rotation'].get('source')!r} instead")
    known = {f.name for f in fields(TrainConfig)}
    train_config = TrainConfig.from_dict({key: value for key, value in config.items() if key in known})
    if train_config.data == "world":  # the probe alone: the training images need not be rendered
        probe, n_classes = _world_probe(train_config.probe_size, train_config.image_size), len(CLASSES)
    else:
        data = load_data(train_config)
        probe, n_classes = data.probe, len(data.classes)
    return build_model(train_config, n_classes), probe
