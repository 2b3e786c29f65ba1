"""The run store's schema: array names, dtypes and dimension names (no torch).

    >>> LAYER_ARRAYS["sum_true"]
    ArraySpec(dtype='float32', dims=('step', 'class', 'unit'))

Shared by the writer (`recorder.store`), the recorder and the readers, so that
every array of a run is declared in exactly one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

SCHEMA = "tuneline.run/1"


class ArraySpec(NamedTuple):
    dtype: str
    dims: tuple[str, ...]


@dataclass(frozen=True)
class Concept:
    """A visual concept of a probe: `Concept("sky", "scene")`."""

    name: str
    category: str

    def to_dict(self) -> dict:
        return {"name": self.name, "category": self.category}


# Root arrays, one value per checkpoint row.
ROOT_ARRAYS: dict[str, ArraySpec] = {
    "step": ArraySpec("int64", ("step",)),
    "epoch": ArraySpec("float64", ("step",)),
    "wall_time": ArraySpec("float64", ("step",)),
}
METRIC_SPEC = ArraySpec("float64", ("step",))  # metrics/<name> (runs written before scalars)
SCALAR_SPEC = ArraySpec("float64", ("scalar_step",))  # scalars/<name>/step (int64) and /value

# Per-layer arrays under layers/<layer>/ (T checkpoints, C classes, K units,
# P concepts, k top images, h x w activation map).
LAYER_ARRAYS: dict[str, ArraySpec] = {
    "sum_true": ArraySpec("float32", ("step", "class", "unit")),
    "count_true": ArraySpec("int64", ("step", "class")),
    "sum_pred": ArraySpec("float32", ("step", "class", "unit")),
    "count_pred": ArraySpec("int64", ("step", "class")),
    "max_true": ArraySpec("float32", ("step", "class", "unit")),
    "train_sum": ArraySpec("float32", ("step", "class", "unit")),
    "train_count": ArraySpec("int64", ("step", "class")),
    "precision": ArraySpec("float32", ("step", "unit")),
    "response_min": ArraySpec("float32", ("step", "unit")),  # smallest probe response (signed rule)
    "train_min": ArraySpec("float32", ("step", "unit")),  # smallest training response of the window
    "threshold": ArraySpec("float32", ("step", "unit")),
    "iou": ArraySpec("float16", ("step", "unit", "concept")),
    "topk_index": ArraySpec("int32", ("step", "unit", "rank")),
    "topk_value": ArraySpec("float32", ("step", "unit", "rank")),
    "topk_map": ArraySpec("float16", ("step", "unit", "rank", "y", "x")),
    "topk_mean_index": ArraySpec("int32", ("step", "unit", "rank")),  # top-k by spatial mean (topk_by)
    "topk_mean_value": ArraySpec("float32", ("step", "unit", "rank")),
    # occlusion of the top-k images (by max): NaN rows where none ran, NaN units not chosen
    "occlusion": ArraySpec("float16", ("step", "unit", "rank", "grid_y", "grid_x")),
    "rf": ArraySpec("float16", ("step", "unit", "rf_y", "rf_x")),  # empirical RF, (2gh-1, 2gw-1) canvas
    "rf_size": ArraySpec("float32", ("step", "unit")),  # sqrt(area at >= half max), input pixels
}
# Occlusion added after training (`python -m recorder occlude`): group occlusion/<layer>/,
# one entry per occluded checkpoint, keyed by `step`; readers merge it into the layer.
ADDED_OCCLUSION_ARRAYS: dict[str, ArraySpec] = {
    "step": ArraySpec("int64", ("entry",)),
    "occlusion": ArraySpec("float16", ("entry", "unit", "rank", "grid_y", "grid_x")),
    "rf": ArraySpec("float16", ("entry", "unit", "rf_y", "rf_x")),
    "rf_size": ArraySpec("float32", ("entry", "unit")),
}
OCCLUSION_ARRAYS = ("occlusion", "rf", "rf_size")
TOPK_BY = ("max", "mean")

# Written once per run.
PROBE_ARRAYS: dict[str, ArraySpec] = {
    "thumbs": ArraySpec("uint8", ("image", "thumb_y", "thumb_x", "rgb")),
    "labels": ArraySpec("int32", ("image",)),
}

GROUPINGS = ("true", "pred", "train", "train_window")
SELECTIVITY_METRICS = ("si", "entropy", "precision")
