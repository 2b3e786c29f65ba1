"""The `occlusion=` argument of a `Recorder`: its keys, defaults and checks.

    settings = OcclusionSettings.of(dict(layers=["conv3"], patch=8, stride=4, every=5))
    occlusion_problems(dict(patch=0, fill="blur"), image_size=(32, 32))
    # ['occlusion patch given an invalid value: 0; expected an integer >= 1', ...]

`occlusion_problems` lists every bad value (used by `RecorderOptions.check`, which
reports them all together); `layer_problems` checks the layers and units once the
recorded layers' output shapes are known.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from recorder.occlusion.grid import FILLS, MEASURES

__all__ = ["DEFAULTS", "OcclusionSettings", "layer_problems", "occlusion_problems"]

DEFAULTS = {"layers": None, "units": None, "patch": 8, "stride": 4, "fill": "mean", "measure": "peak", "every": 5}


def _is_int(value, minimum: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, numbers.Integral) and value >= minimum


def occlusion_problems(value, image_size: tuple[int, int] | None = None) -> list[str]:
    """One line per bad entry of an `occlusion=` dict (empty when it is valid or None).

    `image_size` (H, W) of the probe images, when known, bounds the patch.
    """
    if value is None:
        return []
    if not isinstance(value, Mapping):
        return [f"occlusion given an invalid value: {value!r}; expected None or a dict with keys "
                f"{list(DEFAULTS)}, e.g. dict(patch=8, stride=4, fill='mean', every=5)"]
    out = []
    unknown = [key for key in value if key not in DEFAULTS]
    if unknown:
        out.append(f"occlusion has unknown key(s) {unknown}; valid keys are {list(DEFAULTS)}")
    given = {**DEFAULTS, **{k: v for k, v in value.items() if k in DEFAULTS}}

    def bad(key: str, valid: str) -> None:
        out.append(f"occlusion {key} given an invalid value: {given[key]!r}; {valid}")

    for key in ("patch", "stride", "every"):
        if not _is_int(given[key], 1):
            bad(key, "expected an integer >= 1" + (" (a row count)" if key == "every" else " (input pixels)"))
    if _is_int(given["patch"], 1) and image_size is not None and given["patch"] > min(image_size):
        bad("patch", f"it must not exceed the probe image size {image_size[0]}x{image_size[1]}")
    if given["fill"] not in FILLS:
        bad("fill", f"valid fills are {list(FILLS)}")
    if given["measure"] not in MEASURES:
        bad("measure", f"valid measures are {list(MEASURES)}")
    layers = given["layers"]
    if layers is not None and (isinstance(layers, str) or not isinstance(layers, Sequence)
                               or not all(isinstance(n, str) and n for n in layers)):
        bad("layers", "expected None (every recorded conv layer) or a list of recorded layer names")
    units = given["units"]
    if units is not None and not (isinstance(units, Mapping) and all(
            isinstance(k, str) and not isinstance(v, (str, bytes)) and isinstance(v, Sequence)
            and all(_is_int(u, 0) for u in v) for k, v in units.items())):
        bad("units", "expected None (every unit) or a dict {layer: [unit indices >= 0]}")
    return out


@dataclass(frozen=True)
class OcclusionSettings:
    """A checked `occlusion=` dict with its defaults filled in.

        s = OcclusionSettings.of({"patch": 4, "stride": 2})
        s.measures        # ('peak',): the stored measure, then "peak" for the receptive field
    """

    layers: tuple[str, ...] | None
    units: dict[str, tuple[int, ...]] | None
    patch: int
    stride: int
    fill: str
    measure: str
    every: int

    @classmethod
    def of(cls, value: Mapping) -> OcclusionSettings:
        problems = occlusion_problems(value)
        if problems:
            raise ValueError("; ".join(problems))
        given = {**DEFAULTS, **value}
        layers = None if given["layers"] is None else tuple(given["layers"])
        units = None if given["units"] is None else {k: tuple(int(u) for u in v) for k, v in given["units"].items()}
        return cls(layers, units, int(given["patch"]), int(given["stride"]), given["fill"], given["measure"],
                   int(given["every"]))

    @property
    def measures(self) -> tuple[str, ...]:
        """The measures one sweep computes: the stored one, and "peak" for the receptive field."""
        return (self.measure,) if self.measure == "peak" else (self.measure, "peak")

    def stored(self) -> dict:
        """The layer attribute `occlusion`: `{patch, stride, fill, measure, every}`."""
        return {key: value for key, value in asdict(self).items() if key not in ("layers", "units")}


def layer_problems(settings: OcclusionSettings, recorded: Sequence[str], shapes: Mapping[str, tuple]) -> list[str]:
    """Bad layers or units of `settings`, given the recorded layers and their per-image output
    shapes ((K, h, w) for layers with a spatial map)."""
    out = []
    spatial = [name for name in recorded if len(shapes[name]) == 3]
    for name in settings.layers or ():
        if name not in recorded:
            out.append(f"occlusion layer {name!r} is not recorded; occlude recorded conv layers: {spatial}")
        elif len(shapes[name]) != 3:
            out.append(f"occlusion layer {name!r} has output shape {tuple(shapes[name])} per image, no spatial "
                       f"map [K, h, w]; layers with one: {spatial}")
    occluded = list(settings.layers) if settings.layers is not None else spatial
    for name, units in (settings.units or {}).items():
        if name not in occluded:
            out.append(f"occlusion units given for layer {name!r}, which is not occluded; occluded layers: "
                       f"{occluded}")
        elif units and max(units) >= shapes[name][0]:
            out.append(f"occlusion units {list(units)} of layer {name!r}: it has {shapes[name][0]} units "
                       f"(valid: 0..{shapes[name][0] - 1})")
    if not occluded and not out:
        out.append(f"occlusion asked for, but no recorded layer has a spatial map (recorded: {list(recorded)}, "
                   f"output shapes {[tuple(shapes[n]) for n in recorded]})")
    return out
