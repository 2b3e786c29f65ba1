"""viewer.callbacks: what is registered, and that browser-side callbacks exist in the asset."""

import re
from pathlib import Path

import pytest
from dash import ClientsideFunction, no_update

from viewer import callbacks
from viewer.app import create_app

ASSET = Path(callbacks.__file__).parent / "assets" / "tuneline.js"


@pytest.fixture(scope="module")
def deps(tmp_path_factory):
    """The callbacks as the page's renderer receives them."""
    app = create_app(tmp_path_factory.mktemp("empty"), warm=False)
    return app.server.test_client().get("/_dash-dependencies").get_json()


def test_every_clientside_function_is_defined_in_the_asset(deps):
    source = "\n".join(p.read_text() for p in sorted(ASSET.parent.glob("*.js")))  # every asset Dash loads
    defined = set(re.findall(r"^\s{4,6}(\w+): function", source, flags=re.M))
    used = {c["clientside_function"]["function_name"] for c in deps
            if c.get("clientside_function")}
    assert used == {"renderMap", "mapCursor", "togglePlay", "tick", "speed", "renderCompare", "compareCursor",
                    "hoverData", "routeKey", "syncUrl"}
    assert used <= defined
    assert all(c["clientside_function"]["namespace"] == "tuneline" for c in deps
               if c.get("clientside_function"))


def test_scrubbing_and_playing_never_call_the_server(deps):
    """Callbacks that read the slider while it moves, and the play loop, run in the browser."""
    for cb in deps:
        inputs = {f"{i['id']}.{i['property']}" for i in cb["inputs"]}
        if {"map-t.drag_value", "cmp-t.drag_value", "map-interval.n_intervals",
                "cmp-interval.n_intervals"} & inputs:
            assert cb.get("clientside_function"), cb["output"]


def test_server_callbacks_read_no_payload_from_the_page(deps):
    """The color payloads go to the page once; no server callback sends them back as state."""
    for cb in deps:
        if cb.get("clientside_function"):
            continue
        args = {f"{i['id']}.{i['property']}" for i in cb["inputs"] + cb["state"]}
        assert not args & {"map-data.data", "cmp-data.data", "map-charts.data", "cmp-charts.data", "map-hover.data"}, \
            cb["output"]


def test_index():
    assert [callbacks._index(v) for v in (3, 0, -2, None, "4", 2.5, True)] == [3, 0, 0, 0, 0, 0, 0]


def test_clientside_function_reference():
    ref = callbacks._js("tick")
    assert isinstance(ref, ClientsideFunction) and ref.namespace == "tuneline"


def test_follow_moves_to_the_newest_checkpoint_only_from_the_newest():
    assert callbacks.follow(4, 4, 7) == 7  # at the newest of 5: follow to the newest of 8
    assert callbacks.follow(0, 0, 2) == 2  # a run that had no rows: its newest
    assert callbacks.follow(None, None, 3) == 3  # nothing shown yet
    assert callbacks.follow(2, 4, 7) is no_update  # elsewhere: stays put
