"""viewer.layout: layout builders from plain values."""

from dash import dcc, html

from viewer import layout
from viewer.layout import ID


def ids(component) -> set:
    found = set()

    def walk(c):
        if isinstance(c, (list, tuple)):
            for x in c:
                walk(x)
            return
        if getattr(c, "id", None) is not None:
            found.add(c.id)
        children = getattr(c, "children", None)
        if children is not None and not isinstance(children, str):
            walk(children)

    walk(component)
    return found


def test_slider_marks_label_steps():
    assert layout.slider_marks([0, 500, 1000, 1500, 2_000_000], n=3) == {
        0: {"label": "0"}, 2: {"label": "1k"}, 4: {"label": "2M"}}
    assert layout._short(1500) == "1.5k" and layout._short(123456) == "123k"
    assert layout.slider_marks([]) == {}
    assert list(layout.slider_marks([7])) == [0]
    assert list(layout.slider_marks([0, 1])) == [0, 1]  # both ends of a two-row run
    assert len(layout.slider_marks(list(range(0, 20000, 100)))) == 7


def test_map_page_has_every_component_the_callbacks_use():
    page = layout.map_page([{"label": "a", "value": "a"}], {"run": "a", "layer": "fc", "n": 3}, unit=4)
    expected = {ID.run, ID.layer, ID.by, ID.metric, ID.order, ID.data, ID.charts, ID.n, ID.unit, ID.canvas,
                ID.slider, ID.play, ID.speed, ID.interval, ID.label, ID.status, ID.hist, ID.sel, ID.det, ID.acc,
                ID.panel, ID.live, ID.legend, ID.title}
    assert expected <= ids(page)
    stores = {c.id: c for c in page.children if isinstance(c, dcc.Store)}
    assert stores[ID.unit].data == 4 and stores[ID.n].data == 3


def test_compare_page_and_panels():
    page = layout.compare_page([{"label": "a", "value": "a"}], ["a"], {"layers": [{"label": "fc", "value": "fc"}],
                                                                     "layer": "fc"},
                               notice="unknown runs ['x'] were left out")
    assert {ID.c_runs, ID.c_layer, ID.c_grid, ID.c_slider, ID.c_data, ID.c_live, ID.c_align} <= ids(page)
    panel = layout.compare_panel(2, "sweep/a", "wd=0.1")
    assert "cmp-canvas-2" in ids(panel) and "cmp-label-2" in ids(panel)


def test_legend_names_every_class_with_its_hue():
    items = layout.legend(["cat", "dog"], ["#e60000", "#00e6e6"])
    classes = items[0].children
    assert [c.children[1] for c in classes] == ["cat", "dog"]
    assert [c.children[0].style["background"] for c in classes] == ["#e60000", "#00e6e6"]
    many = layout.legend([f"c{i}" for i in range(100)], ["#000000"] * 100)
    assert "60 more classes" in many[0].children[-1].children


def test_message_kinds():
    assert layout.message(None) is None
    box = layout.message("No runs", "warn")
    assert isinstance(box, html.Div) and "tl-warn" in box.className and box.children == "No runs"
