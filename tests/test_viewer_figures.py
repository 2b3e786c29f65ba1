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
    assert all(t["line"]["shape"] == "hv" for t in fig["data"])


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


def test_sparse_series_draw_points_and_long_ones_lines():
    one = figures.selectivity_figure([500], {"fc": [0.4]}, "fc", "si", x=500)
    assert one["data"][0]["mode"] == "lines+markers"
    many = figures.selectivity_figure(list(range(0, 4000, 100)), {"fc": [0.4] * 40}, "fc", "si")
    assert many["data"][0]["mode"] == "lines"


def test_step_axes_span_the_steps():
    two = figures.selectivity_figure([0, 1], {"fc": [0.1, 0.3]}, "fc", "si")
    lo, hi = two["layout"]["xaxis"]["range"]
    assert -0.1 < lo < 0 and 1 < hi < 1.1  # not -0.5 .. 1.5
    assert two["layout"]["xaxis"]["tickvals"] == [0, 1]  # no tick at step 0.2
    single = figures.selectivity_figure([300], {"fc": [0.1]}, "fc", "si")["layout"]["xaxis"]
    assert single["range"][0] < 300 < single["range"][1] and single["tickvals"] == [300]
    wide = figures.selectivity_figure([0, 500, 1000], {"fc": [0.1, 0.2, 0.3]}, "fc", "si")["layout"]["xaxis"]
    assert wide["range"] == pytest.approx([-30, 1030]) and "tickvals" not in wide
    assert figures.x_range([None, 5]) == [4, 6] and figures.x_range([]) is None


def test_accuracy_at_the_steps_it_was_logged():
    fig = figures.accuracy_figure([0, 100, 200], {"heldout_accuracy": {"x": [50, 150, 250], "y": [0.2, 0.5, 0.7]}})
    assert fig["data"][0]["x"] == [50, 150, 250] and fig["data"][0]["y"] == [0.2, 0.5, 0.7]
    lo, hi = fig["layout"]["xaxis"]["range"]
    assert lo < 0 and hi > 250  # the rows' steps and the metric's


def test_legend_sits_above_the_plot_with_room_for_its_rows():
    fig = figures.detectors_figure(STEPS, {c: [0, 1, 2] for c in ("color", "texture", "object", "part", "scene")},
                                   "fc")
    legend, margin = fig["layout"]["legend"], fig["layout"]["margin"]
    assert legend["y"] >= 1 and legend["yanchor"] == "bottom"  # above the plot, away from the x axis title
    rows = figures.legend_rows(["color", "texture", "object", "part", "scene"])
    assert rows >= 2 and margin["t"] >= figures.TITLE_SPACE + figures.LEGEND_ROW * rows
    assert fig["layout"]["height"] - margin["t"] == 200 - figures.TITLE_SPACE  # the plot keeps its height
    # three layers' names wrap in a chart of half a card (seen in a 1280 px window): two rows reserved
    assert figures.legend_rows(["conv1", "conv2", "fc"]) == 2
    single = figures.unit_selectivity_figure(STEPS, {"si": [0.1, 0.2, 0.3]})
    assert single["layout"]["showlegend"] is False and single["layout"]["margin"]["t"] == figures.TITLE_SPACE
