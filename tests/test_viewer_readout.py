"""viewer.readout: what the viewer shows, from a run, checked against recorder's own readouts."""

import base64

import numpy as np
import pytest

from recorder.store import RunStore
from viewer import colors, readout
from viewer.readout import ViewError
from support.synthetic import SyntheticRun


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    path = tmp_path_factory.mktemp("readout") / "run"
    SyntheticRun(layers={"conv": 40, "fc": 24}, checkpoints=9, seed=11).write(path)
    return RunStore.open(path)


def decode(payload, name, dtype):
    data = np.frombuffer(base64.b64decode(payload[name]), dtype=dtype)
    return data.reshape(payload["T"], payload["K"]) if data.size == payload["T"] * payload["K"] else data


def painted(payload):
    """The RGB the browser paints for every tile, done as assets/tuneline.js does it."""
    dom = decode(payload, "dom", "<u1" if payload["dom_bytes"] == 1 else "<u2").astype(int)
    sat = decode(payload, "sat", "u1").astype(int)
    pal = np.frombuffer(base64.b64decode(payload["palette"]), np.uint8).reshape(payload["C"], -1, 3)
    out = np.empty(dom.shape + (3,), int)
    out[...] = payload["nan_rgb"]
    live = (dom != payload["no_class"]) & (sat <= payload["sat_levels"])
    out[(dom != payload["no_class"]) & (sat == payload["sat_dead"])] = payload["dead_rgb"]
    out[live] = pal[dom[live], sat[live]]
    return out


@pytest.mark.parametrize("by, metric", [("true", "si"), ("pred", "entropy"), ("true", "precision"),
                                        ("train", "si"), ("train_window", "entropy")])
def test_payload_colors_are_hue_class_saturation_selectivity(run, by, metric):
    p = readout.layer_payload(run, "rid", "conv", by, metric)
    layer = run.layer("conv")
    assert (p["T"], p["K"], p["C"]) == (9, 40, 10)
    expected = colors.tile_rgb(layer.dominant(by), layer.selectivity(metric, by), layer.dead(by), 10)
    assert np.array_equal(painted(p), expected)
    assert p["steps"] == run.steps.tolist() and p["classes"] == run.classes
    assert p["key"] == f"rid|conv|{by}|{metric}|9"


def test_hover_concepts_match_best_concepts(run):
    from recorder.metrics import best_concepts
    p = {**readout.hover_payload(run, "rid", "fc"), "T": 9, "K": 24}
    assert p["key"] == readout.layer_payload(run, "rid", "fc")["hover_key"] == "rid|fc|9"
    concept = decode(p, "concept", "<u2")
    iou = decode(p, "iou", "<u2")
    category = np.array([p["concept_category"].index(c.category) for c in run.concepts])
    ref = best_concepts(run.layer("fc").iou, category, min_iou=-np.inf)
    assert np.array_equal(concept & 0x7FFF, ref["concept"])
    assert np.allclose(iou / p["iou_scale"], ref["iou"], atol=0.6e-4)
    assert np.array_equal((concept & 0x8000) > 0, run.layer("fc").detectors()["is_detector"])


def test_payload_order_sorts_units_by_final_class(run):
    p = readout.layer_payload(run, "rid", "fc")
    order = np.frombuffer(base64.b64decode(p["order"]), "<u4")
    assert sorted(order.tolist()) == list(range(24))
    final = decode(p, "dom", "u1")[-1][order]
    assert final.tolist() == sorted(final.tolist())


def test_detector_series_equals_unique_detectors(run):
    series = readout.detector_series(run, "conv")
    ref = run.layer("conv").unique_detectors()
    assert list(series) == list(ref)
    for name in ref:
        assert series[name] == ref[name].tolist()


def test_class_counts_hand_computed():
    dom = np.array([[0, 1, 1, -1], [2, 2, 2, 0]])
    dead = np.array([[False, False, True, False], [False, False, False, False]])
    assert readout.class_counts(dom, dead, 3).tolist() == [[1, 1, 0], [1, 0, 3]]


def test_run_series(run):
    s = readout.run_series(run, "true", "si")
    assert list(s["selectivity"]) == ["conv", "fc"]
    assert np.allclose(s["selectivity"]["fc"], np.nanmean(run.layer("fc").selectivity("si"), axis=1))
    assert set(s["accuracy"]) == {"heldout_accuracy", "train_accuracy"}
    assert readout.run_series(run, "pred", "precision")["selectivity"] == {}  # precision is by true label only


def test_unit_detail(run):
    d = readout.unit_detail(run, "conv", 3, "true", t=-1)
    assert d["t"] == 8 and d["step"] == 800
    assert np.allclose(d["class_means"], run.layer("conv").class_means("true")[:, :, 3].T, equal_nan=True)
    assert set(d["selectivity"]) == {"si", "entropy", "precision"}
    assert len(d["iou"]) == readout.N_UNIT_CONCEPTS and d["best"]["iou"] > 0
    assert [im["image"] for im in d["images"]] == run.layer("conv").topk_index[8, 3].tolist()
    assert d["images"][0]["map"].shape == (7, 7)
    assert d["images"][0]["threshold"] == pytest.approx(float(run.layer("conv").threshold[8, 3]))


@pytest.mark.parametrize("kwargs, match", [
    ({"layer": "nope"}, "no layer 'nope'"),
    ({"unit": 40}, "units 0 .. 39"),
    ({"unit": -1}, "units 0 .. 39"),
    ({"t": 9}, "out of range"),
])
def test_unit_detail_errors(run, kwargs, match):
    args = {"layer": "conv", "unit": 0, "by": "true", "t": 0, **kwargs}
    with pytest.raises(ViewError, match=match):
        readout.unit_detail(run, args["layer"], args["unit"], args["by"], args["t"])


@pytest.mark.parametrize("layer, by, metric, match", [
    ("conv", "pred", "precision", "only recorded by true label"),
    ("conv", "sideways", "si", "grouping 'sideways' is not one of"),
    ("conv", "true", "loudness", "metric 'loudness' is not one of"),
    ("deep", "true", "si", "has no layer 'deep'"),
])
def test_payload_refuses_what_was_not_recorded(run, layer, by, metric, match):
    with pytest.raises(ViewError, match=match):
        readout.layer_payload(run, "rid", layer, by, metric)


def test_lean_run_has_no_pred_grouping_and_zero_rows_say_so(tmp_path):
    gen = SyntheticRun(layers={"fc": 6}, checkpoints=2, lean=True, map_size=0)
    gen.write(tmp_path / "lean")
    lean = RunStore.open(tmp_path / "lean")
    assert readout.available_groupings(lean, "fc") == ["true"]
    with pytest.raises(ViewError, match="no probe, by predicted label data"):
        readout.layer_payload(lean, "x", "fc", "pred", "si")
    gen.open_writer(tmp_path / "empty").close()
    with pytest.raises(ViewError, match="no committed checkpoints yet"):
        readout.layer_payload(RunStore.open(tmp_path / "empty"), "x", "fc")


def test_align_by_step():
    a = readout.align_rows([[0, 100, 200], [0, 50, 100, 150]], "step")
    assert a["positions"] == [0, 50, 100, 150, 200]
    assert a["rows"] == [[0, 0, 1, 1, 2], [0, 1, 2, 3, 3]]
    late = readout.align_rows([[0, 10], [5, 10]], "step")
    assert late["rows"][1] == [-1, 0, 1]  # before its first checkpoint


def test_align_by_fraction():
    a = readout.align_rows([[0, 100, 200], [0, 500, 1000, 1500, 2000]], "fraction")
    assert a["positions"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert a["rows"] == [[0, 0, 1, 1, 2], [0, 1, 2, 3, 4]]
    with pytest.raises(ViewError, match="alignment 'epoch'"):
        readout.align_rows([[0]], "epoch")


def test_hover_without_dissection(tmp_path):
    SyntheticRun(layers={"fc": 4}, checkpoints=2, concepts=[], map_size=0).write(tmp_path / "r")
    hover = readout.hover_payload(RunStore.open(tmp_path / "r"), "r", "fc")
    assert hover["concept"] is None and hover["iou"] is None


@pytest.fixture(scope="module")
def signed_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("readout") / "signed"
    SyntheticRun(layers={"conv": 48, "fc": 16}, checkpoints=8, seed=5, signed=("conv",), heldout_offset=30).write(path)
    return RunStore.open(path)


def test_signed_layer_dead_only_where_every_response_is_the_same(signed_run):
    """Dead tiles where the unit responds the same to every image (numpy: every class mean at the stored
    smallest response), never merely because its means are negative; the rule in force travels along."""
    p = readout.layer_payload(signed_run, "rid", "conv", "true", "si")
    layer = signed_run.layer("conv")
    mu = layer.sum_true / layer.count_true[:, :, None]  # (T, C, K)
    floor = layer.response_min  # (T, K)
    constant = np.all(np.abs(mu - floor[:, None, :]) <= 1e-5 * np.maximum(1.0, np.abs(floor[:, None, :])), axis=1)
    dead = decode(p, "sat", "u1") == p["sat_dead"]
    assert np.array_equal(dead, constant) and constant.any()
    negative = np.all(mu < 0, axis=1) & ~constant
    assert negative.any()  # units with every mean below 0 ...
    assert not dead[negative].any()  # ... are not painted dead
    assert p["signed"] is True and p["rule"] == layer.rule and "smallest response" in p["rule"]
    unsigned = readout.layer_payload(signed_run, "rid", "fc", "true", "si")
    assert unsigned["signed"] is False and unsigned["rule"] == signed_run.layer("fc").rule
    t, k = np.argwhere(negative)[0]
    detail = readout.unit_detail(signed_run, "conv", int(k), "true", int(t))
    assert detail["dead"] is False and detail["rule"] == layer.rule


def test_metrics_at_the_steps_they_were_logged(signed_run):
    s = readout.run_series(signed_run, "true", "si")
    steps, values = signed_run.scalar("heldout_accuracy")
    assert s["accuracy"]["heldout_accuracy"] == {"x": steps.tolist(), "y": values.tolist()}
    assert s["accuracy"]["heldout_accuracy"]["x"] == [int(v) + 30 for v in signed_run.steps]  # not the rows' steps
    assert readout.scalar_version(signed_run) == sum(len(signed_run.scalar(n)[0]) for n in signed_run.scalar_names) \
        + len(signed_run.scalar_names)
