"""Results of a study as CSV and as an HTML page (scores with CIs beside baselines; over-training curves).

    text = results_csv(db, study)           # one line per (unit, condition, participant or baseline)
    page = results_html(db, study, curves)  # curves: viewer.study.overtime.curves(...) or None
"""

from __future__ import annotations

import csv
import html
import io

from viewer.study.scoring import score_study

__all__ = ["results_csv", "results_html"]

COLUMNS = {"masks": ["imrou", "imrou_low", "imrou_high", "iou", "iou_low", "iou_high"],
           "pairs": ["accuracy", "accuracy_low", "accuracy_high", "confidence"]}


def results_csv(db, study: str) -> str:
    table = score_study(db, study)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    head = ["study", "task", "layer", "step", "unit", "condition", "kind", "who", "n", *COLUMNS[table["task"]]]
    writer.writerow(head)
    for row in table["rows"]:
        writer.writerow([table["study"], table["task"], table["layer"], table["step"],
                         *["" if row.get(k) is None else row.get(k) for k in head[4:]]])
    return out.getvalue()


def _cell(row: dict, key: str) -> str:
    value = row.get(key)
    if value is None:
        return "–"
    low, high = row.get(f"{key}_low"), row.get(f"{key}_high")
    ci = f" <small>[{low:.2f}, {high:.2f}]</small>" if low is not None and high is not None else ""
    return f"{value:.3f}{ci}"


def _curve_svg(steps, values, own_step=None, width=360, height=150) -> str:
    """A small line chart: y axis 0..1 with gridlines, the first and last steps, the study's own step ringed."""
    points = [(s, v) for s, v in zip(steps, values) if v is not None]
    if not points:
        return "<p>no scores</p>"
    lo_s, hi_s = min(steps), max(max(steps), min(steps) + 1)
    lo_v, hi_v = min(0.0, *[v for _, v in points]), max(1.0, *[v for _, v in points])
    left, right, top, bottom = 36, 12, 8, 22

    def xy(s, v):
        return (left + (s - lo_s) / (hi_s - lo_s) * (width - left - right),
                top + (hi_v - v) / (hi_v - lo_v) * (height - top - bottom))

    grid = "".join(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e5e5"/>'
                   f'<text x="{left - 4}" y="{y + 3:.1f}" font-size="10" text-anchor="end">{v:g}</text>'
                   for v in (0.0, 0.5, 1.0) for _, y in [xy(lo_s, v)])
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(s, v) for s, v in points))
    dots = "".join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="#36c"><title>step {s}: {v:.3f}</title></circle>'
                   + (f'<circle cx="{x:.1f}" cy="{y:.1f}" r="6" fill="none" stroke="#e8590c" stroke-width="2"/>'
                      if s == own_step else "") for s, v in points for x, y in [xy(s, v)])
    base = height - 6
    ticks = (f'<text x="{left}" y="{base}" font-size="10">step {lo_s:,}</text>'
             + (f'<text x="{width - right}" y="{base}" font-size="10" text-anchor="end">step {max(steps):,}</text>'
                if max(steps) != lo_s else ""))
    return (f'<svg width="{width}" height="{height}" role="img">{grid}<polyline fill="none" stroke="#36c" '
            f'points="{path}"/>{dots}{ticks}</svg>')


def results_html(db, study: str, curves: dict | None = None) -> str:
    table = score_study(db, study)
    keys = ["imrou", "iou"] if table["task"] == "masks" else ["accuracy"]
    head = "".join(f"<th>{k}</th>" for k in ["unit", "condition", "kind", "who", "n", *keys])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(row.get(k)))}</td>" for k in ["unit", "condition", "kind", "who", "n"])
        + "".join(f"<td>{_cell(row, k)}</td>" for k in keys) + "</tr>" for row in table["rows"])
    progress = db.progress(study)
    parts = [f"<h1>Study {html.escape(study)}: {table['task']}, layer {html.escape(table['layer'])}, "
             f"step {table['step']}</h1>",
             f"<p>{progress['done']} of {len(progress['participants'])} participants done; "
             f"{progress['items']} items each. 95 % bootstrap CIs in brackets.</p>",
             f"<table id='scores'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"]
    if curves:
        parts.append("<h2>Over training</h2><p>Every stored test answer re-scored against the unit at each "
                     "checkpoint with saved weights (all participants pooled); the study's checkpoint ringed.</p>")
        if curves.get("why"):
            parts.append(f"<p class='why'>{html.escape(curves['why'])}</p>")
        for unit, curve in curves["units"].items():
            parts.append(f"<h3>unit {unit}: {curve['metric']}</h3>"
                         + _curve_svg(curves["steps"], curve["values"], table["step"]))
    style = ("body{font-family:system-ui,sans-serif;margin:1.5rem;max-width:70rem}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:.2rem .5rem;text-align:left}small{color:#666}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Study {html.escape(study)}</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")
