"""viewer.study.gate: with studies on, every route but the participants' needs the researcher's token."""

import json
import re

import pytest

from tests.support.study_run import tiny_run
from tests.test_viewer_app import call
from viewer import __main__ as viewer_cli
from viewer.app import create_app
from viewer.study.gate import COOKIE, OPEN_PATHS, OPEN_PREFIXES

SPEC = {"run": "tiny", "layer": "conv2", "units": [2], "step": 6, "task": "pairs", "n_test": 2, "n_practice": 1,
        "n_references": 2, "n_catch": 0, "participants": 1}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gate")
    tiny_run(folder / "runs" / "tiny")
    app = create_app(folder / "runs", warm=False, studies=folder / "studies.sqlite")
    token = app.server.config["TUNELINE_STUDY_DB"].researcher_token
    admin = app.server.test_client()
    reply = admin.post("/study/api/studies", json=SPEC, headers={"Authorization": f"Bearer {token}"})
    assert reply.status_code == 201, reply.text
    body = json.loads(reply.data)
    return app, token, body["study"], body["links"][0].split("localhost", 1)[1]


def _url(rule, study: str, participant: str) -> str:
    """A concrete URL for a Flask rule: the study and participant where named, 'x' elsewhere."""
    values = {name: study if name == "study" else participant.rsplit("/", 1)[1] if name == "token" else "x"
              for name in rule.arguments}
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", lambda m: values[m.group(1)], rule.rule)


def test_every_route_but_the_participants_needs_the_token(served):
    app, token, study, participant = served
    client = app.server.test_client()  # a participant's browser: no cookie, no header
    checked = []
    for rule in app.server.url_map.iter_rules():
        url = _url(rule, study, participant)
        if url.startswith(OPEN_PREFIXES) or url in OPEN_PATHS:
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            reply = client.open(url, method=method, json={})
            assert reply.status_code in (401, 403), (method, url, reply.status_code)
            checked.append(url)
    for needed in ("/", "/_dash-layout", "/_dash-dependencies", "/_dash-update-component", "/study/r/" + study,
                   "/study/api/studies", f"/study/api/studies/{study}/results.csv", "/<path:path>".replace(
                       "<path:path>", "x")):
        assert needed in checked, needed
    assert client.get("/sweep/a/unit/3?run=tiny").status_code == 401  # Dash's catch-all page
    denied = client.get("/_dash-layout")
    assert b"researcher's token" in denied.data and b"conv2" not in denied.data


def test_a_wrong_token_is_refused(served):
    app, token, _, _ = served
    client = app.server.test_client()
    assert client.get("/_dash-layout", headers={"Authorization": "Bearer " + "0" * len(token)}).status_code == 401
    assert client.get("/?token=nope").status_code == 401
    client.set_cookie(COOKIE, "nope")
    assert client.get("/_dash-layout").status_code == 401


def test_one_visit_with_the_token_opens_the_viewer_in_that_browser(served):
    app, token, study, _ = served
    client = app.server.test_client()
    first = client.get(f"/?run=tiny&token={token}")
    assert first.status_code == 303 and first.headers["Location"] == "/?run=tiny"  # the token leaves the URL
    cookie = first.headers["Set-Cookie"]
    assert f"{COOKIE}={token}" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert client.get("/?run=tiny").status_code == 200
    again = client.get(f"/?token={token}")  # with the cookie already set, the token still leaves the URL
    assert again.status_code == 303 and again.headers["Location"] == "/"
    assert "url" in json.dumps(client.get("/_dash-layout").get_json())
    page = call(client, "page.children", [("route", "data", "/?run=tiny")],
                state=[("url", "pathname", "/"), ("url", "search", "?run=tiny")])
    assert "conv2" in json.dumps(page)
    assert client.get(f"/study/r/{study}").status_code == 200
    assert client.get("/study/api/studies").get_json()[0]["study"] == study


def test_the_header_opens_every_route(served):
    app, token, study, _ = served
    client = app.server.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    for url in ("/", "/_dash-layout", "/_dash-dependencies", f"/study/r/{study}", "/study/api/studies"):
        assert client.get(url, headers=headers).status_code == 200, url
    assert "Set-Cookie" not in client.get("/", headers=headers).headers


def test_participant_routes_and_assets_need_no_token(served):
    app, _, _, participant = served
    client = app.server.test_client()
    page = client.get(participant)
    assert page.status_code == 200 and b"<script>" in page.data
    state = client.get(f"{participant}/state").get_json()
    reply = client.post(f"{participant}/answer", json={"item": state["position"], "choice": "left", "confidence": 2})
    assert reply.status_code == 200, reply.text
    assert client.get(f"{participant}/state").get_json()["position"] == state["position"] + 1
    assert client.get("/assets/tuneline.css").status_code == 200
    assert client.get("/study/p/unknown/state").status_code == 404


def test_python_m_viewer_prints_the_researcher_link(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TUNELINE_STUDIES", str(tmp_path / "studies.sqlite"))
    apps = []

    def made(root):
        app = create_app(root, warm=False)
        app.run = lambda **kwargs: apps.append(kwargs)
        apps.append(app)
        return app

    monkeypatch.setattr("viewer.app.create_app", made)
    viewer_cli.main([str(tmp_path), "--port", "8123"])
    token = apps[0].server.config["TUNELINE_STUDY_DB"].researcher_token
    assert f"http://127.0.0.1:8123/?token={token}" in capsys.readouterr().err
    monkeypatch.delenv("TUNELINE_STUDIES")
    viewer_cli.main([str(tmp_path)])
    assert "token" not in capsys.readouterr().err
