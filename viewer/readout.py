"""What the viewer shows, computed from a `recorder.store.Run` (plain values out, no Dash).

    payload = layer_payload(run, "run-id", "conv4", by="true", metric="si")   # tile codes [T, K]
    series = run_series(run, by="true", metric="si")                          # curves vs step
    detail = unit_detail(run, "conv4", unit=12, by="true", t=-1)

Everything over checkpoints is computed in one vectorized pass over `[T, ...]`
arrays (the `Run`'s own cached class means, selectivity, dominant class and IoU).
Requests that cannot be shown (a grouping the run did not record, a run without
committed rows, a unit out of range) raise `ViewError` with a message for the page.
"""

from __future__ import annotations

import base64
import math

import numpy as np

from recorder.metrics import DETECTOR_MIN_IOU
from recorder.schema import GROUPINGS, SELECTIVITY_METRICS
from recorder.store import Run

from viewer import colors

__all__ = ["GROUPING_LABELS", "METRIC_LABELS", "ViewError", "align_rows", "available_groupings",
           "available_metrics", "b64", "class_counts", "concept_state", "detector_series", "hover_key", "hover_payload",
           "layer_payload",
           "layer_state", "run_series", "scalar_version", "top_images", "unit_detail"]

GROUPING_LABELS = {"true": "probe, by true label", "pred": "probe, by predicted label",
                   "train": "training batches, cumulative", "train_window": "training batches, this window"}
METRIC_LABELS = {"si": "selectivity index", "entropy": "1 - entropy", "precision": "top-n precision"}
_GROUPING_ARRAY = {"true": "sum_true", "pred": "sum_pred", "train": "train_sum", "train_window": "train_sum"}
IOU_SCALE = 10000  # IoU is sent as uint16 in units of 1e-4
IOU_NAN = 65535
CONCEPT_NONE = 0x7FFF  # low 15 bits of a concept code: no concept; bit 15: detector
N_UNIT_CONCEPTS = 5  # concepts shown in a unit's IoU plot


class ViewError(ValueError):
    """A request the viewer cannot show; the message is meant for the page."""


def b64(array: np.ndarray) -> str:
    """Base64 of the array's bytes (C order; little-endian dtypes expected)."""
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")


def _floats(values) -> list:
    """A JSON-safe list: NaN and inf become None."""
    return [None if v is None or not math.isfinite(v) else float(v) for v in np.asarray(values, np.float64).tolist()]


def check_choice(value, allowed, what: str) -> str:
    if value not in allowed:
        raise ViewError(f"{what} {value!r} is not one of {', '.join(map(repr, allowed))}")
    return value


def available_groupings(run: Run, layer: str) -> list[str]:
    rec = run.layer(layer)
    return [by for by in GROUPINGS if rec.has(_GROUPING_ARRAY[by])]


def available_metrics(run: Run, layer: str, by: str) -> list[str]:
    rec = run.layer(layer)
    return [m for m in SELECTIVITY_METRICS if m != "precision" or (by == "true" and rec.has("precision"))]


def _check(run: Run, layer: str, by: str, metric: str) -> None:
    if layer not in run.layers:
        raise ViewError(f"run '{run.name}' has no layer {layer!r}; its layers are {run.layers}")
    check_choice(by, GROUPINGS, "grouping")
    check_choice(metric, SELECTIVITY_METRICS, "metric")
    if run.n_committed == 0:
        raise ViewError(f"run '{run.name}' has no committed checkpoints yet: waiting for the first one")
    if by not in available_groupings(run, layer):
        raise ViewError(f"layer {layer!r} of run '{run.name}' has no {GROUPING_LABELS[by]} data "
                        f"(it was not recorded)")
    if metric not in available_metrics(run, layer, by):
        raise ViewError(f"{METRIC_LABELS[metric]} is only recorded by true label on the probe; "
                        f"choose another metric or grouping")


def _category_index(run: Run) -> tuple[np.ndarray, list[str]]:
    names = list(dict.fromkeys(c.category for c in run.concepts))
    return np.array([names.index(c.category) for c in run.concepts], dtype=np.int64), names


def layer_state(run: Run, layer: str, by: str, metric: str) -> dict[str, np.ndarray]:
    """dominant int64 [T, K], selectivity float64 [T, K], dead bool [T, K] of one layer."""
    _check(run, layer, by, metric)
    rec = run.layer(layer)
    return {"dominant": rec.dominant(by), "selectivity": rec.selectivity(metric, by), "dead": rec.dead(by)}


def concept_state(run: Run, layer: str, min_iou: float = DETECTOR_MIN_IOU) -> dict | None:
    """Each unit's best concept by IoU per checkpoint; None without dissection.

    {"concept": int64 [T, K] (argmax over concepts; -1 where no IoU was recorded),
    "iou": float32 [T, K] (best IoU, NaN where none), "detector": bool [T, K] (best IoU >
    min_iou)}: Network Dissection's rule as in `recorder.metrics.best_concepts`,
    computed in float32 (the IoU is stored as float16) for speed.
    """
    rec = run.layer(layer)
    if not rec.has("iou") or not run.concepts or run.n_committed == 0:
        return None
    iou = rec.iou.astype(np.float32)  # [T, K, P]
    nan = np.isnan(iou)
    concept = np.where(nan, -np.inf, iou).argmax(axis=-1)
    best = np.take_along_axis(iou, concept[..., None], axis=-1)[..., 0]
    none = nan.all(axis=-1)
    best = np.where(none, np.float32(np.nan), best)
    return {"concept": np.where(none, -1, concept), "iou": best, "detector": best > min_iou}


def _concept_codes(state: dict | None) -> tuple[np.ndarray, np.ndarray] | None:
    if state is None:
        return None
    iou = state["iou"]
    concept = np.where(state["concept"] < 0, CONCEPT_NONE, state["concept"]).astype(np.uint16)
    concept |= np.where(state["detector"], 0x8000, 0).astype(np.uint16)
    iou_codes = np.where(np.isnan(iou), IOU_NAN, np.floor(np.clip(np.nan_to_num(iou), 0, 1) * IOU_SCALE + 0.5))
    return concept, iou_codes.astype("<u2")


def layer_payload(run: Run, run_id: str, layer: str, by: str = "true", metric: str = "si") -> dict:
    """Everything the browser needs to paint every checkpoint of one layer map.

    Per tile and checkpoint ([T, K], base64): class code `dom` and saturation code
    `sat`; plus `palette` (see `viewer.colors`), steps, names, and `order`, the units
    sorted by their dominant class at the last checkpoint. What hovering shows about
    concepts comes separately (`hover_payload`, matched by `hover_key`), after the
    first paint.
    """
    state = layer_state(run, layer, by, metric)
    dom, sel, dead = state["dominant"], state["selectivity"], state["dead"]
    n_t, n_k = dom.shape
    n_c = len(run.classes)
    dom_codes = colors.dominant_codes(dom, n_c)
    sat_codes = colors.saturation_codes(sel, dead)
    last_sel = np.nan_to_num(sel[-1], nan=-1.0)
    order = np.lexsort((np.arange(n_k), -last_sel, (sat_codes[-1] == colors.SAT_DEAD), dom_codes[-1]))
    return {
        "key": f"{run_id}|{layer}|{by}|{metric}|{run.n_committed}", "hover_key": hover_key(run, run_id, layer),
        "run": run_id, "name": run.name, "layer": layer, "by": by, "metric": metric,
        "T": int(n_t), "K": int(n_k), "C": n_c,
        "steps": [int(s) for s in run.steps], "epochs": _floats(run.epochs),
        "classes": run.classes, "class_colors": colors.class_hex(n_c),
        "dom": b64(dom_codes.astype("<u2") if dom_codes.dtype == np.uint16 else dom_codes),
        "dom_bytes": int(dom_codes.dtype.itemsize), "no_class": colors.no_class_code(n_c),
        "sat": b64(sat_codes), "sat_levels": colors.SAT_LEVELS,
        "sat_dead": colors.SAT_DEAD, "sat_nan": colors.SAT_NAN,
        "palette": b64(colors.palette(n_c)), "dead_rgb": list(colors.DEAD_RGB), "nan_rgb": list(colors.NAN_RGB),
        "order": b64(order.astype("<u4")),
        "signed": bool(run.layer(layer).signed), "rule": run.layer(layer).rule,
    }


def hover_key(run: Run, run_id: str, layer: str) -> str:
    return f"{run_id}|{layer}|{run.n_committed}"


def hover_payload(run: Run, run_id: str, layer: str, min_iou: float = DETECTOR_MIN_IOU,
                  concepts: dict | None = None) -> dict:
    """Each unit's best concept per checkpoint, for hovering: `concept` uint16 [T, K] (bit 15:
    detector; `concept_none` without IoU) and its IoU `iou` uint16 [T, K] (1e-4 units), base64;
    None for both without dissection. `concepts`: `concept_state(...)` if already computed."""
    if layer not in run.layers:
        raise ViewError(f"run '{run.name}' has no layer {layer!r}")
    if concepts is None:
        concepts = concept_state(run, layer, min_iou)
    codes = _concept_codes(concepts)
    category, categories = _category_index(run)
    return {
        "key": hover_key(run, run_id, layer),
        "concepts": [c.name for c in run.concepts], "concept_category": [categories[i] for i in category],
        "concept": None if codes is None else b64(codes[0].astype("<u2")),
        "iou": None if codes is None else b64(codes[1]),
        "iou_scale": IOU_SCALE, "iou_nan": IOU_NAN, "concept_none": CONCEPT_NONE, "min_iou": float(min_iou),
    }


def class_counts(dominant, dead, n_classes: int) -> np.ndarray:
    """int64 [T, C]: live units per dominant class at each checkpoint (dead units left out)."""
    dominant = np.asarray(dominant)
    live = (dominant >= 0) & ~np.asarray(dead, dtype=bool)
    n_t = dominant.shape[0]
    flat = np.where(live, dominant + n_classes * np.arange(n_t)[:, None], -1)
    return np.bincount(flat[flat >= 0], minlength=n_t * n_classes).reshape(n_t, n_classes)


def _nanmean_rows(a: np.ndarray) -> list:
    a = np.asarray(a, dtype=np.float64)
    valid = ~np.isnan(a)
    n = valid.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(valid, a, 0.0).sum(axis=1) / n
    return _floats(np.where(n > 0, mean, np.nan))


def run_series(run: Run, by: str = "true", metric: str = "si") -> dict:
    """Curves vs checkpoint: steps, epochs, mean selectivity per layer, accuracy metrics.

    Layers that did not record `by` / `metric` are left out of "selectivity". Accuracy
    metrics are `{"x": steps, "y": values}` at the steps they were logged (`run.scalar`),
    not at the checkpoint rows.
    """
    out = {"steps": [int(s) for s in run.steps], "epochs": _floats(run.epochs), "selectivity": {},
           "accuracy": {}}
    for layer in run.layers:
        try:
            _check(run, layer, by, metric)
        except ViewError:
            continue
        out["selectivity"][layer] = _nanmean_rows(run.layer(layer).selectivity(metric, by))
    for name in run.scalar_names:
        if "acc" in name.lower():
            steps, values = run.scalar(name)
            out["accuracy"][name] = {"x": [int(s) for s in steps], "y": _floats(values)}
    return out


def scalar_version(run: Run) -> int:
    """A number that changes whenever a metric value is logged (the stored counts summed)."""
    counts = run.attrs.get("scalars") or {}
    return int(sum(int(c) for c in counts.values())) + len(counts)


def detector_series(run: Run, layer: str, min_iou: float = DETECTOR_MIN_IOU,
                    concepts: dict | None = None) -> dict[str, list] | None:
    """Unique detectors per concept category vs checkpoint (Bau et al.); None without dissection.

    The number of distinct concepts that some unit of the layer detects, per category, as
    `LayerRecord.unique_detectors`; `concepts`: `concept_state(...)` if already computed.
    """
    if concepts is None:
        concepts = concept_state(run, layer, min_iou)
    if concepts is None:
        return None
    category, names = _category_index(run)
    n_t, n_p = concepts["concept"].shape[0], len(category)
    hit = concepts["detector"] & (concepts["concept"] >= 0)
    flat = (np.arange(n_t)[:, None] * n_p + concepts["concept"])[hit]
    detected = np.bincount(flat, minlength=n_t * n_p).reshape(n_t, n_p) > 0  # [T, P]
    return {name: [int(v) for v in detected[:, category == g].sum(axis=1)] for g, name in enumerate(names)}


def unit_detail(run: Run, layer: str, unit: int, by: str = "true", t: int = -1,
                min_iou: float = DETECTOR_MIN_IOU) -> dict:
    """One unit over training, and its top-k probe images at checkpoint t."""
    if layer not in run.layers:
        raise ViewError(f"run '{run.name}' has no layer {layer!r}")
    rec = run.layer(layer)
    if isinstance(unit, bool) or not isinstance(unit, (int, np.integer)) or not 0 <= unit < rec.units:
        raise ViewError(f"layer {layer!r} has units 0 .. {rec.units - 1}, not {unit!r}")
    check_choice(by, available_groupings(run, layer), "grouping")
    n = run.n_committed
    if n == 0:
        raise ViewError(f"run '{run.name}' has no committed checkpoints yet")
    if not -n <= t < n:
        raise ViewError(f"checkpoint {t} is out of range: the run has {n}")
    t = t % n
    mu = rec.class_means(by)[:, :, unit]  # [T, C]
    sel = {m: _floats(rec.selectivity(m, by)[:, unit]) for m in available_metrics(run, layer, by)}
    out = {"layer": layer, "unit": int(unit), "t": t, "step": int(run.steps[t]), "steps": [int(s) for s in run.steps],
           "classes": run.classes, "class_means": mu.T, "selectivity": sel,
           "dominant": int(rec.dominant(by)[t, unit]), "dead": bool(rec.dead(by)[t, unit]), "rule": rec.rule,
           "iou": {}, "best": None, "min_iou": float(min_iou), "images": []}
    if rec.has("iou") and run.concepts:
        iou = rec.iou[:, unit, :].astype(np.float64)  # [T, P]
        top = np.argsort(-np.nan_to_num(iou, nan=-1.0).max(axis=0), kind="stable")[:N_UNIT_CONCEPTS]
        concepts = run.concepts
        out["iou"] = {f"{concepts[p].name} ({concepts[p].category})": _floats(iou[:, p]) for p in top}
        if not np.isnan(iou[t]).all():
            p = int(np.nanargmax(iou[t]))
            out["best"] = {"concept": concepts[p].name, "category": concepts[p].category,
                           "iou": float(iou[t, p]), "detector": bool(iou[t, p] > min_iou)}
    out["images"] = top_images(run, rec, unit, t)
    return out


def top_images(run: Run, rec, unit: int, t: int) -> list[dict]:
    if not rec.has("topk_index"):
        return []
    index = rec.row("topk_index", t)[unit]
    value = rec.row("topk_value", t)[unit] if rec.has("topk_value") else np.full(len(index), np.nan)
    maps = rec.row("topk_map", t)[unit] if rec.has("topk_map") else None
    threshold = float(rec.row("threshold", t)[unit]) if rec.has("threshold") else None
    labels = run.probe_labels
    images = []
    for r, i in enumerate(index.tolist()):
        if i < 0:
            continue
        label = int(labels[i]) if labels is not None and i < len(labels) else -1
        images.append({"rank": r, "image": i, "value": float(value[r]),
                       "label": run.classes[label] if 0 <= label < len(run.classes) else None,
                       "map": None if maps is None else maps[r].astype(np.float32), "threshold": threshold})
    return images


def align_rows(steps_by_run: list, mode: str = "step") -> dict:
    """Shared slider positions for several runs, and each run's row at each position.

    mode "step": positions are the union of all steps; a run shows its last row at or
    before the position (-1 before its first). mode "fraction": positions are
    fractions of training in [0, 1] (step / the run's last step, from its first);
    a run shows the row nearest the position. Returns {"positions": [...],
    "rows": [[row per position] per run]}.
    """
    check_choice(mode, ("step", "fraction"), "alignment")
    steps_by_run = [np.asarray(s, dtype=np.int64) for s in steps_by_run]
    if mode == "step":
        positions = np.unique(np.concatenate(steps_by_run)) if steps_by_run else np.zeros(0, np.int64)
        rows = [np.searchsorted(s, positions, side="right") - 1 for s in steps_by_run]
        return {"positions": [int(p) for p in positions], "rows": [r.tolist() for r in rows]}
    n = max((len(s) for s in steps_by_run), default=0)
    positions = np.linspace(0.0, 1.0, max(n, 2)) if n else np.zeros(0)
    rows = []
    for s in steps_by_run:
        if len(s) == 0:
            rows.append([-1] * len(positions))
            continue
        span = s[-1] - s[0]
        frac = (s - s[0]) / span if span > 0 else np.ones(len(s))
        rows.append(np.abs(frac[None, :] - positions[:, None]).argmin(axis=1).tolist())
    return {"positions": [float(p) for p in positions], "rows": rows}
