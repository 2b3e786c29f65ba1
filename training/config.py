"""The training configuration: one `@dataclass` of plain typed defaults.

    config = TrainConfig()                                   # the defaults below
    config = load_config("base.json", ["lr=0.1", "batchnorm=true"])   # file, then overrides
    config.save("runs/demo/baseline/config.json")

Every field is validated before a run starts; a bad value is reported with the
field's name, the value and what is allowed. `config.json` next to a run holds
`asdict(config)`: everything needed to rebuild the model and the data.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any

__all__ = ["TrainConfig", "ConfigError", "load_config", "parse_overrides"]

DATA = ("world", "cifar10", "imagefolder")
MODELS = ("cnn", "resnet18")
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step", "constant")
DEVICES = ("auto", "cpu", "cuda")
PROBE_SEED = 1234  # the world seed kept for probes (training.world.make_probe's default)


class ConfigError(ValueError):
    """A configuration value (or override) that is not allowed."""


@dataclass
class TrainConfig:
    # data
    data: str = "world"             # "world" (built in) | "cifar10" | "imagefolder"
    data_root: str = ""             # cifar10: folder holding cifar-10-batches-py/; imagefolder: class folders
    image_size: int = 32            # world render size and imagefolder resize, pixels (cifar10 is 32)
    train_size: int = 16000         # world: training images rendered once and cycled through
    heldout_size: int = 1000        # held-out images for accuracy (world: its own seed)
    probe_size: int = 300           # probe images shown at each record step (balanced classes)
    world_seed: int = 0             # world seed of the training images; held-out uses world_seed + 1
    augment: bool = False           # random flips, crops (pad 4) and color jitter, global torch RNG
    # model
    model: str = "cnn"              # "cnn" (SmallCNN) | "resnet18" (adapted to small images)
    depth: int = 4                  # cnn: number of conv blocks
    width: int = 16                 # cnn: channels of the first block; doubles per block up to 4x
    batchnorm: bool = False         # cnn: BatchNorm after each conv (resnet18 always has it)
    dropout: float = 0.0            # cnn: dropout after each pooled block and before fc
    # optimization
    optimizer: str = "sgd"          # "sgd" (momentum) | "adamw"
    lr: float = 0.05                # peak learning rate
    momentum: float = 0.9           # sgd momentum (adamw: beta1)
    weight_decay: float = 0.0       # L2 (sgd) or decoupled (adamw) weight decay
    schedule: str = "cosine"        # "cosine" (to 0) | "step" (x0.1 at 50% and 75%) | "constant"
    warmup_steps: int = 0           # linear warm-up steps before the schedule
    batch_size: int = 64            # global batch size (split over DDP ranks)
    steps: int = 1500               # optimizer steps in total
    seed: int = 0                   # model init, batch order, dropout and augmentation
    label_smoothing: float = 0.0    # cross-entropy label smoothing
    selectivity_alpha: float = 0.0  # Leavitt & Morcos 2020: loss = CE - alpha * mean SI; < 0 discourages
    # recording
    record: bool = True             # attach a Recorder (online sums + probe passes + dissection)
    record_every: int = 100         # probe pass, held-out accuracy and checkpoint every N steps
    record_layers: list[str] = field(default_factory=list)  # empty: the model's recommended layers
    topk: int = 8                   # top probe images kept per unit
    quantile: float = 0.005         # Network Dissection activation quantile
    dissect: bool = True            # IoU with the probe's concept masks (skipped without masks)
    topk_by: list[str] = field(default_factory=lambda: ["max"])  # add "mean": top-k by spatial mean too
    occlusion_layers: list[str] = field(default_factory=list)  # occluded conv layers; empty: no occlusion
    occlusion_every: int = 5        # occlusion every N-th record row
    occlusion_patch: int = 8        # occluder square, input pixels
    occlusion_stride: int = 4       # occluder stride, input pixels
    occlusion_fill: str = "mean"    # "zero" | "mean" | "noise"
    occlusion_measure: str = "peak"  # "mean" | "max" | "peak"
    builder: str = "training.rebuild:model_and_probe"  # rebuilds model and probe (python -m recorder occlude)
    # machine
    device: str = "auto"            # "auto" (cuda when available) | "cpu" | "cuda"
    threads: int = 0                # torch CPU threads; 0 = leave torch's default
    progress: bool = True           # tqdm progress bars (rank 0)

    def __post_init__(self):
        self.record_layers = list(self.record_layers)
        self.topk_by, self.occlusion_layers = list(self.topk_by), list(self.occlusion_layers)
        self.validate()

    def validate(self) -> None:
        """Check every field; raise ConfigError naming the first bad one and the valid values."""
        choices = {"data": DATA, "model": MODELS, "optimizer": OPTIMIZERS, "schedule": SCHEDULES,
                   "device": DEVICES}
        for name, valid in choices.items():
            if getattr(self, name) not in valid:
                _bad(name, getattr(self, name), "one of " + ", ".join(map(repr, valid)))
        positive = ("image_size", "train_size", "heldout_size", "probe_size", "depth", "width",
                    "batch_size", "steps", "record_every", "topk", "occlusion_every", "occlusion_patch",
                    "occlusion_stride")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                _bad(name, value, "an int >= 1")
        for name in ("warmup_steps", "threads", "seed", "world_seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                _bad(name, value, "an int >= 0")
        for name in ("lr", "momentum", "weight_decay", "selectivity_alpha", "dropout", "label_smoothing",
                     "quantile"):
            if isinstance(getattr(self, name), bool) or not isinstance(getattr(self, name), (int, float)):
                _bad(name, getattr(self, name), "a number")
        ranges = {"dropout": (0.0, 1.0), "label_smoothing": (0.0, 1.0), "momentum": (0.0, 1.0),
                  "quantile": (0.0, 1.0)}
        for name, (lo, hi) in ranges.items():
            if not lo <= getattr(self, name) < hi:
                _bad(name, getattr(self, name), f"a number in [{lo}, {hi})")
        if self.lr <= 0 or self.weight_decay < 0:
            _bad("lr" if self.lr <= 0 else "weight_decay", self.lr if self.lr <= 0 else self.weight_decay,
                 "a number > 0" if self.lr <= 0 else "a number >= 0")
        for name in ("augment", "batchnorm", "record", "dissect", "progress"):
            if not isinstance(getattr(self, name), bool):
                _bad(name, getattr(self, name), "true or false")
        for name in ("record_layers", "occlusion_layers"):
            if not all(isinstance(n, str) and n for n in getattr(self, name)):
                _bad(name, getattr(self, name), "a list of dotted layer names")
        if "max" not in self.topk_by or not set(self.topk_by) <= {"max", "mean"}:
            _bad("topk_by", self.topk_by, "['max'] or ['max', 'mean']")
        for name, valid in (("occlusion_fill", ("zero", "mean", "noise")), ("occlusion_measure", ("mean", "max", "peak"))):
            if getattr(self, name) not in valid:
                _bad(name, getattr(self, name), "one of " + ", ".join(map(repr, valid)))
        if self.data != "world" and not self.data_root:
            _bad("data_root", self.data_root, f"a folder path (data={self.data!r} reads from disk)")
        if self.data == "world" and PROBE_SEED in (self.world_seed, self.world_seed + 1):
            _bad("world_seed", self.world_seed, f"a seed whose images are not the probe's (seed {PROBE_SEED})")
        if self.data == "world" and not 16 <= self.image_size <= 1024:
            _bad("image_size", self.image_size, "an int in [16, 1024] for the world")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """A config from a dict of field values; unknown keys are refused, listing the valid ones."""
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(valid))
        if unknown:
            raise ConfigError(f"unknown config key(s) {unknown}; valid keys: {valid}")
        for f in fields(cls):  # JSON has no int/float distinction: 1 for a float field is fine
            if f.name in values and f.type == "float" and isinstance(values[f.name], int) \
                    and not isinstance(values[f.name], bool):
                values = {**values, f.name: float(values[f.name])}
        return cls(**values)

    def replace(self, **changes) -> TrainConfig:
        return self.from_dict({**self.to_dict(), **changes})

    def save(self, path: str | os.PathLike) -> None:
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=2)
            f.write("\n")


def _bad(name: str, value, valid: str):
    raise ConfigError(f"config {name!r} given an invalid value: {value!r}; expected {valid}")


def _parse_value(name: str, text: str, kind: str):
    """A `--set` value as the field's type: `true`/`false`, numbers, comma lists, strings."""
    try:
        if kind == "bool":
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return text.lower() in ("true", "1", "yes")
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
        if kind.startswith("list"):
            return [part.strip() for part in text.split(",") if part.strip()]
        return text
    except ValueError:
        raise ConfigError(f"config {name!r} given an invalid value: {text!r}; expected a {kind}") from None


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """`["lr=0.1", "batchnorm=true", "record_layers=conv1,fc"]` -> typed values by field."""
    kinds = {f.name: str(f.type) for f in fields(TrainConfig)}
    values = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep:
            raise ConfigError(f"override {item!r} is not key=value")
        if key not in kinds:
            raise ConfigError(f"unknown config key {key!r} in override {item!r}; valid keys: {list(kinds)}")
        values[key] = _parse_value(key, text.strip(), kinds[key])
    return values


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None,
                base: dict[str, Any] | None = None) -> TrainConfig:
    """Defaults, then `base`, then the JSON file at `path`, then `key=value` overrides."""
    values = dict(base or {})
    if path:
        with open(path) as f:
            loaded = json.load(f)
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {os.fspath(path)!r} must hold a JSON object, got {type(loaded).__name__}")
        values.update(loaded)
    values.update(parse_overrides(overrides or []))
    return TrainConfig.from_dict(values)


def differing_keys(a: TrainConfig, b: TrainConfig) -> list[str]:
    """Names of the fields where two configs differ."""
    return [f.name for f in dataclasses.fields(a) if getattr(a, f.name) != getattr(b, f.name)]
