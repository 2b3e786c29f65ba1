"""viewer.views: callback bodies as plain functions, tested without a browser."""

import json

from plotly.io.json import to_json_plotly
import pytest

from viewer import views
from viewer.data import Registry
from viewer.layout import ID
from support.synthetic import SyntheticRun


def text(component) -> str:
    """Every string inside a Dash component tree."""
    if component is None:
        return ""
    if isinstance(component, str):
        return component
    if isinstance(component, (list, tuple)):
        return " ".join(text(c) for c in component)
    return text(getattr(component, "children", None))


def find(component, id_):
    if isinstance(component, (list, tuple)):
        for c in component:
            hit = find(c, id_)
            if hit is not None:
                return hit
        return None
    if getattr(component, "id", None) == id_:
        return component
    children = getattr(component, "children", None)
    return None if children is None or isinstance(children, str) else find(children, id_)


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    root = tmp_path_factory.mktemp("views")
    layers = {"conv": 30, "fc": 12}
    SyntheticRun(layers=layers, checkpoints=6, seed=1, config={"wd": 0.0, "lr": 0.1}).write(root / "sweep" / "a")
    SyntheticRun(layers=layers, checkpoints=4, every=150, seed=2, config={"wd": 1e-4, "lr": 0.1}).write(
        root / "sweep" / "b")
    SyntheticRun(layers={"head": 5}, checkpoints=3, seed=3, concepts=[]).write(root / "other")
    SyntheticRun(layers={"fc": 4}, checkpoints=3).open_writer(root / "zero").close()
    SyntheticRun(layers={"fc": 4}, checkpoints=2).write(root / "damaged")
    meta_file = root / "damaged" / "record.zarr" / "zarr.json"
    meta = json.loads(meta_file.read_text())
    meta["attributes"]["n_committed"] = 7
    meta_file.write_text(json.dumps(meta))
    (root / "garbage" / "record.zarr").mkdir(parents=True)
    (root / "garbage" / "record.zarr" / "zarr.json").write_bytes(b"\x00\xff")
    return Registry(root, poll_s=0.0)


def test_empty_folder_says_so(tmp_path):
    page = views.route(Registry(tmp_path), "/", "")
    assert "No runs found under" in text(page) and "record.zarr" in text(page)
    assert "tl-warn" in page.children[0].className and find(page, ID.empty_live) is not None


def test_a_root_that_cannot_be_searched_says_why():
    page = views.route(Registry("nosuchscheme://bucket/sweep"), "/", "")
    assert "could not be searched" in text(page) and "nosuchscheme" in text(page)
    assert find(page, ID.empty_live) is not None  # and looks again


def test_map_page_for_the_first_run_by_default(registry):
    page = views.route(registry, "/", "")
    assert find(page, ID.run).value == "damaged"  # the first readable run, in sorted order
    labels = [o["label"] for o in find(page, ID.run).options]
    assert "garbage (unreadable)" in labels


def test_a_run_that_was_empty_when_opened_is_shown_once_it_has_rows(tmp_path):
    gen = SyntheticRun(layers={"fc": 4}, checkpoints=3, map_size=0)
    gen.write(tmp_path / "b")
    with gen.open_writer(tmp_path / "a") as writer:
        registry = Registry(tmp_path, poll_s=0.0)
        assert find(views.route(registry, "/", ""), ID.run).value == "b"  # 'a' has no rows yet
        gen.append(writer, 0, 1)
        assert find(views.route(registry, "/", ""), ID.run).value == "a"


def test_map_page_from_query(registry):
    page = views.route(registry, "/", "?run=sweep/b&layer=fc&by=pred&metric=entropy&unit=3")
    assert (find(page, ID.run).value, find(page, ID.layer).value) == ("sweep/b", "fc")
    assert (find(page, ID.by).value, find(page, ID.metric).value) == ("pred", "entropy")
    assert find(page, ID.unit).data == 3


@pytest.mark.parametrize("search", ["?run=../../etc/passwd", "?run=%2Fetc%2Fpasswd", "?run=sweep%2F..%2F..",
                                    "?run=" + "a" * 1000])
def test_unknown_run_in_url_is_named_not_opened(registry, search):
    page = views.route(registry, "/", search)
    assert "unknown run" in text(page)
    assert find(page, ID.run).value in {e.id for e in registry.entries()}


def test_unknown_page(registry):
    assert "There is no page" in text(views.route(registry, "/../../etc/passwd", ""))


def test_map_controls_disable_what_was_not_recorded(registry):
    c = views.map_controls(registry, "sweep/a", "fc", "pred", "precision")
    assert (c["layer"], c["by"], c["metric"]) == ("fc", "pred", "si")  # precision is by true label only
    assert {o["value"]: o["disabled"] for o in c["metrics"]}["precision"]
    assert c["n"] == 6
    unknown = views.map_controls(registry, "../x")
    assert unknown["layers"] == [] and unknown["layer"] is None


def test_map_view(registry):
    view = views.map_view(registry, "sweep/a", "conv", "true", "si")
    assert view["status"] is None and view["max"] == 5 and view["payload"]["K"] == 30
    assert "conv · 30 units" in view["title"]
    assert "circle" in text(view["legend"])
    to_json_plotly(view["payload"])  # what Dash sends


@pytest.mark.parametrize("run_id, layer, expected", [
    ("zero", "fc", "no committed checkpoints yet"),
    ("damaged", "fc", "cannot be read"),
    ("garbage", None, "cannot be read"),
    ("../sweep/a", "fc", "unknown run"),
    ("sweep/a", "nope", "no layer 'nope'"),
])
def test_map_view_problems_are_messages(registry, run_id, layer, expected):
    view = views.map_view(registry, run_id, layer, "true", "si")
    assert view["payload"] is None and expected in text(view["status"])
    assert "Traceback" not in text(view["status"])


def test_map_hover(registry):
    hover = views.map_hover(registry, "sweep/a", "fc")
    assert hover["key"] == "sweep/a|fc|6" and hover["concept"] and hover["concepts"][0] == "red"
    assert views.map_hover(registry, "sweep/a", "nope") is None
    assert views.map_hover(registry, "../../x", "fc") is None


def test_map_charts(registry):
    charts = views.map_charts(registry, "sweep/a", "conv", "true", "si")
    assert len(charts["counts"]) == 6 and len(charts["counts"][0]) == 10
    assert sum(charts["hist"]["data"][0]["y"]) == sum(charts["counts"][-1])
    assert [t["name"] for t in charts["sel"]["data"]] == ["conv", "fc"]
    assert charts["det"]["data"] and charts["acc"]["data"]
    assert views.map_charts(registry, "zero", "fc", "true", "si") is None
    no_dissection = views.map_charts(registry, "other", "head", "true", "si")
    assert "no dissection" in no_dissection["det"]["layout"]["annotations"][0]["text"]


def test_unit_view(registry):
    panel = views.unit_view(registry, "sweep/a", "conv", 2, "true", "si", 5)
    words = text(panel)
    assert "conv · unit 2" in words and "step 500" in words and "dominant class" in words
    assert "top 4 probe images at step 500" in words and "mask outlined" in words
    imgs = find(panel, "unit-topk").children
    assert len(imgs) == 4 and imgs[0].children[0].src.startswith("data:image/png;base64,")
    assert views.unit_view(registry, "sweep/a", "conv", None, "true", "si", 0) == []
    assert "units 0 .. 29" in text(views.unit_view(registry, "sweep/a", "conv", 99, "true", "si", 0))
    assert "unknown run" in text(views.unit_view(registry, "/etc", "conv", 1, "true", "si", 0))


def test_poll(registry):
    assert views.poll(registry, ["sweep/a", "zero", "garbage", "../x"]) == {"sweep/a": 6, "zero": 0}


def test_compare_page_from_query(registry):
    page = views.route(registry, "/compare", "?runs=sweep/a,sweep/b&layer=fc")
    assert find(page, ID.c_runs).value == ["sweep/a", "sweep/b"]
    assert (find(page, ID.c_layer).value, find(page, ID.c_by).value, find(page, ID.c_metric).value) == (
        "fc", "true", "si")
    # by default: runs with rows that share a layer (not 'zero', 0 rows; not 'other', no layer in common)
    assert find(views.route(registry, "/compare", ""), ID.c_runs).value == ["sweep/a", "sweep/b"]
    page = views.route(registry, "/compare", "?runs=other,../../x")
    assert find(page, ID.c_runs).value == ["other"] and "unknown runs" in text(page)


def test_default_comparison_prefers_runs_with_rows_that_share_a_layer(tmp_path):
    """Runs with rows sharing a layer, even where a folder holds more runs: empty ones, or ones
    that share no layer with the others."""
    SyntheticRun(layers={"fc": 4}, checkpoints=2, map_size=0).open_writer(tmp_path / "big" / "a").close()
    SyntheticRun(layers={"fc": 4}, checkpoints=2, map_size=0).open_writer(tmp_path / "big" / "b").close()
    SyntheticRun(layers={"x": 4}, checkpoints=2, map_size=0).write(tmp_path / "big" / "c")
    SyntheticRun(layers={"y": 4}, checkpoints=2, map_size=0).write(tmp_path / "big" / "d")
    SyntheticRun(layers={"fc": 4, "z": 3}, checkpoints=2, map_size=0).write(tmp_path / "small" / "e")
    SyntheticRun(layers={"z": 3}, checkpoints=1, map_size=0).write(tmp_path / "small" / "f")
    registry = Registry(tmp_path, poll_s=0.0)
    ids = [e.id for e in registry.entries()]
    assert views.default_comparison(registry, ids) == ["small/e", "small/f"]
    controls = views.compare_controls(registry, ["small/e", "small/f"])
    assert controls["layer"] == "z"


def test_compare_controls_use_shared_layers(registry):
    c = views.compare_controls(registry, ["sweep/a", "sweep/b"])
    assert [o["value"] for o in c["layers"]] == ["conv", "fc"] and c["by"] == "true" and c["metric"] == "si"
    assert views.compare_controls(registry, ["sweep/a", "other"])["layer"] is None


def test_compare_view_aligns_two_runs(registry):
    view = views.compare_view(registry, ["sweep/a", "sweep/b"], "fc", "true", "si", "step")
    data = view["data"]
    assert [p["run"] for p in data["runs"]] == ["sweep/a", "sweep/b"]
    assert [h["key"] for h in data["hovers"]] == [p["hover_key"] for p in data["runs"]]
    assert data["positions"] == [0, 100, 150, 200, 300, 400, 450, 500]
    assert data["rows"][1] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert view["max"] == 7 and len(view["grid"]) == 2
    assert "wd=0.0" in text(view["grid"][0]) and "wd=0.0001" in text(view["grid"][1])
    frac = views.compare_view(registry, ["sweep/a", "sweep/b"], "fc", "true", "si", "fraction")
    assert frac["data"]["positions"][-1] == 1.0 and frac["marks"]


def test_compare_view_problems(registry):
    assert "share no layer" in text(views.compare_view(registry, ["sweep/a", "other"], None, "true", "si")["status"])
    assert "Pick runs" in text(views.compare_view(registry, [], None, None, None)["status"])
    partial = views.compare_view(registry, ["sweep/a", "zero"], "fc", "true", "si")
    assert len(partial["data"]["runs"]) == 1 and "no committed checkpoints" in text(partial["status"])


def test_compare_charts(registry):
    charts = views.compare_charts(registry, ["sweep/a", "sweep/b"], "fc", "true", "si", "fraction")
    assert [t["name"] for t in charts["sel"]["data"]] == ["sweep/a", "sweep/b"]
    assert charts["sel"]["data"][1]["x"] == pytest.approx([0, 1 / 3, 2 / 3, 1])
    assert charts["acc"]["layout"]["title"]["text"] == "heldout_accuracy"
    assert {t["xaxis"] for t in charts["det"]["data"]} == {"x", "x2", "x3", "x4", "x5"}


def test_config_notes_name_what_differs():
    notes = views.config_notes([{"wd": 0.0, "lr": 0.1, "seed": 1}, {"wd": 1e-4, "lr": 0.1, "seed": 2}])
    assert notes == ["wd=0.0", "wd=0.0001"]
    assert views.config_notes([{"seed": 1}, {"seed": 2}]) == ["seed=1", "seed=2"]


def test_preferred_accuracy():
    assert views.preferred_accuracy(["train_accuracy", "heldout_accuracy"]) == "heldout_accuracy"
    assert views.preferred_accuracy(["probe_accuracy", "train_accuracy"]) == "probe_accuracy"
    assert views.preferred_accuracy([]) is None


def test_default_comparison_takes_four_runs_at_most(tmp_path):
    for i in range(5):
        SyntheticRun(layers={"fc": 2}, checkpoints=1, map_size=0, topk=0).write(tmp_path / "s" / str(i))
    registry = Registry(tmp_path, poll_s=0.0)
    assert views.default_comparison(registry, [e.id for e in registry.entries()]) == ["s/0", "s/1", "s/2", "s/3"]
    assert views.default_comparison(registry, []) == []


JUNK = [None, "", "../..", "/etc/passwd", 3, -1, 2.5, True, ["sweep/a"], {"run": "sweep/a"}, "x" * 10000]


@pytest.mark.parametrize("junk", JUNK)
def test_any_value_from_a_request_gives_a_page_not_an_exception(registry, junk):
    text(views.route(registry, junk, junk))
    views.map_controls(registry, junk, junk, junk, junk)
    views.map_view(registry, junk, "fc", "true", "si")
    views.map_view(registry, "sweep/a", junk, junk, junk)
    views.map_charts(registry, "sweep/a", junk, junk, junk)
    views.unit_view(registry, "sweep/a", "fc", junk, "true", "si", junk)
    views.unit_view(registry, junk, junk, 0, junk, junk, 0)
    views.compare_controls(registry, junk, junk, junk, junk)
    views.compare_view(registry, junk, junk, junk, junk, junk)
    views.compare_view(registry, ["sweep/a"], "fc", "true", "si", junk)
    views.compare_charts(registry, ["sweep/a", junk], junk, junk, junk, junk)
    views.poll(registry, junk)


def test_new_runs_appear_in_the_run_list(tmp_path):
    SyntheticRun(layers={"fc": 4}, checkpoints=1).write(tmp_path / "a")
    reg = Registry(tmp_path, rescan_s=0.0)
    shown = views.run_options(reg)
    assert views.new_run_options(reg, shown) is None
    SyntheticRun(layers={"fc": 4}, checkpoints=1).write(tmp_path / "b")
    assert [o["value"] for o in views.new_run_options(reg, shown)] == ["a", "b"]


@pytest.fixture(scope="module")
def occluded(tmp_path_factory):
    root = tmp_path_factory.mktemp("occluded")
    occ = dict(patch=8, stride=4, every=2)
    SyntheticRun(layers={"conv3": 12, "conv4": 8}, checkpoints=5, seed=1, signed=("conv3",), heldout_offset=40,
                 occlusion=occ).write(root / "s" / "a")
    SyntheticRun(layers={"conv3": 12, "conv4": 8}, checkpoints=4, seed=2, every=150, occlusion=occ).write(
        root / "s" / "b")
    SyntheticRun(layers={"conv3": 12}, checkpoints=3, seed=3).write(root / "s" / "plain")
    return Registry(root, poll_s=0.0)


def test_map_names_the_signed_rule_in_title_and_legend(occluded):
    view = views.map_view(occluded, "s/a", "conv3", "true", "si")
    rule = occluded.run("s/a").layer("conv3").rule
    assert "signed layer" in view["title"] and f"selectivity rule: {rule}" in text(view["legend"])
    plain = views.map_view(occluded, "s/a", "conv4", "true", "si")
    assert "signed" not in plain["title"] and "max(mu, 0)" in text(plain["legend"])
    panel = views.unit_view(occluded, "s/a", "conv3", 1, "true", "si", 4)
    assert f"selectivity rule: {rule}" in text(panel)


def test_map_charts_hold_metrics_at_their_steps_and_rf_sizes(occluded):
    charts = views.map_charts(occluded, "s/a", "conv3", "true", "si")
    heldout = next(t for t in charts["acc"]["data"] if t["name"] == "heldout_accuracy")
    assert heldout["x"] == [40, 140, 240, 340, 440]
    assert [t["name"] for t in charts["rf"]["data"] if not t.get("fill")] == ["conv3", "conv4"]
    assert views.map_charts(occluded, "s/plain", "conv3", "true", "si")["rf"] is None


def test_unit_view_shows_occlusion_of_the_latest_occluded_row(occluded):
    panel = views.unit_view(occluded, "s/a", "conv4", 3, "true", "si", 3)
    assert "Occlusion and receptive field" in text(panel) and "occlusion at step 200" in text(panel)
    assert len(find(panel, "unit-occ").children) == 4  # a mask | discrepancy pair per top image
    assert len(find(panel, "unit-rf-strip").children) == 3  # rows 0, 2, 4
    assert "Occlusion" not in text(views.unit_view(occluded, "s/plain", "conv3", 0, "true", "si", 2))


def test_compare_legend_names_each_runs_rule_when_they_differ(occluded):
    view = views.compare_view(occluded, ["s/a", "s/b"], "conv3", "true", "si")
    assert "differs between runs" in text(view["legend"]) and "s/a: signed layer" in text(view["legend"])
    same = views.compare_view(occluded, ["s/a", "s/b"], "conv4", "true", "si")
    assert "selectivity rule: class means above 0" in text(same["legend"])


def test_compare_charts_rf_size_per_run(occluded):
    charts = views.compare_charts(occluded, ["s/a", "s/b"], "conv4", "true", "si", "step")
    medians = [t for t in charts["rf"]["data"] if not t.get("fill")]
    assert [t["name"] for t in medians] == ["s/a", "s/b"]
    assert medians[1]["x"] == [0, 300]  # s/b's occluded rows 0 and 2, at its own steps
    assert medians[0]["line"]["color"] != medians[1]["line"]["color"]
    assert views.compare_charts(occluded, ["s/plain"], "conv3", "true", "si", "step")["rf"] is None
