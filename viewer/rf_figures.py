"""Plotly figures of receptive fields from occlusion, as plain dicts (no Dash, no run store).

    rf_size_figure("empirical RF size over training", [{"name": "conv3", **rf_series(run, "conv3")}])
    unit_rf_figure(canvas, stride=4, rf_size=14.2, theoretical=18)    # the RF in input pixels
    unit_rf_size_figure(steps, sizes, theoretical=18, x=step)         # one unit's RF size over training

Sizes are in input pixels: `rf_size` (the side of a square of the RF's area at >= half
its maximum) beside the theoretical RF's side (dashed), so Zhou et al.'s finding
(empirical far smaller than theoretical in deep layers) reads off directly.
"""

from __future__ import annotations

import numpy as np

from viewer.figures import LINE_COLORS, _layout, _line, _message, finish
from viewer.images import HEAT

# the ramp of the RF images (viewer.images.heat_rgb), as a Plotly colorscale
HEAT_SCALE = [[i / (len(HEAT) - 1), "rgb({:.0f},{:.0f},{:.0f})".format(*c)] for i, c in enumerate(HEAT)]

__all__ = ["rf_size_figure", "unit_rf_figure", "unit_rf_size_figure"]


def _band(x, lo, hi, color: str, name: str, **extra) -> dict:
    """The 25-75 % band as a closed filled outline."""
    r, g, b = (int(color[i:i + 2], 16) for i in (1, 3, 5))
    return {"type": "scatter", "mode": "lines", "x": list(x) + list(x)[::-1], "y": list(hi) + list(lo)[::-1],
            "fill": "toself", "fillcolor": f"rgba({r},{g},{b},0.16)", "line": {"width": 0}, "hoverinfo": "skip",
            "name": name, "showlegend": False, **extra}


def rf_size_figure(title: str, series: list[dict], x=None, x_title: str = "step", height: int = 200) -> dict:
    """Median `rf_size` per step with its 25-75 % band, one color per entry of `series` (a layer or a run:
    {"name", "x", "median", "lo", "hi", "theoretical"}), each theoretical size dashed in the same color."""
    if not series:
        return _message(title, "no occlusion recorded (Recorder(occlusion=...) or python -m recorder occlude)",
                        height=height)
    data, shapes, top = [], [], 0.0
    for i, s in enumerate(series):
        color = s.get("color") or LINE_COLORS[i % len(LINE_COLORS)]
        data.append(_band(s["x"], s["lo"], s["hi"], color, s["name"], legendgroup=s["name"]))
        line = _line(s["x"], s["median"], s["name"], color, legendgroup=s["name"])
        line["hovertemplate"] = "%{y:.1f} px<extra>" + s["name"] + " median</extra>"
        data.append(line)
        top = max(top, np.nanmax(np.asarray(s["hi"], float)) if len(s["hi"]) else 0.0)
        if s.get("theoretical"):
            top = max(top, s["theoretical"])
            shapes.append({"type": "line", "xref": "paper", "yref": "y", "x0": 0, "x1": 1, "y0": s["theoretical"],
                           "y1": s["theoretical"], "line": {"color": color, "width": 1, "dash": "dash"}})
    layout = _layout(title, x_title=x_title, y_title="px", x=x, height=height)
    layout["shapes"] += shapes
    layout["yaxis"]["range"] = [0, top * 1.1 + 1]
    layout["annotations"] = [{"text": "band: 25–75 % of units · dashed: theoretical", "xref": "paper", "yref": "paper", "x": 1, "y": 0,
                              "xanchor": "right", "yanchor": "bottom", "showarrow": False,
                              "font": {"size": 9, "color": "#868e96"}}]
    return finish({"data": data, "layout": layout}, [v for s in series for v in s["x"]], x_title == "step")


def _square(side: float, color: str, dash: str) -> dict:
    h = side / 2
    return {"type": "rect", "xref": "x", "yref": "y", "x0": -h, "x1": h, "y0": -h, "y1": h,
            "line": {"color": color, "width": 1.5, "dash": dash}}


def unit_rf_figure(canvas, stride: int, rf_size: float, theoretical: float | None, step: int | None = None) -> dict:
    """The unit's empirical RF (re-centred canvas, input-pixel offsets from its peak) with a square of side
    `rf_size` (solid) and the theoretical RF's square (dashed)."""
    canvas = np.asarray(canvas, dtype=np.float64)
    a, b = canvas.shape
    ys = ((np.arange(a) - (a - 1) / 2) * stride).tolist()
    xs = ((np.arange(b) - (b - 1) / 2) * stride).tolist()
    z = [[None if not np.isfinite(v) else float(v) for v in row] for row in canvas]
    title = f"empirical RF{f' · step {step:,}' if step is not None else ''}: {rf_size:.0f} px" + (
        f" vs theoretical {theoretical:.0f} px" if theoretical else "")
    layout = _layout(title, x_title="px from the peak", y_title="px", height=240, hovermode="closest")
    layout["shapes"] = [_square(rf_size, "#ffffff", "solid")]
    if theoretical:
        layout["shapes"].append(_square(theoretical, "#4dabf7", "dash"))
    half = max(ys[-1] + stride / 2, (theoretical or 0) / 2 + stride)
    layout["xaxis"].update(range=[-half, half], zeroline=False)
    layout["yaxis"].update(range=[half, -half], scaleanchor="x", zeroline=False)
    data = [{"type": "heatmap", "x": xs, "y": ys, "z": z, "colorscale": HEAT_SCALE, "showscale": False,
             "hovertemplate": "%{x:.0f}, %{y:.0f} px: %{z:.3g}<extra></extra>"}]
    return {"data": data, "layout": layout}


def unit_rf_size_figure(steps, sizes, theoretical: float | None, x=None) -> dict:
    """One unit's `rf_size` at its occluded checkpoints, the theoretical size dashed."""
    title = "empirical RF size over training"
    line = _line(steps, [None if not np.isfinite(v) else v for v in sizes], "rf_size", LINE_COLORS[0])
    line["hovertemplate"] = "%{y:.1f} px<extra></extra>"
    layout = _layout(title, y_title="px", x=x, height=240)
    top = max([v for v in sizes if np.isfinite(v)] + [theoretical or 0, 1.0])
    layout["yaxis"]["range"] = [0, top * 1.15]
    if theoretical:
        layout["shapes"].append({"type": "line", "xref": "paper", "yref": "y", "x0": 0, "x1": 1, "y0": theoretical,
                                 "y1": theoretical, "line": {"color": "#868e96", "width": 1, "dash": "dash"}})
        layout["annotations"] = [{"text": f"theoretical {theoretical:.0f} px", "xref": "paper", "yref": "y", "x": 1,
                                  "y": theoretical, "xanchor": "right", "yanchor": "bottom", "showarrow": False,
                                  "font": {"size": 10, "color": "#868e96"}}]
    return finish({"data": [line], "layout": layout}, steps)
