"""One layer of a recorded run: `LayerRecord` (numpy only; built by `Run.layer`).

    layer = RunStore.open("runs/demo/baseline").layer("layer3")
    layer.sum_true, layer.selectivity("si"), layer.detectors()
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from recorder import metrics
from recorder.metrics import DETECTOR_MIN_IOU, best_concepts, unique_detectors
from recorder.schema import GROUPINGS, LAYER_ARRAYS, SELECTIVITY_METRICS

from recorder.store.added import added_entries, merged_array

if TYPE_CHECKING:
    from recorder.store.reader import Run

__all__ = ["LayerRecord"]


def _array_property(name: str) -> property:
    spec = LAYER_ARRAYS[name]
    return property(lambda self: self.array(name),
                    doc=f"{spec.dtype} [{', '.join(spec.dims)}], committed rows (KeyError if absent).")


class LayerRecord:
    """The arrays of one layer of a run, and what is computed from them.

        layer = run.layer("layer3")
        layer.sum_true                 # float32 [T, C, K]
        layer.row("sum_true", -1)      # [C, K] of the last checkpoint, one chunk read
        layer.selectivity("si")        # float64 [T, K]
        layer.dominant()               # int64 [T, K], -1 where no class has images
    """

    def __init__(self, run: Run, name: str):
        self.run = run
        self.name = name
        self.units = run.units[name]

    def __repr__(self) -> str:
        return f"LayerRecord({self.name!r}, units={self.units}, arrays={self.arrays})"

    def _key(self, array: str) -> str:
        if array not in LAYER_ARRAYS:
            raise KeyError(f"{array!r} is not a layer array; valid names: {list(LAYER_ARRAYS)}")
        return f"layers/{self.name}/{array}"

    @property
    def arrays(self) -> list[str]:
        """Names of the arrays this layer has, in schema order."""
        return [a for a in LAYER_ARRAYS if self.has(a)]

    def has(self, array: str) -> bool:
        return self.run.has_array(self._key(array))

    def array(self, array: str) -> np.ndarray:
        """Committed rows of one array; KeyError naming array and layer if absent."""
        data = self.run.read(self._key(array))
        if data is None:
            raise KeyError(f"layer {self.name!r} has no array {array!r}; it has {self.arrays}")
        return data

    def row(self, array: str, t: int) -> np.ndarray:
        """Row `t` of one array (negative counts from the end); reads a single chunk."""
        key = self._key(array)
        if not self.run.has_array(key):
            raise KeyError(f"layer {self.name!r} has no array {array!r}; it has {self.arrays}")
        return self.run.read_row(key, t)

    sum_true = _array_property("sum_true")
    count_true = _array_property("count_true")
    sum_pred = _array_property("sum_pred")
    count_pred = _array_property("count_pred")
    max_true = _array_property("max_true")
    train_sum = _array_property("train_sum")
    train_count = _array_property("train_count")
    precision = _array_property("precision")
    response_min = _array_property("response_min")
    train_min = _array_property("train_min")
    threshold = _array_property("threshold")
    iou = _array_property("iou")
    topk_index = _array_property("topk_index")
    topk_value = _array_property("topk_value")
    topk_map = _array_property("topk_map")
    topk_mean_index = _array_property("topk_mean_index")
    topk_mean_value = _array_property("topk_mean_value")

    @property
    def occlusion(self) -> np.ndarray:
        """float16 [T, K, k, gh, gw]: discrepancy maps of each unit's top-k images (recorded, and
        added afterwards by `python -m recorder occlude`); NaN rows where none ran."""
        return merged_array(self.run, self.name, "occlusion")

    @property
    def rf(self) -> np.ndarray:
        """float16 [T, K, 2gh-1, 2gw-1]: each unit's empirical receptive field (as `occlusion`)."""
        return merged_array(self.run, self.name, "rf")

    @property
    def rf_size(self) -> np.ndarray:
        """float32 [T, K]: sqrt of the RF's area at >= half its maximum, input pixels (as `occlusion`)."""
        return merged_array(self.run, self.name, "rf_size")

    @property
    def occlusion_settings(self) -> dict | None:
        """`{patch, stride, fill, measure, every}` of the recorded occlusion, else of the added one."""
        stored = self.run.layer_attrs(self.name).get("occlusion")
        added = added_entries(self.run, self.name)
        return stored or (added["settings"] if added else None)

    @property
    def theoretical_rf(self) -> dict | None:
        """The layer's theoretical receptive field `{size, jump, start}` (input pixels, per axis)."""
        stored = self.run.layer_attrs(self.name).get("theoretical_rf")
        added = added_entries(self.run, self.name)
        return stored or (added["theoretical_rf"] if added else None)

    def _derived(self, key: tuple, compute) -> np.ndarray:
        return self.run.derived((self.name, *key), compute)

    def class_means(self, by: str = "true") -> np.ndarray:
        """float64 `[T, C, K]` class means; NaN for classes without images.

        by: "true" / "pred" (probe pass by true / predicted label), "train" (online,
        cumulative over all windows so far) or "train_window" (this window only).
        """
        if by not in GROUPINGS:
            raise ValueError(f"by={by!r} is not one of {', '.join(map(repr, GROUPINGS))}")

        def compute():
            if by == "true":
                return metrics.class_means(self.sum_true, self.count_true)
            if by == "pred":
                return metrics.class_means(self.sum_pred, self.count_pred)
            sums, counts = self.train_sum, self.train_count
            if by == "train":
                sums = np.cumsum(sums, axis=0, dtype=np.float64)
                counts = np.cumsum(counts, axis=0)
            return metrics.class_means(sums, counts)

        return self._derived(("class_means", by), compute)

    @property
    def signed(self) -> bool:
        """Whether the layer is signed (DESIGN.md "Signed layers"): the rule stored with the
        layer, else whether any probe response (or, without a probe, training response) so
        far is negative. Selectivity then measures class means above each unit's floor."""
        stored = self.run.layer_attrs(self.name).get("signed")
        if stored is not None:
            return bool(stored)
        for array in ("response_min", "train_min"):
            if self.has(array):
                floor = self.array(array)
                return bool(np.any(floor[np.isfinite(floor)] < 0))
        return False

    @property
    def rule(self) -> str:
        """The selectivity rule in force, in words (shown in the viewer)."""
        if self.signed:
            return "signed layer: class means above each unit's smallest response (mu - r_min)"
        return "class means above 0 (Morcos: max(mu, 0))"

    def floor(self, by: str = "true") -> np.ndarray | None:
        """float64 `[T, K]`: each unit's smallest response over the images of grouping `by`
        (probe: `response_min`; "train": the running minimum over the windows so far;
        "train_window": the window's own), or None for runs that did not record it."""
        if by not in GROUPINGS:
            raise ValueError(f"by={by!r} is not one of {', '.join(map(repr, GROUPINGS))}")
        array = "response_min" if by in ("true", "pred") else "train_min"
        if not self.has(array):
            return None

        def compute():
            floor = self.array(array).astype(np.float64)
            return np.fmin.accumulate(floor, axis=0) if by == "train" else floor

        return self._derived(("floor", by), compute)

    def dead(self, by: str = "true") -> np.ndarray:
        """bool `[T, K]`: units whose response is the same on every image of the grouping
        (every class mean at the unit's floor); runs without a floor: `max_c mu <= 1e-7`."""
        return self._derived(("dead", by), lambda: metrics.is_dead(self.class_means(by), self.floor(by)))

    def selectivity(self, metric: str = "si", by: str = "true") -> np.ndarray:
        """float64 `[T, K]` in [0, 1]: "si", "entropy", or the stored "precision" (by="true")."""
        if metric not in SELECTIVITY_METRICS:
            raise ValueError(f"metric {metric!r} is not one of {', '.join(map(repr, SELECTIVITY_METRICS))}")
        if by not in GROUPINGS:
            raise ValueError(f"by={by!r} is not one of {', '.join(map(repr, GROUPINGS))}")
        if metric == "precision":
            if by != "true":
                raise ValueError(f"metric 'precision' is stored by true label only, not by={by!r}")
            return self._derived(("precision",), lambda: self.precision.astype(np.float64))
        floor = self.floor(by)
        return self._derived(("selectivity", metric, by), lambda: metrics.selectivity(
            self.class_means(by), metric, floor, signed=self.signed and floor is not None))

    def dominant(self, by: str = "true") -> np.ndarray:
        """int64 `[T, K]`: argmax over classes of the class means; -1 where all are NaN."""
        return self._derived(("dominant", by), lambda: metrics.dominant(self.class_means(by)))

    def to_xarray(self, arrays: list[str] | None = None):
        """An `xarray.Dataset` of the committed rows with coordinates `step`, `class` (names),
        `unit`, `concept` (names): `(ds.sum_true / ds.count_true).sel(**{"class": "dog"})`."""
        from recorder.store.labeled import layer_dataset

        return layer_dataset(self, arrays)

    def _concept_categories(self) -> tuple[np.ndarray, list[str]]:
        names = list(dict.fromkeys(c.category for c in self.run.concepts))
        return np.array([names.index(c.category) for c in self.run.concepts], dtype=np.int64), names

    def detectors(self, min_iou: float = DETECTOR_MIN_IOU) -> dict[str, np.ndarray]:
        """Each unit's best concept by IoU (Network Dissection), per checkpoint.

        Returns {"concept": int64 [T, K] (index into run.concepts; -1 where the unit is
        no detector), "category": int64 [T, K] (index into `categories`), "iou": float64
        [T, K] (best IoU), "is_detector": bool [T, K] (best IoU > min_iou), "categories":
        list of category names}.
        """
        if not self.has("iou"):
            raise NotImplementedError(
                f"dissection was not recorded for layer {self.name!r}: it has no 'iou' array")
        category, names = self._concept_categories()
        return {**best_concepts(self.iou, category, min_iou), "categories": names}

    def unique_detectors(self, min_iou: float = DETECTOR_MIN_IOU) -> dict[str, np.ndarray]:
        """Per concept category, the number of distinct concepts detected by some unit, int64
        [T] (Bau et al.'s "number of unique detectors" vs. training iteration)."""
        if not self.has("iou"):
            raise NotImplementedError(
                f"dissection was not recorded for layer {self.name!r}: it has no 'iou' array")
        category, names = self._concept_categories()
        return unique_detectors(self.iou, category, names, min_iou)
