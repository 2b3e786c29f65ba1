"""viewer.rf_figures: RF sizes over training with their spread and the theoretical size; a unit's RF."""

import json

import numpy as np
import pytest

from viewer import rf_figures


def test_rf_size_figure_median_band_and_theoretical():
    series = [{"name": "conv3", "x": [0, 300], "median": [20.0, 12.0], "lo": [18.0, 10.0], "hi": [23.0, 14.0],
               "theoretical": 16.0},
              {"name": "conv4", "x": [0, 300], "median": [22.0, 11.0], "lo": [20.0, 9.0], "hi": [25.0, 13.0],
               "theoretical": 40.0}]
    fig = rf_figures.rf_size_figure("empirical RF size over training", series, x=300)
    medians = [d for d in fig["data"] if d.get("fill") is None]
    bands = [d for d in fig["data"] if d.get("fill") == "toself"]
    assert [d["name"] for d in medians] == ["conv3", "conv4"] and medians[0]["y"] == [20.0, 12.0]
    assert bands[0]["y"] == [23.0, 14.0, 10.0, 18.0]  # hi, then lo backwards: a closed band
    dashed = [s["y0"] for s in fig["layout"]["shapes"] if s.get("line", {}).get("dash") == "dash"]
    assert dashed == [16.0, 40.0]
    assert fig["layout"]["yaxis"]["range"][1] > 40  # the theoretical size fits
    json.dumps(fig)


def test_rf_size_figure_without_occlusion_says_how_to_get_it():
    fig = rf_figures.rf_size_figure("t", [])
    assert "occlusion" in fig["layout"]["annotations"][0]["text"]


def test_unit_rf_figure_in_input_pixels_with_both_squares():
    canvas = np.zeros((5, 5))
    canvas[2, 2] = 1.0
    fig = rf_figures.unit_rf_figure(canvas, stride=4, rf_size=4.0, theoretical=18.0, step=300)
    heat = fig["data"][0]
    assert heat["x"] == [-8.0, -4.0, 0.0, 4.0, 8.0] and heat["z"][2][2] == 1.0
    sides = sorted(s["x1"] - s["x0"] for s in fig["layout"]["shapes"] if s["type"] == "rect")
    assert sides == [4.0, 18.0]
    assert "4 px vs theoretical 18 px" in fig["layout"]["title"]["text"]


def test_unit_rf_size_figure_marks_the_theoretical_size():
    fig = rf_figures.unit_rf_size_figure([0, 300, 600], [20.0, float("nan"), 12.0], 16.0, x=600)
    assert fig["data"][0]["y"] == [20.0, None, 12.0]
    assert any(s.get("y0") == 16.0 for s in fig["layout"]["shapes"])
    assert fig["layout"]["yaxis"]["range"][1] == pytest.approx(20.0 * 1.15)
