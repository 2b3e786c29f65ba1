"""viewer.figures: plain figure dicts with a movable cursor, and messages instead of empty plots."""

import json

import numpy as np
import pytest

from viewer import figures

STEPS = [0, 100, 200]


def cursors(fig):
    return [s for s in fig["layout"]["shapes"] if s.get("name") == "cursor"]


def test_selectivity_figure_bold_current_layer_and_cursor():
    fig = figures.selectivity_figure(STEPS, {"a": [0.1, 0.2, 0.3], "b": [0.2, 0.4, None]}, "b", "si", x=100)
    assert [t["name"] for t in fig["data"]] == ["a", "b"]
    assert fig["data"][1]["line"]["width"] > fig["data"][0]["line"]["width"]
    assert cursors(fig)[0]["x0"] == cursors(fig)[0]["x1"] == 100
    assert fig["layout"]["yaxis"]["range"] == [0, 1]
    json.dumps(fig)  # plain JSON, no numpy


@pytest.mark.parametrize("fig, text", [
    (figures.detectors_figure(STEPS, None, "fc"), "no dissection recorded"),
    (figures.accuracy_figure(STEPS, {}), "no accuracy metric"),
    (figures.selectivity_figure(STEPS, {}, None), "no layer recorded"),
    (figures.iou_figure(STEPS, {}, 0.04), "no dissection recorded"),
    (figures.compare_figure("t", [], ["r"]), "nothing recorded"),
    (figures.compare_facets("t", {}, ["r"]), "no dissection recorded"),
])
def test_empty_figures_say_why(fig, text):
    assert fig["data"] == [] and text in fig["layout"]["annotations"][0]["text"]


def test_hue_histogram_bars_in_class_hues():
    fig = figures.hue_histogram(["a", "b"], ["#e60000", "#00e6e6"], np.array([3, 4]))
    assert fig["data"][0]["y"] == [3, 4] and fig["data"][0]["marker"]["color"] == ["#e60000", "#00e6e6"]
    json.dumps(fig)


def test_detectors_step_lines_per_category():
    fig = figures.detectors_figure(STEPS, {"color": [0, 1, 2], "object": [0, 0, 1]}, "fc", x=200)
    assert [t["name"] for t in fig["data"]] == ["color", "object"]
    assert all(t["line_shape"] == "hv" for t in fig["data"])


def test_unit_figures():
    heat = figures.class_means_figure(STEPS, ["x", "y"], np.array([[1.0, np.nan, 2.0], [0.0, 1.0, 1.0]]), x=0)
    assert heat["data"][0]["z"] == [[1.0, None, 2.0], [0.0, 1.0, 1.0]]
    json.dumps(heat)
    iou = figures.iou_figure(STEPS, {"red (color)": [0.0, 0.05, 0.1]}, 0.04, x=200)
    threshold = [s for s in iou["layout"]["shapes"] if s.get("name") != "cursor"][0]
    assert threshold["y0"] == threshold["y1"] == 0.04
    assert "detector > 0.04" in iou["layout"]["annotations"][0]["text"]


def test_compare_colors_by_run_and_facets_by_category():
    runs = ["r1", "r2"]
    fig = figures.compare_figure("sel", [{"x": STEPS, "y": [0, 1, 2], "run": "r2"}], runs)
    assert fig["data"][0]["line"]["color"] == figures.LINE_COLORS[1]
    facets = figures.compare_facets("det", {"color": [{"x": STEPS, "y": [0, 1, 1], "run": "r1"},
                                                      {"x": STEPS, "y": [0, 0, 1], "run": "r2"}],
                                            "scene": [{"x": STEPS, "y": [1, 1, 1], "run": "r1"}]}, runs, x=100)
    assert [t["xaxis"] for t in facets["data"]] == ["x", "x", "x2"]
    assert [t["showlegend"] for t in facets["data"]] == [True, True, False]  # one legend entry per run
    assert [c["xref"] for c in cursors(facets)] == ["x", "x2"] and all(c["x0"] == 100 for c in cursors(facets))
    json.dumps(facets)
