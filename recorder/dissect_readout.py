"""Network Dissection readouts from stored IoU (numpy only, no torch).

    >>> import numpy as np
    >>> iou = np.array([[0.30, 0.01, 0.02],      # unit 0: detector of concept 0
    ...                 [0.02, 0.03, 0.01],      # unit 1: best IoU 0.03, no detector
    ...                 [0.10, 0.05, 0.20]])     # unit 2: detector of concept 2
    >>> category = np.array([0, 0, 1])           # concepts 0, 1: "object"; 2: "color"
    >>> best_concepts(iou, category)["concept"]
    array([ 0, -1,  2])
    >>> unique_detectors(iou, category, ["object", "color"])
    {'object': array(1), 'color': array(1)}

IoU arrays have the unit axis -2 and the concept axis -1 (`[..., K, P]`); leading
axes (checkpoints) are kept, so a whole timeline `[T, K, P]` is read at once. NaN
IoU (not recorded) counts as no IoU.
"""

from __future__ import annotations

import numpy as np

__all__ = ["DETECTOR_MIN_IOU", "best_concepts", "unique_detectors"]

DETECTOR_MIN_IOU = 0.04  # Bau et al. 2017: a unit detects its best concept above this IoU


def _as_iou(iou, concept_category) -> tuple[np.ndarray, np.ndarray]:
    iou = np.asarray(iou, dtype=np.float64)
    concept_category = np.asarray(concept_category, dtype=np.int64)
    if iou.ndim < 2 or concept_category.shape != iou.shape[-1:]:
        raise ValueError(f"iou must have shape [..., K, P] with P = len(concept_category) = "
                         f"{concept_category.size}, got {iou.shape}")
    return iou, concept_category


def best_concepts(iou, concept_category, min_iou: float = DETECTOR_MIN_IOU) -> dict[str, np.ndarray]:
    """Each unit's best concept: {"concept", "category"} int64 [..., K] (-1 when the unit is
    no detector), "iou" float64 [..., K] (best IoU; NaN when none recorded), "is_detector"
    bool [..., K] (best IoU > min_iou)."""
    iou, concept_category = _as_iou(iou, concept_category)
    if iou.shape[-1] == 0:
        best = np.full(iou.shape[:-1], np.nan)
        argmax = np.zeros(iou.shape[:-1], dtype=np.int64)
    else:
        argmax = np.where(np.isnan(iou), -np.inf, iou).argmax(-1)
        best = np.take_along_axis(iou, argmax[..., None], axis=-1)[..., 0]
        best = np.where(np.isnan(iou).all(-1), np.nan, best)
    is_detector = best > min_iou  # NaN > x is False
    concept = np.where(is_detector, argmax, -1)
    category = np.where(is_detector, concept_category[argmax] if iou.shape[-1] else -1, -1)
    return {"concept": concept, "category": category, "iou": best, "is_detector": is_detector}


def unique_detectors(iou, concept_category, categories, min_iou: float = DETECTOR_MIN_IOU
                     ) -> dict[str, np.ndarray]:
    """Per category name, the number of distinct concepts among the detectors whose best
    concept is in that category, int64 [...] (Bau et al.'s "unique detectors")."""
    iou, concept_category = _as_iou(iou, concept_category)
    best = best_concepts(iou, concept_category, min_iou)
    n_concepts = iou.shape[-1]
    # detected[..., c]: some unit of the layer is a detector of concept c
    detected = (best["concept"][..., None] == np.arange(n_concepts)).any(-2)  # [..., P]
    return {name: np.asarray(detected[..., concept_category == g].sum(-1)) for g, name in enumerate(categories)}
