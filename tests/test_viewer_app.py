"""viewer.app: the app factory, served through Flask's test client (no browser)."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from viewer.app import create_app
from support.synthetic import SyntheticRun


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    root = tmp_path_factory.mktemp("app")
    SyntheticRun(layers={"fc": 6}, checkpoints=3, map_size=3).write(root / "sweep" / "a")
    app = create_app(root, warm=False)
    return app.server.test_client()


def dependencies(client) -> list[dict]:
    return client.get("/_dash-dependencies").get_json()


def call(client, output_contains: str, inputs: list, state=(), changed=None) -> dict:
    """POST one callback the way the renderer does; returns the JSON response."""
    dep = next(d for d in dependencies(client) if output_contains in d["output"])
    outputs = [{"id": o.rsplit(".", 1)[0], "property": o.rsplit(".", 1)[1]}
               for o in dep["output"].strip(".").split("...")]
    body = {"output": dep["output"], "outputs": outputs if len(outputs) > 1 else outputs[0],
            "inputs": [{"id": i, "property": p, "value": v} for i, p, v in inputs],
            "state": [{"id": i, "property": p, "value": v} for i, p, v in state],
            "changedPropIds": changed or [f"{inputs[0][0]}.{inputs[0][1]}"]}
    response = client.post("/_dash-update-component", json=body)
    assert response.status_code in (200, 204), response.data[:500]
    return response.get_json() if response.status_code == 200 else {}


def test_importing_reads_nothing_and_never_imports_torch():
    code = ("import sys, viewer, viewer.app, viewer.__main__, viewer.views, viewer.notebook; "
            "bad = [m for m in sys.modules if m == 'torch' or m.startswith('training')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def _imports_and_private_names(path: Path):
    """Modules a source file imports, and the `x._name` attributes it reads (x not self/cls)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (("import", a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            yield "import", node.module or ""
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                yield "private", node.attr


def test_viewer_uses_only_public_dash_api_and_no_test_support():
    sources = sorted(Path(create_app.__code__.co_filename).parent.glob("*.py"))
    assert len(sources) > 8
    found = [(p.name, kind, name) for p in sources for kind, name in _imports_and_private_names(p)]
    assert [f for f in found if f[1] == "private"] == []
    imported = [name for _, kind, name in found if kind == "import"]
    assert "dash" in imported and not [m for m in imported if m.startswith(("dash._", "support", "tests"))
                                       or "._" in m]
    assert not {"synthetic.py", "browser.py"} & {p.name for p in sources}


def test_serves_the_shell_assets_and_callbacks(client):
    assert client.get("/").status_code == 200
    layout = client.get("/_dash-layout").get_json()
    assert "url" in json.dumps(layout) and "page" in json.dumps(layout)
    js = client.get("/assets/tuneline.js")
    assert js.status_code == 200 and b"renderMap" in js.data
    outputs = " ".join(d["output"] for d in dependencies(client))
    for needed in ("page.children", "map-data.data", "map-charts.data", "unit-panel.children", "cmp-data.data",
                   "map-step-label.children", "map-hist.figure"):
        assert needed in outputs


@pytest.mark.parametrize("path", ["/assets/../data.py", "/assets/%2e%2e/data.py", "/assets/../../pyproject.toml"])
def test_assets_do_not_leave_the_assets_folder(client, path):
    response = client.get(path)
    assert response.status_code == 404 or b"def " not in response.data


@pytest.mark.parametrize("search", ["?run=../../../../etc/passwd", "?run=/etc/passwd",
                                    "?run=..%2F..%2F..%2Fetc%2Fpasswd", "?run=sweep/a/../../../etc"])
def test_a_path_in_the_url_is_an_unknown_run(client, search):
    out = call(client, "page.children", [("route", "data", "/" + search)],
               state=[("url", "pathname", "/"), ("url", "search", search)])
    text = json.dumps(out)
    assert "unknown run" in text and "root:" not in text


@pytest.mark.parametrize("run_id", ["../../../../etc", "/etc", "sweep/a/..", "%2e%2e", {"a": 1}, ["sweep/a"]])
def test_a_path_as_run_value_is_refused(client, run_id):
    out = call(client, "map-data.data",
               [("map-run", "value", run_id), ("map-layer", "value", "fc"), ("map-by", "value", "true"),
                ("map-metric", "value", "si"), ("map-n", "data", None)],
               state=[("map-t", "value", 0), ("map-t", "max", 0)])
    response = out["response"]
    assert response["map-data"]["data"] is None
    assert "unknown run" in json.dumps(response["map-status"])


def test_live_rows_keep_the_slider_position_or_follow_the_newest(client):
    inputs = [("map-run", "value", "sweep/a"), ("map-layer", "value", "fc"), ("map-by", "value", "true"),
              ("map-metric", "value", "si"), ("map-n", "data", 3)]
    picked = call(client, "map-data.data", inputs, state=[("map-t", "value", 1), ("map-t", "max", 1)],
                  changed=["map-run.value"])
    assert picked["response"]["map-t"]["value"] == 2  # a newly picked run opens at its last checkpoint
    assert picked["response"]["map-unit"]["data"] is None
    live = call(client, "map-data.data", inputs, state=[("map-t", "value", 0), ("map-t", "max", 1)],
                changed=["map-n.data"])
    assert "map-t" not in live["response"] or "value" not in live["response"]["map-t"]  # stays put
    assert live["response"]["map-t"]["max"] == 2
    newest = call(client, "map-data.data", inputs, state=[("map-t", "value", 1), ("map-t", "max", 1)],
                  changed=["map-n.data"])
    assert newest["response"]["map-t"]["value"] == 2  # at the newest checkpoint: follows the new one


def test_two_apps_in_one_process_each_get_callbacks(tmp_path):
    a = create_app(tmp_path, warm=False)
    b = create_app(tmp_path, warm=False)
    for app in (a, b):
        deps = app.server.test_client().get("/_dash-dependencies").get_json()
        outputs = [d["output"] for d in deps]
        assert len(outputs) == len(set(outputs)) and any("page.children" in o for o in outputs)
