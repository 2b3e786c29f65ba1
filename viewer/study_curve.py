"""The unit page's study block: how well people's understanding fits the unit over training.

    blocks = study_blocks(registry, "sweep/base", "conv3", 4, x=1500)   # [] when no study has the unit

When the viewer serves studies (`TUNELINE_STUDIES`), every study of this run, layer and
unit gets a small chart: its participants' stored test answers re-scored against the
unit at each checkpoint with saved weights (`viewer.study.overtime.study_curves`:
normalized ImRoU for the mask game, accuracy for occlusion pairs), with the study's
own checkpoint marked. A run without saved weights shows that checkpoint only and
says why. torch is imported only when such a study exists.
"""

from __future__ import annotations

import logging
from pathlib import Path

import flask
from dash import dcc, html

from viewer.data import Registry, ViewError
from viewer.figures import AXIS, FONT, LINE_COLORS, cursor, finish
from viewer.layout import GRAPH_CONFIG

__all__ = ["study_blocks", "study_figure", "unit_studies"]

log = logging.getLogger(__name__)
LABELS = {"imrou": "ImRoU (r = 0.75, normalized)", "accuracy": "accuracy"}


def _same_place(a, b) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except (OSError, TypeError, ValueError):
        return str(a) == str(b)


def unit_studies(db, location, layer: str, unit: int) -> list[str]:
    """Ids of the studies in `db` of the run at `location` whose layer is `layer` and whose units include `unit`."""
    out = []
    for study in db.studies():
        spec = db.spec(study)
        if spec.layer == layer and unit in spec.units and _same_place(spec.run, location):
            out.append(study)
    return out


def study_figure(title: str, steps: list[int], values: list, metric: str, own_step: int, x=None) -> dict:
    """A plotly figure dict: the pooled score per step, the study's own step marked with a ring."""
    color = LINE_COLORS[0]
    data = [{"type": "scatter", "mode": "lines+markers", "x": list(steps), "y": list(values), "name": metric,
             "line": {"color": color, "width": 1.6}, "marker": {"color": color, "size": 6},
             "hovertemplate": "step %{x:,}: %{y:.3f}<extra></extra>"}]
    if own_step in steps:
        data.append({"type": "scatter", "mode": "markers", "x": [own_step], "y": [values[steps.index(own_step)]],
                     "name": "the study's checkpoint", "hoverinfo": "skip",
                     "marker": {"size": 13, "color": "rgba(0,0,0,0)", "line": {"color": "#e8590c", "width": 2}}})
    low = min([0.0] + [v for v in values if v is not None])
    layout = {"title": {"text": title, "font": {"size": 12, "color": "#212529"}, "x": 0.01, "xanchor": "left",
                        "y": 0.97, "yanchor": "top"},
              "height": 220, "margin": {"l": 8, "r": 8, "t": 28, "b": 8}, "font": FONT,
              "paper_bgcolor": "#ffffff", "plot_bgcolor": "#ffffff", "hovermode": "closest",
              "xaxis": {**AXIS, "title": {"text": "step", "standoff": 4}},
              "yaxis": {**AXIS, "title": {"text": LABELS.get(metric, metric), "standoff": 4}, "range": [low, 1.02]},
              "legend": {"orientation": "h", "x": 0, "xanchor": "left", "y": 1.0, "yanchor": "bottom",
                         "font": {"size": 10}},
              "shapes": [cursor(x)], "uirevision": title}
    return finish({"data": data, "layout": layout}, steps)


def study_blocks(registry: Registry, run_id, layer: str, unit: int, x=None, db=None) -> list:
    """The unit page's study section (Dash components), or [] when no study database or study has the unit.

    `db` defaults to the `StudyDB` of the serving app (`TUNELINE_STUDY_DB` in its Flask config)."""
    if db is None:
        db = flask.current_app.config.get("TUNELINE_STUDY_DB") if flask.has_app_context() else None
    if db is None:
        return []
    try:
        run = registry.run(run_id)
        studies = unit_studies(db, run.path if run.path is not None else run.location, layer, int(unit))
    except (ViewError, OSError, ValueError) as exc:
        log.warning("cannot list the studies of run %r: %s", run_id, exc)
        return []
    if not studies:
        return []
    from viewer.study.overtime import study_curves  # torch, only when a study has this unit

    out = [html.H4("Human studies: how well people's understanding fits the unit over training",
                   className="tl-unit-h4")]
    graphs = []
    for study in studies:
        spec = db.spec(study)
        try:
            curve = study_curves(db, study)
        except Exception as exc:  # noqa: BLE001 - one unreadable study must not hide the unit page
            out.append(html.Div(f"study {study}: cannot be scored: {str(exc)[:200]}", className="tl-unit-note"))
            continue
        row = curve["units"][int(unit)]
        task = "mask game" if spec.task == "masks" else "occlusion pairs"
        title = f"study {study}: {task}, made at step {spec.step:,}"
        graphs.append(dcc.Graph(figure=study_figure(title, curve["steps"], row["values"], row["metric"], spec.step, x),
                                config=GRAPH_CONFIG, className="tl-graph"))
        if curve["why"]:
            out.append(html.Div(f"study {study}: {curve['why']}", className="tl-unit-note"))
    return [html.Div(out + [html.Div(graphs, className="tl-unit-figs")], id="unit-studies")]
