"""Callback bodies: plain functions from a `Registry` and plain values to plain values.

    route(registry, "/", "?run=sweep/base")          # the page for a URL
    map_controls(registry, "sweep/base")             # options and values of the selectors
    map_view(registry, "sweep/base", "conv4", "true", "si")   # payload, slider range, legend
    map_charts(...), unit_view(...)
    compare_view(...), compare_charts(...)           # from viewer.compare

`viewer.callbacks` registers these with Dash; tests call them directly. A request
that cannot be shown (unknown run, damaged run, nothing recorded) gives a message,
never a traceback.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qs

from viewer import figures, images, readout, receptive, rf_figures, study_curve, unit_rf
from viewer.colors import class_hex
from viewer.compare import (MAX_COMPARE, committed, compare_charts, compare_controls, compare_view, config_notes,
                            default_comparison, poll, preferred_accuracy)
from viewer.data import Registry, ViewError
from viewer.layout import compare_page, empty_page, legend, map_page, message, slider_marks, unit_panel
from viewer.readout import GROUPING_LABELS, METRIC_LABELS

__all__ = ["committed", "compare_charts", "compare_controls", "compare_view", "config_notes", "default_comparison",
           "map_charts", "map_controls", "map_hover", "map_view", "new_run_options", "parse_query", "poll",
           "preferred_accuracy", "route", "run_options", "scalar_version", "unit_view"]

log = logging.getLogger(__name__)
HOW_TO_RECORD = "Record one with recorder.Recorder(..., store='<folder>/<run>') or `python -m training demo`."


def run_options(registry: Registry) -> list[dict]:
    return [{"label": e.label, "value": e.id} for e in registry.entries()]


def new_run_options(registry: Registry, shown) -> list[dict] | None:
    """The run selector's options if runs appeared or went since `shown`, else None."""
    options = run_options(registry)
    return None if options == shown else options


def parse_query(search: str | None) -> dict[str, str]:
    """First value of each query parameter of '?a=1&b=2' (anything else: empty)."""
    if not isinstance(search, str):
        return {}
    return {k: v[0] for k, v in parse_qs(search.lstrip("?"), keep_blank_values=False).items() if v}


def route(registry: Registry, pathname: str | None, search: str | None):
    """The page for a URL: '/' (layer map), '/compare' (run comparison)."""
    entries = registry.entries()
    if not entries:
        if registry.problem:
            return empty_page(f"No runs found under {registry.root}: it could not be searched "
                              f"({registry.problem}). This page looks again every few seconds.")
        return empty_page(f"No runs found under {registry.root}: it holds no record.zarr yet. "
                          f"{HOW_TO_RECORD} This page looks again every few seconds.")
    query = parse_query(search)
    pathname = pathname if isinstance(pathname, str) else "/"
    options = run_options(registry)
    readable = [e.id for e in entries if e.error is None]
    if pathname in ("/compare", "/compare/"):
        wanted = [r for r in query.get("runs", "").split(",") if r]
        known = {e.id for e in entries}
        unknown = [r for r in wanted if r not in known]
        runs = [r for r in wanted if r in known] or default_comparison(registry, readable)
        notice = f"unknown runs {unknown} were left out" if unknown else None
        runs = runs[:MAX_COMPARE]
        return compare_page(options, runs, compare_controls(registry, runs, query.get("layer")), notice)
    if pathname not in (None, "", "/"):
        return message(f"There is no page {pathname[:80]!r}. Try the layer map (/) or the comparison (/compare).",
                       "warn")
    run_id = query.get("run")
    notice = None
    if run_id is not None and run_id not in {e.id for e in entries}:
        notice = f"unknown run {run_id[:80]!r}: showing another run instead"
        run_id = None
    if run_id is None:
        run_id = _first_with_rows(registry, readable) or (readable[0] if readable else entries[0].id)
    controls = map_controls(registry, run_id, query.get("layer"), query.get("by"), query.get("metric"))
    unit = query.get("unit", "")
    return map_page(options, controls, notice, int(unit) if unit.isdigit() and len(unit) < 9 else None)


def _first_with_rows(registry: Registry, run_ids: list[str]) -> str | None:
    """The first of the runs that has committed checkpoints to show, if any (re-read: a run that was
    empty when it was opened may have rows now)."""
    for run_id in run_ids:
        try:
            if registry.poll(run_id) > 0:
                return run_id
        except ViewError:
            continue
    return None


def map_controls(registry: Registry, run_id, layer=None, by=None, metric=None) -> dict:
    """Options and values of the run, layer, grouping and metric selectors (unavailable ones disabled)."""
    out = {"run": run_id, "layers": [], "layer": None, "bys": [], "by": None, "metrics": [], "metric": None,
           "n": None}
    try:
        run = registry.run(run_id)
        out["n"] = registry.poll(run_id)
    except ViewError:
        return out
    layers = run.layers
    layer = layer if layer in layers else (layers[0] if layers else None)
    out["layers"] = [{"label": f"{name} · {run.units[name]} units", "value": name} for name in layers]
    out["layer"] = layer
    if layer is None:
        return out
    try:
        if out["n"]:
            bys = readout.available_groupings(run, layer)
            by = by if by in bys else (bys[0] if bys else None)
            metrics = readout.available_metrics(run, layer, by) if by else []
        else:  # nothing written yet: which arrays the run will have is not known
            bys, metrics = list(GROUPING_LABELS), list(METRIC_LABELS)
            by = by if by in bys else "true"
    except Exception:  # noqa: BLE001 - a damaged run: the map says why
        log.warning("cannot list the groupings of run %r", run_id, exc_info=True)
        return out
    metric = metric if metric in metrics else (metrics[0] if metrics else None)
    out.update(
        bys=[{"label": GROUPING_LABELS[g], "value": g, "disabled": g not in bys} for g in GROUPING_LABELS],
        by=by,
        metrics=[{"label": METRIC_LABELS[m], "value": m, "disabled": m not in metrics} for m in METRIC_LABELS],
        metric=metric)
    return out


def map_view(registry: Registry, run_id, layer, by, metric) -> dict:
    """The layer map of one run: payload for the browser, slider range and marks, title, legend, status."""
    empty = {"payload": None, "max": 0, "marks": {}, "title": "", "legend": [], "status": None}
    try:
        run = registry.run(run_id)
        registry.poll(run_id)
        if layer is None:
            raise ViewError(f"run {run_id!r} has no layers to show")
        payload = registry.payload(run_id, layer, by, metric)
    except ViewError as exc:
        kind = "warn" if "no committed checkpoints" in str(exc) else "error"
        return {**empty, "status": message(str(exc), kind)}
    title = (f"{run.name} · {layer} · {payload['K']} units — hue: dominant class ({GROUPING_LABELS[by]}), "
             f"saturation: {METRIC_LABELS[metric]}" + (" · signed layer" if payload["signed"] else ""))
    return {"payload": payload, "max": payload["T"] - 1, "marks": slider_marks(payload["steps"]), "title": title,
            "legend": legend(payload["classes"], payload["class_colors"], payload["rule"]), "status": None}


def map_hover(registry: Registry, run_id, layer) -> dict | None:
    """What hovering a tile shows about concepts (`readout.hover_payload`), or None."""
    try:
        return registry.hover(run_id, layer)
    except ViewError:
        return None


def map_charts(registry: Registry, run_id, layer, by, metric) -> dict | None:
    """Base figures beside the map (cursor at the last checkpoint); the browser moves the cursor."""
    try:
        run = registry.run(run_id)
        series = registry.series(run_id, by, metric)
        counts = registry.class_counts(run_id, layer, by, metric)
        det = registry.detectors(run_id, layer)
    except ViewError:
        return None
    steps = series["steps"]
    x = steps[-1] if steps else None
    return {
        "steps": steps,
        "counts": counts.tolist(),
        "hist": figures.hue_histogram(run.classes, class_hex(len(run.classes)), counts[-1] if len(counts) else []),
        "sel": figures.selectivity_figure(steps, series["selectivity"], layer, metric, x=x),
        "det": figures.detectors_figure(steps, det, layer, x=x),
        "acc": figures.accuracy_figure(steps, series["accuracy"], x=x),
        "rf": rf_layers_figure(registry, run_id, x),
    }


def rf_layers_figure(registry: Registry, run_id, x=None) -> dict | None:
    """Empirical RF size over training of every layer with occlusion (median, 25-75 %); None without."""
    try:
        run = registry.run(run_id)
        series = [{"name": layer, **s} for layer in run.layers
                  if (s := receptive.rf_series(run, layer)) is not None]
    except (ViewError, OSError, ValueError) as exc:
        log.warning("cannot read the receptive fields of run %r: %s", run_id, exc)
        return None
    if not series:
        return None
    return rf_figures.rf_size_figure("empirical RF size over training", series, x=x)


def unit_view(registry: Registry, run_id, layer, unit, by, metric, t) -> list:
    """The unit detail panel's children (or a message)."""
    if unit is None:
        return []
    try:
        run = registry.run(run_id)
        t = int(t or 0)
        d = registry.unit(run_id, layer, unit, by, t)
    except (ViewError, TypeError, ValueError) as exc:
        return [message(str(exc), "error")]
    classes = d["classes"]
    dom = classes[d["dominant"]] if 0 <= d["dominant"] < len(classes) else "none"
    sel = d["selectivity"].get(metric, [None] * (d["t"] + 1))[d["t"]]
    parts = [f"step {d['step']:,}", f"dominant class: {dom}",
             f"{METRIC_LABELS.get(metric, metric)}: {'n/a' if sel is None else f'{sel:.2f}'}"]
    if d["dead"]:
        parts.append("dead (the same response on every probe image)")
    if d["best"]:
        b = d["best"]
        parts.append(f"best concept: {b['concept']} ({b['category']}), IoU {b['iou']:.3f}"
                     + (" — detector" if b["detector"] else " — no detector"))
    steps, x = d["steps"], d["step"]
    figs = [figures.class_means_figure(steps, classes, d["class_means"], x=x),
            figures.unit_selectivity_figure(steps, d["selectivity"], x=x),
            figures.iou_figure(steps, d["iou"], d["min_iou"], x=x)]
    thumbs = run.thumbs
    cards = []
    for im in d["images"]:
        if thumbs is None or im["image"] >= len(thumbs):
            continue
        cards.append({**im, "src": images.overlay_uri(thumbs[im["image"]], im["map"], im["threshold"])})
    if not d["images"]:
        note = "no top-k images recorded for this layer"
    elif thumbs is None:
        note = "the run stored no probe thumbnails"
    else:
        masked = any(im["map"] is not None and im["threshold"] is not None for im in d["images"])
        note = (f"top {len(cards)} probe images at step {d['step']:,}"
                + (" — outside the unit's thresholded activation mask dimmed, mask outlined" if masked else ""))
    try:
        occlusion = unit_rf.occlusion_section(run, layer, d["unit"], d["t"])
    except (OSError, ValueError) as exc:  # a damaged occlusion array: the rest of the unit still shows
        occlusion = {"note": f"occlusion cannot be read: {str(exc)[:200]}"}
    return (unit_panel(f"{layer} · unit {d['unit']}", " · ".join(parts), figs, cards, note, d["rule"], occlusion)
            + study_curve.study_blocks(registry, run_id, layer, d["unit"], d["step"]))


def scalar_version(registry: Registry, run_id) -> int | None:
    """Changes whenever the run logs a metric value (`readout.scalar_version`); None for no readable run."""
    try:
        registry.poll(run_id)
        return readout.scalar_version(registry.run(run_id))
    except ViewError:
        return None
