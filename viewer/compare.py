"""Comparison page bodies: plain functions from a `Registry` and plain values to plain values.

    default_comparison(registry, ["sweep/a", "sweep/b", "other"])     # runs to show first
    compare_controls(registry, ["sweep/a", "sweep/b"])                # shared layers, groupings, metrics
    compare_view(registry, ["sweep/a", "sweep/b"], "conv4", "true", "si")   # aligned payloads, panels
    compare_charts(...)                                               # overlaid curves per run

`viewer.views` re-exports these; `viewer.callbacks` registers them with Dash.
"""

from __future__ import annotations

import logging

import numpy as np

from viewer import figures, readout, receptive, rf_figures
from viewer.data import Registry, ViewError
from viewer.layout import compare_panel, legend, message, slider_marks
from viewer.readout import GROUPING_LABELS, METRIC_LABELS

__all__ = ["MAX_COMPARE", "committed", "compare_charts", "compare_controls", "compare_view", "config_notes",
           "default_comparison", "poll", "preferred_accuracy"]

log = logging.getLogger(__name__)
MAX_COMPARE = 6  # runs shown side by side


def poll(registry: Registry, run_ids) -> dict[str, int]:
    """Committed row counts of the given runs (unreadable or unknown ones left out)."""
    out = {}
    for run_id in run_ids if isinstance(run_ids, list) else []:
        if not isinstance(run_id, str):
            continue
        try:
            out[run_id] = registry.poll(run_id)
        except ViewError:
            continue
    return out


def default_comparison(registry: Registry, run_ids: list[str], n: int = 4) -> list[str]:
    """Runs to compare when the URL names none: runs with committed rows that share a layer.

    The most runs of one folder (sweep) that have rows and record one same layer (ties: the
    most rows in all); the first n of them."""
    rows = poll(registry, run_ids)
    candidates: dict[tuple[str, str], list[str]] = {}
    for run_id in run_ids:
        if rows.get(run_id, 0) > 0:
            for layer in registry.run(run_id).layers:
                candidates.setdefault((run_id.rpartition("/")[0], layer), []).append(run_id)
    return max(candidates.values(), key=lambda ids: (len(ids), sum(rows[r] for r in ids)), default=[])[:n]


def _names(*values) -> bool:
    """Whether every value is a plain name (layer, grouping, metric, alignment), as the browser should send."""
    return all(isinstance(v, str) for v in values)


def committed(registry: Registry, run_id) -> int | None:
    """The run's committed row count; None for anything that is not a readable run."""
    return poll(registry, [run_id]).get(run_id) if isinstance(run_id, str) else None


def _runs(registry: Registry, run_ids) -> tuple[list, list[str]]:
    runs, problems = [], []
    run_ids = [r for r in run_ids if isinstance(r, str)] if isinstance(run_ids, list) else []
    for run_id in run_ids[:MAX_COMPARE]:
        try:
            runs.append((run_id, registry.run(run_id)))
        except ViewError as exc:
            problems.append(str(exc))
    return runs, problems


def compare_controls(registry: Registry, run_ids, layer=None, by=None, metric=None) -> dict:
    """Layers the chosen runs share, and groupings / metrics they all recorded."""
    runs, _ = _runs(registry, run_ids)
    out = {"layers": [], "layer": None, "bys": [], "by": by, "metrics": [], "metric": metric}
    if not runs:
        return out
    common = [name for name in runs[0][1].layers if all(name in r.layers for _, r in runs)]
    layer = layer if layer in common else (common[0] if common else None)
    out.update(layers=[{"label": n, "value": n} for n in common], layer=layer)
    if layer is None:
        return out
    try:
        bys = [g for g in GROUPING_LABELS if all(g in readout.available_groupings(r, layer) for _, r in runs)]
        by = by if by in bys else (bys[0] if bys else None)
        metrics = [m for m in METRIC_LABELS if by and all(m in readout.available_metrics(r, layer, by)
                                                          for _, r in runs)]
    except Exception:  # noqa: BLE001
        log.warning("cannot list the groupings of runs %r", run_ids, exc_info=True)
        return out
    metric = metric if metric in metrics else (metrics[0] if metrics else None)
    out.update(bys=[{"label": GROUPING_LABELS[g], "value": g, "disabled": g not in bys} for g in GROUPING_LABELS],
               by=by, metrics=[{"label": METRIC_LABELS[m], "value": m, "disabled": m not in metrics}
                               for m in METRIC_LABELS], metric=metric)
    return out


def config_notes(configs: list[dict]) -> list[str]:
    """Per run, the config values that differ between the runs ('wd=0.0001, dropout=0.5')."""
    keys = sorted({k for c in configs for k in c})
    differ = [k for k in keys if len({repr(c.get(k)) for c in configs}) > 1 and k != "seed"]
    differ = differ or [k for k in keys if len({repr(c.get(k)) for c in configs}) > 1]
    notes = []
    for c in configs:
        text = ", ".join(f"{k}={c.get(k)}" for k in differ[:4] if not isinstance(c.get(k), (dict, list)))
        notes.append(text if len(text) <= 70 else text[:67] + "...")
    return notes


def compare_view(registry: Registry, run_ids, layer, by, metric, align="step") -> dict:
    """Payloads of every chosen run's layer, aligned on one slider; panels and legend."""
    empty = {"data": None, "grid": [], "max": 0, "marks": {}, "legend": [], "status": None}
    runs, problems = _runs(registry, run_ids)
    if not runs:
        return {**empty, "status": message("; ".join(problems) or "Pick runs to compare.",
                                           "error" if problems else "info")}
    if not _names(layer, by, metric):
        names = ", ".join(f"{run_id} ({', '.join(run.layers)})" for run_id, run in runs)
        return {**empty, "status": message(f"The chosen runs share no layer with a common grouping and metric: "
                                           f"{names}.", "warn")}
    payloads, hovers, shown = [], [], []
    for run_id, run in runs:
        try:
            registry.poll(run_id)
            payloads.append(registry.payload(run_id, layer, by, metric))
            hovers.append(registry.hover(run_id, layer))
            shown.append((run_id, run))
        except ViewError as exc:
            problems.append(str(exc))
    if not payloads:
        return {**empty, "status": message("; ".join(problems), "error")}
    try:
        aligned = readout.align_rows([p["steps"] for p in payloads], align)
    except ViewError as exc:
        return {**empty, "status": message(str(exc), "error")}
    positions = aligned["positions"]
    if align == "step":
        marks = slider_marks(positions)
    else:
        marks = {i: {"label": f"{p:.0%}"} for i, p in enumerate(positions)
                 if i in {round(j * (len(positions) - 1) / 4) for j in range(5)}}
    notes = config_notes([run.config for _, run in shown])
    grid = [compare_panel(i, run_id, note) for i, ((run_id, _), note) in enumerate(zip(shown, notes))]
    first = payloads[0]
    return {"data": {"runs": payloads, "hovers": hovers, "align": align, "positions": positions,
                     "rows": aligned["rows"]},
            "grid": grid, "max": max(0, len(positions) - 1), "marks": marks,
            "legend": legend(first["classes"], first["class_colors"], _rules(payloads)),
            "status": message("; ".join(problems), "warn") if problems else None}


def _rules(payloads: list[dict]) -> str:
    """The selectivity rule of the shown layer: one for all runs, or each run's."""
    rules = {p["rule"] for p in payloads}
    if len(rules) == 1:
        return rules.pop()
    return "differs between runs: " + "; ".join(f"{p['run']}: {p['rule']}" for p in payloads)


def _x(steps: list[int], align: str, rows: list[int] | None = None) -> list[float]:
    """Steps as x values: themselves, or fractions of training from the run's first to last checkpoint
    (`rows`, default `steps`)."""
    if align == "step" or not steps:
        return list(steps)
    s = np.asarray(steps, dtype=np.float64)
    ref = np.asarray(rows if rows else steps, dtype=np.float64)
    span = ref[-1] - ref[0]
    return ((s - ref[0]) / span).tolist() if span > 0 else [1.0] * len(steps)


def preferred_accuracy(names: list[str]) -> str | None:
    """The accuracy metric to compare runs by: held-out first, then validation, test, probe, training."""
    for word in ("heldout", "held_out", "val", "test", "probe", "train", "acc"):
        for name in names:
            if word in name.lower():
                return name
    return names[0] if names else None


def compare_charts(registry: Registry, run_ids, layer, by, metric, align="step") -> dict | None:
    """Overlaid curves per run: mean selectivity of the layer, unique detectors per category, accuracy."""
    runs, _ = _runs(registry, run_ids)
    if not runs or not _names(layer, by, metric, align):
        return None
    sel, det, acc, rf = [], {}, [], []
    acc_names = set()
    for run_id, run in runs:
        try:
            series = registry.series(run_id, by, metric)
            detectors = registry.detectors(run_id, layer)
        except ViewError:
            continue
        x = _x(series["steps"], align)
        if layer in series["selectivity"]:
            sel.append({"x": x, "y": series["selectivity"][layer], "run": run_id})
        for category, ys in (detectors or {}).items():
            det.setdefault(category, []).append({"x": x, "y": ys, "run": run_id})
        name = preferred_accuracy(list(series["accuracy"]))
        if name is not None:  # at the steps it was logged
            metric_steps = series["accuracy"][name]
            acc.append({"x": _x(metric_steps["x"], align, series["steps"]), "y": metric_steps["y"], "run": run_id})
            acc_names.add(name)
        try:
            sizes = receptive.rf_series(run, layer) if layer in run.layers else None
        except (OSError, ValueError) as exc:
            log.warning("cannot read the receptive fields of run %r: %s", run_id, exc)
            sizes = None
        if sizes is not None:
            color = figures.LINE_COLORS[[r for r, _ in runs].index(run_id) % len(figures.LINE_COLORS)]
            rf.append({**sizes, "name": run_id, "color": color, "x": _x(sizes["x"], align, series["steps"])})
    ids = [run_id for run_id, _ in runs]
    x_title = "step" if align == "step" else "fraction of training"
    return {
        "sel": figures.compare_figure(f"mean {figures.METRIC_TITLES.get(metric, metric)} · {layer}", sel, ids,
                                      x_title, metric, y_range=(0, 1)),
        "det": figures.compare_facets(f"unique detectors per category · {layer}", det, ids, x_title, "concepts"),
        "acc": figures.compare_figure(" / ".join(sorted(acc_names)) or "accuracy", acc, ids, x_title, "accuracy",
                                      y_range=(0, 1.02)),
        "rf": rf_figures.rf_size_figure(f"empirical RF size over training · {layer}", rf,
                                        x_title=x_title, height=250) if rf else None,
    }
