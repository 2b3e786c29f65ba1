"""Plotly figures as plain dicts, from plain values (no Dash, no run store).

    fig = selectivity_figure(steps, {"conv3": [...], "conv4": [...]}, current="conv4", metric="si")

Every curve-vs-step figure carries a vertical line at the slider's checkpoint as
`layout.shapes[0]` (`cursor`); the browser moves it with `with_cursor` logic of its
own (viewer/assets), so scrubbing needs no server call.
"""

from __future__ import annotations

import numpy as np

__all__ = ["LINE_COLORS", "accuracy_figure", "class_means_figure", "compare_facets", "compare_figure", "cursor",
           "detectors_figure", "finish", "hue_histogram", "iou_figure", "legend_rows", "selectivity_figure",
           "unit_selectivity_figure", "x_axis_range", "x_range"]

LINE_COLORS = ["#4c6ef5", "#e8590c", "#2b8a3e", "#c2255c", "#7048e8", "#1098ad", "#e67700", "#5c940d",
               "#862e9c", "#364fc7"]
DASHES = ["solid", "dash", "dot", "dashdot", "longdash", "longdashdot"]
FONT = {"family": "Inter, system-ui, -apple-system, 'Segoe UI', sans-serif", "size": 11, "color": "#343a40"}
AXIS = {"gridcolor": "#edf0f2", "zeroline": False, "linecolor": "#ced4da", "ticks": "outside",
        "tickcolor": "#ced4da", "ticklen": 3, "automargin": True}
TITLE_SPACE = 28  # px above the plot for the title
LEGEND_ROW, LEGEND_ITEM, LEGEND_CHAR, LEGEND_WIDTH = 21, 46, 6.5, 190  # legend sizes in px (generous estimates)
SPARSE = 24  # series with at most this many points also draw their points
METRIC_TITLES = {"si": "selectivity index", "entropy": "1 − entropy", "precision": "top-n precision"}


def cursor(x, xref: str = "x", y0: float = 0.0, y1: float = 1.0) -> dict:
    """The vertical line at the slider's position (the browser moves every shape named "cursor")."""
    return {"type": "line", "name": "cursor", "xref": xref, "yref": "paper", "x0": x, "x1": x, "y0": y0, "y1": y1,
            "line": {"color": "#212529", "width": 1.2, "dash": "dot"}, "visible": x is not None}


def _layout(title: str, x_title: str = "step", y_title: str = "", height: int = 200, x=None, **extra) -> dict:
    layout = {
        "title": {"text": title, "font": {"size": 12, "color": "#212529"}, "x": 0.01, "xanchor": "left",
                  "y": 0.97, "yanchor": "top"},
        "height": height, "margin": {"l": 8, "r": 8, "t": TITLE_SPACE, "b": 8}, "font": FONT,
        "paper_bgcolor": "#ffffff", "plot_bgcolor": "#ffffff",
        "xaxis": {**AXIS, "title": {"text": x_title, "standoff": 4}},
        "yaxis": {**AXIS, "title": {"text": y_title, "standoff": 4}},
        # above the plot, below the title: never over the axes' titles
        "legend": {"orientation": "h", "x": 0, "xanchor": "left", "y": 1.0, "yanchor": "bottom",
                   "font": {"size": 10}, "itemwidth": 30, "tracegroupgap": 0},
        "hovermode": "x unified", "shapes": [cursor(x)], "uirevision": title,
    }
    layout.update(extra)
    return layout


def legend_rows(names: list[str], width: int = LEGEND_WIDTH) -> int:
    """Rows a horizontal legend of `names` takes in a chart about `width` px wide (generous estimate)."""
    rows, used = 1, 0
    for name in names:
        item = LEGEND_ITEM + LEGEND_CHAR * len(name)
        if used and used + item > width:
            rows, used = rows + 1, 0
        used += item
    return rows


def finish(fig: dict, xs=None, integer: bool = True) -> dict:
    """Make room for the legend above the plot (the figure grows by it), and give the x axis the range of
    the data `xs`."""
    layout, data = fig["layout"], fig["data"]
    names = [d.get("name", "") for d in data if d.get("showlegend", True)]
    if len(data) > 1 and names:  # the legend's rows are added above the plot: the plot keeps its height
        room = 4 + LEGEND_ROW * legend_rows(names)
        layout["margin"]["t"] += room
        layout["height"] += room
    else:
        layout["showlegend"] = False
    if xs is not None:
        layout["xaxis"].update(x_axis_range(xs, integer))
    return fig


def x_range(xs) -> list[float] | None:
    """[lo, hi] of the values `xs` (None ignored) padded by 3 % of their span; one value: +- 10 % (at least 1)."""
    values = [float(v) for v in xs if v is not None and np.isfinite(v)]
    if not values:
        return None
    lo, hi = min(values), max(values)
    pad = 0.03 * (hi - lo) if hi > lo else max(1.0, 0.1 * abs(hi))
    return [lo - pad, hi + pad]


def x_axis_range(xs, integer: bool = True) -> dict:
    """x axis settings for values `xs`: their padded range, and ticks only at the values themselves when
    they are few integer steps close together (no tick at step -0.5 or 0.2)."""
    span = x_range(xs)
    if span is None:
        return {}
    out = {"range": span, "autorange": False}
    values = sorted({float(v) for v in xs if v is not None and np.isfinite(v)})
    if integer and (len(values) == 1 or values[-1] - values[0] < 10):
        out.update(tickmode="array", tickvals=values, ticktext=[f"{v:,.0f}" for v in values])
    return out


def _message(title: str, text: str, height: int = 200) -> dict:
    """An empty figure that says why it is empty."""
    layout = _layout(title, height=height)
    layout["xaxis"] = {"visible": False}
    layout["yaxis"] = {"visible": False}
    layout["shapes"] = [cursor(None)]
    layout["annotations"] = [{"text": text, "showarrow": False, "xref": "paper", "yref": "paper", "x": 0.5,
                              "y": 0.5, "font": {"size": 11, "color": "#868e96"}}]
    return {"data": [], "layout": layout}


def _line(x, y, name: str, color: str, width: float = 1.6, dash: str = "solid", **extra) -> dict:
    """A curve; sparse ones (a run with one checkpoint, a metric logged a few times) also show their points."""
    x, y = list(x), list(y)
    sparse = sum(v is not None for v in y) <= SPARSE
    line = {"color": color, "width": width, "dash": dash}
    if "line_shape" in extra:  # plotly.js takes line.shape (line_shape is the Python library's spelling)
        line["shape"] = extra.pop("line_shape")
    return {"type": "scatter", "mode": "lines+markers" if sparse else "lines", "x": x, "y": y, "name": name,
            "line": line, "marker": {"color": color, "size": 5},
            "hovertemplate": "%{y:.3~f}<extra>" + name + "</extra>", **extra}


def hue_histogram(classes: list[str], class_colors: list[str], counts) -> dict:
    """Bars: how many live units have each class as their dominant class."""
    counts = [int(c) for c in counts]
    trace = {"type": "bar", "x": list(classes), "y": counts, "marker": {"color": list(class_colors)},
             "hovertemplate": "%{x}: %{y} units<extra></extra>"}
    layout = _layout("units per dominant class", x_title="", y_title="units", x=None, hovermode="closest",
                     bargap=0.15)
    layout["shapes"] = []
    layout["xaxis"]["tickangle"] = -40 if len(classes) > 6 else 0
    layout["yaxis"]["rangemode"] = "tozero"
    return {"data": [trace], "layout": layout}


def selectivity_figure(steps, series: dict[str, list], current: str | None, metric: str = "si", x=None) -> dict:
    """Mean selectivity of each layer vs step; the current layer drawn bold."""
    title = f"mean {METRIC_TITLES.get(metric, metric)} per layer"
    if not series:
        return _message(title, "no layer recorded this grouping")
    data = [_line(steps, ys, layer, LINE_COLORS[i % len(LINE_COLORS)], width=3.0 if layer == current else 1.4)
            for i, (layer, ys) in enumerate(series.items())]
    layout = _layout(title, y_title=metric, x=x)
    layout["yaxis"]["range"] = [0, 1]
    return finish({"data": data, "layout": layout}, steps)


def detectors_figure(steps, series: dict[str, list] | None, layer: str, x=None) -> dict:
    """Unique detectors per concept category vs step (Bau et al.)."""
    title = f"unique detectors per category · {layer}"
    if series is None:
        return _message(title, "no dissection recorded for this layer")
    data = [_line(steps, ys, category, LINE_COLORS[i % len(LINE_COLORS)], line_shape="hv")
            for i, (category, ys) in enumerate(series.items())]
    layout = _layout(title, y_title="concepts", x=x)
    layout["yaxis"]["rangemode"] = "tozero"
    return finish({"data": data, "layout": layout}, steps)


def accuracy_figure(steps, series: dict[str, dict], x=None) -> dict:
    """Accuracy metrics at the steps they were logged: `series` name -> {"x": steps, "y": values};
    the x axis spans those steps and the checkpoints' `steps`."""
    title = "accuracy"
    if not series:
        return _message(title, "no accuracy metric recorded")
    data = [_line(s["x"], s["y"], name, LINE_COLORS[i % len(LINE_COLORS)], connectgaps=True)
            for i, (name, s) in enumerate(series.items())]
    layout = _layout(title, y_title="accuracy", x=x)
    layout["yaxis"]["range"] = [0, 1.02]
    return finish({"data": data, "layout": layout}, [*steps, *(v for s in series.values() for v in s["x"])])


# ------------------------------------------------------------------ unit detail


def class_means_figure(steps, classes: list[str], class_means, x=None) -> dict:
    """Heatmap classes x checkpoints of one unit's class means ([C, T])."""
    z = np.asarray(class_means, dtype=np.float64)
    data = [{"type": "heatmap", "x": list(steps), "y": list(classes),
             "z": [[None if not np.isfinite(v) else float(v) for v in row] for row in z],
             "colorscale": "Viridis", "colorbar": {"thickness": 10, "len": 0.9, "outlinewidth": 0},
             "hovertemplate": "step %{x}<br>%{y}: %{z:.3f}<extra></extra>"}]
    layout = _layout("class means over training", y_title="", x=x, hovermode="closest", height=240)
    layout["shapes"][0]["line"]["color"] = "#ffffff"  # visible on the dark cells
    steps = list(steps)
    if len(steps) > 1:  # cells reach half way to their neighbours: no axis beyond the first and last step
        layout["xaxis"].update(x_axis_range(steps))
        layout["xaxis"]["range"] = [steps[0] - (steps[1] - steps[0]) / 2, steps[-1] + (steps[-1] - steps[-2]) / 2]
    else:
        layout["xaxis"].update(x_axis_range(steps))
    return {"data": data, "layout": layout}


def unit_selectivity_figure(steps, series: dict[str, list], x=None) -> dict:
    data = [_line(steps, ys, METRIC_TITLES.get(m, m), LINE_COLORS[i]) for i, (m, ys) in enumerate(series.items())]
    layout = _layout("selectivity over training", y_title="", x=x, height=240)
    layout["yaxis"]["range"] = [0, 1.02]
    return finish({"data": data, "layout": layout}, steps)


def iou_figure(steps, series: dict[str, list], min_iou: float, x=None) -> dict:
    """IoU of the unit's top concepts vs step, with the detector threshold."""
    title = "top concepts' IoU"
    if not series:
        return _message(title, "no dissection recorded for this layer", height=240)
    data = [_line(steps, ys, name, LINE_COLORS[i % len(LINE_COLORS)]) for i, (name, ys) in enumerate(series.items())]
    layout = _layout(title, y_title="IoU", x=x, height=240)
    layout["shapes"].append({"type": "line", "xref": "paper", "yref": "y", "x0": 0, "x1": 1, "y0": min_iou,
                             "y1": min_iou, "line": {"color": "#e03131", "width": 1, "dash": "dash"}})
    layout["annotations"] = [{"text": f"detector > {min_iou:g}", "xref": "paper", "yref": "y", "x": 1, "y": min_iou,
                              "xanchor": "right", "yanchor": "bottom", "showarrow": False,
                              "font": {"size": 10, "color": "#e03131"}}]
    layout["yaxis"]["rangemode"] = "tozero"
    return finish({"data": data, "layout": layout}, steps)


# ------------------------------------------------------------------ comparison


def compare_figure(title: str, curves: list[dict], runs: list[str], x_title: str = "step", y_title: str = "",
                   y_range=None, x=None) -> dict:
    """Overlaid curves, one per run: each curve {"x", "y", "run"}; color = the run's place in `runs`."""
    if not curves:
        return _message(title, "nothing recorded for these runs", height=250)
    data = [_line(c["x"], c["y"], c["run"], LINE_COLORS[runs.index(c["run"]) % len(LINE_COLORS)], connectgaps=True)
            for c in curves]
    layout = _layout(title, x_title=x_title, y_title=y_title, x=x, height=250)
    if y_range is not None:
        layout["yaxis"]["range"] = list(y_range)
    else:
        layout["yaxis"]["rangemode"] = "tozero"
    return finish({"data": data, "layout": layout}, [v for c in curves for v in c["x"]], x_title == "step")


def compare_facets(title: str, facets: dict[str, list[dict]], runs: list[str], x_title: str = "step",
                   y_title: str = "", x=None) -> dict:
    """One small panel per facet (e.g. concept category), one curve per run in each; shared y axis."""
    if not facets:
        return _message(title, "no dissection recorded for these runs", height=250)
    n = len(facets)
    gap = 0.03
    width = (1.0 - gap * (n - 1)) / n
    layout = _layout(title, x_title="", y_title="", x=None, height=250)
    layout["shapes"], layout["annotations"] = [], []
    data, shown = [], set()
    top = max([max([v for v in c["y"] if v is not None] or [0]) for cs in facets.values() for c in cs] or [1])
    for i, (facet, curves) in enumerate(facets.items()):
        suffix = "" if i == 0 else str(i + 1)
        lo = i * (width + gap)
        layout[f"xaxis{suffix}"] = {**AXIS, "domain": [lo, lo + width], "anchor": f"y{suffix}", "nticks": 3,
                                    "tickfont": {"size": 9},
                                    **x_axis_range([v for c in curves for v in c["x"]], x_title == "step")}
        layout[f"yaxis{suffix}"] = {**AXIS, "anchor": f"x{suffix}", "range": [0, top * 1.08 + 0.5],
                                    "showticklabels": i == 0, "title": {"text": y_title if i == 0 else ""}}
        layout["annotations"].append({"text": facet, "xref": "paper", "yref": "paper", "x": lo + width / 2,
                                      "y": 1.0, "xanchor": "center", "yanchor": "bottom", "showarrow": False,
                                      "font": {"size": 10, "color": "#495057"}})
        layout["shapes"].append(cursor(x, xref=f"x{suffix}"))
        for c in curves:
            color = LINE_COLORS[runs.index(c["run"]) % len(LINE_COLORS)]
            data.append(_line(c["x"], c["y"], c["run"], color, line_shape="hv", xaxis=f"x{suffix}",
                              yaxis=f"y{suffix}", legendgroup=c["run"], showlegend=c["run"] not in shown))
            shown.add(c["run"])
    layout["margin"]["t"] = 44
    layout["title"]["text"] = f"{title} <span style='font-size:10px;color:#868e96'>({x_title})</span>"
    fig = finish({"data": data, "layout": layout})
    if layout.get("showlegend") is not False:  # the facet names sit above the plots, the legend above them
        plot_height = layout["height"] - layout["margin"]["t"] - 40  # about: less the x axis' ticks
        layout["legend"]["y"] = 1.0 + 16 / max(1, plot_height)
    return fig
