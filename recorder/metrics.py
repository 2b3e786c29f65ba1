"""Class means, selectivity and dominant class of units (numpy only, no torch).

    >>> import numpy as np
    >>> from recorder import metrics
    >>> sums = np.array([[4.0, 1.0], [0.0, 1.0], [0.0, 1.0]])   # [C=3, K=2]
    >>> counts = np.array([2, 2, 2])                             # [C]
    >>> mu = metrics.class_means(sums, counts)                   # [C, K]
    >>> metrics.dominant(mu), metrics.selectivity(mu, "si").round(3)
    (array([0, 0]), array([1., 0.]))

Every function takes class means `mu` of shape `[..., C, K]` (class axis -2, unit
axis -1) and is vectorized over the leading axes, so a whole timeline `[T, C, K]`
is computed at once. Classes without images are NaN in `mu` and are left out of
every statistic; a unit with fewer than two such valid classes has no contrast,
so its selectivity is NaN. A dead unit (the same response on every image) has
selectivity 0. Signed layers (any response below 0: a conv before its ReLU,
BatchNorm, logits, tokens) measure selectivity above each unit's floor `r_min`
instead of above 0 (`signed=True`; DESIGN.md "Signed layers").
"""

from __future__ import annotations

import numpy as np

from recorder.schema import SELECTIVITY_METRICS

__all__ = [
    "DEAD_EPS",
    "DETECTOR_MIN_IOU",
    "best_concepts",
    "class_means",
    "dominant",
    "entropy",
    "imrou",
    "is_dead",
    "mask_iou",
    "precision",
    "selectivity",
    "unique_detectors",
    "si",
]

DEAD_EPS = 1e-7  # a unit whose largest class mean is <= this is dead (when r_min is unknown)
DEAD_RTOL = 1e-5  # ... or, with r_min known, whose class means all lie within this (relative) of it


def _as_mu(mu) -> np.ndarray:
    mu = np.asarray(mu, dtype=np.float64)
    if mu.ndim < 2:
        raise ValueError(f"mu must have shape [..., C, K], got shape {mu.shape}")
    return mu


def _valid_max(mu: np.ndarray) -> np.ndarray:
    """Max over the class axis ignoring NaN; -inf where every class is NaN."""
    return np.where(np.isnan(mu), -np.inf, mu).max(axis=-2, initial=-np.inf)


def class_means(sums, counts) -> np.ndarray:
    """Per-class mean response: `mu[..., c, k] = sums[..., c, k] / counts[..., c]`.

    Classes with `counts == 0` are NaN, never 0. Returns float64 `[..., C, K]`.
    """
    sums = np.asarray(sums, dtype=np.float64)
    counts = np.asarray(counts)
    if sums.ndim < 2 or counts.shape != sums.shape[:-1]:
        raise ValueError(
            f"sums must be [..., C, K] and counts [..., C]; got sums {sums.shape} "
            f"and counts {counts.shape}"
        )
    counts = counts.astype(np.float64)[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        mu = sums / counts
    return np.where(counts > 0, mu, np.nan)


def _as_floor(r_min, mu: np.ndarray) -> np.ndarray | None:
    if r_min is None:
        return None
    r_min = np.asarray(r_min, dtype=np.float64)
    if r_min.shape != mu.shape[:-2] + mu.shape[-1:]:
        raise ValueError(f"r_min must have shape [..., K] = {list(mu.shape[:-2] + mu.shape[-1:])} like mu "
                         f"[..., C, K] = {list(mu.shape)}, got {list(r_min.shape)}")
    return r_min


def is_dead(mu, r_min=None) -> np.ndarray:
    """Dead units: the response is the same on every image.

    With `r_min` (`[..., K]`, each unit's smallest response over the images of the
    grouping): every valid class mean lies within float tolerance of `r_min` (a mean
    equals the minimum only when all its images do). Without it (runs that predate
    it): `nanmax_c mu[..., c, k] <= 1e-7`. True when every class is NaN.
    Returns bool `[..., K]`.
    """
    mu = _as_mu(mu)
    top = _valid_max(mu)
    r_min = _as_floor(r_min, mu)
    if r_min is None:
        return top <= DEAD_EPS
    with np.errstate(invalid="ignore"):
        return ~(top - r_min > DEAD_EPS + DEAD_RTOL * np.abs(r_min))


def _positive_parts(mu: np.ndarray, r_min: np.ndarray | None, signed: bool):
    """`mu_plus` (Morcos' `max(mu, 0)`, or `mu - r_min` for a signed layer) with NaN
    classes as 0, the valid-class count and the dead units."""
    if signed and r_min is None:
        raise ValueError("signed=True needs r_min, each unit's smallest response ([..., K])")
    valid = ~np.isnan(mu)
    shifted = mu - r_min[..., None, :] if signed else mu
    mu_plus = np.where(valid, np.maximum(shifted, 0.0), 0.0)  # rounding below the floor -> 0
    return mu_plus, valid.sum(axis=-2), is_dead(mu, r_min)


def si(mu, r_min=None, signed: bool = False) -> np.ndarray:
    """Class selectivity index (Morcos et al. 2018) on `mu_plus = max(mu, 0)`, or on
    `mu_plus = mu - r_min` for a signed layer (DESIGN.md "Signed layers").

    `si = (mu_max - mu_rest) / (mu_max + mu_rest + 1e-7)` with `mu_rest` the mean of
    the other valid classes' means (one occurrence of the max left out). Dead units
    (`is_dead(mu, r_min)`) are 0; units with fewer than 2 valid classes are NaN.
    Returns float64 `[..., K]` in [0, 1].
    """
    mu = _as_mu(mu)
    mu_plus, n_valid, dead = _positive_parts(mu, _as_floor(r_min, mu), signed)
    mu_max = mu_plus.max(axis=-2, initial=0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        mu_rest = (mu_plus.sum(axis=-2) - mu_max) / (n_valid - 1)
        mu_rest = np.maximum(mu_rest, 0.0)  # rounding in the subtraction
        out = (mu_max - mu_rest) / (mu_max + mu_rest + DEAD_EPS)
    out = np.where(dead | (mu_max <= DEAD_EPS), 0.0, np.clip(out, 0.0, 1.0))
    return np.where(n_valid < 2, np.nan, out)


def entropy(mu, r_min=None, signed: bool = False) -> np.ndarray:
    """Entropy selectivity: `1 - H(p) / log(C)` with `p = mu_plus / sum_c mu_plus`.

    `mu_plus` as in `si`, C = the number of valid (non-NaN) classes, and
    `0 * log 0 = 0`. Dead units are 0; units with fewer than 2 valid classes are
    NaN. Returns float64 `[..., K]` in [0, 1].
    """
    mu = _as_mu(mu)
    mu_plus, n_valid, dead = _positive_parts(mu, _as_floor(r_min, mu), signed)
    total = mu_plus.sum(axis=-2, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = mu_plus / total
        plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
        out = 1.0 + plogp.sum(axis=-2) / np.log(n_valid)
    dead = dead | (mu_plus.max(axis=-2, initial=0.0) <= DEAD_EPS)
    out = np.where(dead, 0.0, np.clip(out, 0.0, 1.0))
    return np.where(n_valid < 2, np.nan, out)


def dominant(mu) -> np.ndarray:
    """Dominant class of each unit: `argmax_c mu[..., c, k]` ignoring NaN classes.

    Returns int64 `[..., K]`, -1 where every class is NaN.
    """
    mu = _as_mu(mu)
    if mu.shape[-2] == 0:
        return np.full(mu.shape[:-2] + mu.shape[-1:], -1, dtype=np.int64)
    arg = np.where(np.isnan(mu), -np.inf, mu).argmax(axis=-2).astype(np.int64)
    return np.where(np.isnan(mu).all(axis=-2), -1, arg)


def precision(responses, labels, dominant, n=None, dead=None) -> np.ndarray:
    """Top-n precision (Zhou et al. 2015): share of a unit's top-n images of its class.

    `precision[k] = |{i in top_n(responses[:, k]) : labels[i] == dominant[k]}| / n_k`
    where top_n ranks the labeled images (label >= 0; unlabeled ones are left out)
    by response, descending, ties broken by the lower image index (stable sort).
    `n_k` = `n` when given, else the number of labeled images of class
    `dominant[k]`; it is capped at the number of labeled images. Units with
    `dominant < 0` or `n_k == 0` are NaN; units marked in `dead` are 0.
    `responses` is `[N, K]`, `labels` `[N]`, `dominant` and `dead` `[K]`.
    Returns float64 `[K]`.
    """
    responses = np.asarray(responses, dtype=np.float64)
    labels = np.asarray(labels)
    dominant = np.asarray(dominant)
    if responses.ndim != 2:
        raise ValueError(f"responses must be [N, K], got shape {responses.shape}")
    n_img, n_units = responses.shape
    if labels.shape != (n_img,):
        raise ValueError(f"labels must be [N] = [{n_img}], got shape {labels.shape}")
    if dominant.shape != (n_units,):
        raise ValueError(f"dominant must be [K] = [{n_units}], got shape {dominant.shape}")
    if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1):
        raise ValueError(f"n must be a positive int or None, got {n!r}")
    if dead is not None:
        dead = np.asarray(dead, dtype=bool)
        if dead.shape != (n_units,):
            raise ValueError(f"dead must be [K] = [{n_units}], got shape {dead.shape}")

    labeled = labels >= 0
    responses, labels = responses[labeled], labels[labeled]
    n_lab = len(labels)
    if n is None:
        class_count = np.bincount(labels, minlength=int(dominant.max(initial=0)) + 1)
        n_k = np.where(dominant >= 0, class_count[np.maximum(dominant, 0)], 0)
    else:
        n_k = np.full(n_units, int(n))
    n_k = np.minimum(n_k, n_lab)

    out = np.full(n_units, np.nan)
    ok = (dominant >= 0) & (n_k > 0)
    if ok.any():
        order = np.argsort(-responses[:, ok], axis=0, kind="stable")  # [N', K']
        hits = np.cumsum(labels[order] == dominant[ok][None, :], axis=0)
        cols = np.arange(order.shape[1])
        out[ok] = hits[n_k[ok] - 1, cols] / n_k[ok]
    if dead is not None:
        out = np.where(dead & (dominant >= 0), 0.0, out)
    return out


def selectivity(mu, metric: str = "si", r_min=None, signed: bool = False) -> np.ndarray:
    """Selectivity of each unit by name: `"si"` (see `si`) or `"entropy"` (see `entropy`),
    under the signed-layer rule when `signed` (with `r_min`, each unit's floor).

    `"precision"` needs per-image responses, so it is not computed from `mu`: read
    the stored `precision` array (or call `precision(responses, labels, dominant)`).
    Returns float64 `[..., K]`.
    """
    if metric == "si":
        return si(mu, r_min, signed)
    if metric == "entropy":
        return entropy(mu, r_min, signed)
    if metric == "precision":
        raise ValueError(
            "metric 'precision' needs per-image responses and cannot be computed "
            "from class means: read it from the stored `precision` array, or call "
            "recorder.metrics.precision(responses, labels, dominant)"
        )
    valid = ", ".join(repr(m) for m in SELECTIVITY_METRICS)
    raise ValueError(f"metric {metric!r} is not one of {valid}")


# Network Dissection readouts from stored IoU: unit axis -2, concept axis -1 (`[..., K, P]`);
# leading axes (checkpoints) are kept. NaN IoU (not recorded) counts as no IoU.

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


IMROU_R = 0.75  # Harth 2022: the share of the chance overlap the score subtracts


def _as_masks(predicted, actual) -> tuple[np.ndarray, np.ndarray]:
    predicted, actual = np.asarray(predicted), np.asarray(actual)
    for name, masks in (("predicted", predicted), ("actual", actual)):
        if masks.ndim != 3 or masks.dtype != bool:
            raise ValueError(f"{name} must be a boolean array [N, h, w], got {masks.dtype} of shape {masks.shape}")
    if predicted.shape != actual.shape:
        raise ValueError(f"predicted and actual masks must have the same shape [N, h, w], got {predicted.shape} "
                         f"and {actual.shape}")
    return predicted, actual


def imrou(predicted, actual, r: float = IMROU_R) -> float:
    """Normalized ImRoU_r of predicted masks `L` against a unit's masks `N`, both bool `[N, h, w]`.

        >>> actual = np.zeros((2, 2, 2), bool); actual[0, 0, 0] = True
        >>> float(imrou(actual, actual))
        1.0

    With `I = h * w` and sums over images: `(sum|N & L| - r / I * sum|N| |L|) /
    (sum|N| + sum|L| - sum|N & L|)`, divided by its value for `L = N` (Harth 2022;
    DESIGN.md "Mask prediction score"). 1 for a perfect prediction; about 1 - r of the
    overlap a random mask of the right size gets by chance is kept, so guessing scores
    near 0 or below. NaN when the unit's masks are all empty (no maximum to normalize by).
    """
    if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 <= r <= 1:
        raise ValueError(f"r given an invalid value: {r!r}; expected a number in [0, 1]")
    predicted, actual = _as_masks(predicted, actual)
    n_cells = actual.shape[1] * actual.shape[2]
    area_n = actual.sum(axis=(1, 2), dtype=np.float64)      # (N,)
    area_l = predicted.sum(axis=(1, 2), dtype=np.float64)   # (N,)
    inter = (actual & predicted).sum(axis=(1, 2), dtype=np.float64)
    if area_n.sum() == 0:
        return float("nan")
    score = (inter.sum() - r / n_cells * (area_n * area_l).sum()) / (area_n.sum() + area_l.sum() - inter.sum() + 1e-10)
    best = (area_n.sum() - r / n_cells * (area_n ** 2).sum()) / area_n.sum()
    return float(score / best)


def mask_iou(predicted, actual) -> float:
    """Plain IoU of bool masks `[N, h, w]` pooled over images: `sum|N & L| / sum|N | L|`
    (NaN when both are empty everywhere)."""
    predicted, actual = _as_masks(predicted, actual)
    union = (predicted | actual).sum()
    return float((predicted & actual).sum() / union) if union else float("nan")
