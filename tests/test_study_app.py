"""The viewer app serves the study routes when TUNELINE_STUDIES names a database; create over HTTP by run id."""

import json

from tests.support.study_run import tiny_run
from viewer.app import create_app
from viewer.study.answers import StudyDB


def test_viewer_serves_studies(tmp_path, monkeypatch):
    tiny_run(tmp_path / "runs" / "tiny")
    monkeypatch.setenv("TUNELINE_STUDIES", str(tmp_path / "studies.sqlite"))
    client = create_app(tmp_path / "runs", warm=False).server.test_client()
    token = StudyDB(tmp_path / "studies.sqlite").researcher_token
    spec = {"run": "tiny", "layer": "conv2", "units": [2], "step": 6, "task": "pairs", "n_test": 2, "n_practice": 1,
            "n_references": 2, "n_catch": 0, "participants": 2}
    assert client.post("/study/api/studies", json=spec).status_code == 401  # the gate, before the route
    reply = client.post("/study/api/studies", json=spec, headers={"Authorization": f"Bearer {token}"})
    assert reply.status_code == 201, reply.text
    links = json.loads(reply.data)["links"]
    assert len(links) == 2
    path = links[0].split("localhost", 1)[1]
    assert client.get(path).status_code == 200 and b"<script>" in client.get(path).data
    assert json.loads(client.get(f"{path}/state").data)["total"] == 3
    bad = client.post("/study/api/studies", json={**spec, "run": "../../etc"},
                      headers={"Authorization": f"Bearer {token}"})
    assert bad.status_code == 400 and b"run given an invalid value" in bad.data


def test_no_study_routes_without_a_database(tmp_path, monkeypatch):
    monkeypatch.delenv("TUNELINE_STUDIES", raising=False)
    client = create_app(tmp_path, warm=False).server.test_client()
    reply = client.get("/study/api/studies")  # Dash's page shell answers unknown paths; no study route does
    assert reply.mimetype != "application/json" and b"researcher's token" not in reply.data
    assert b"nav-studies" not in client.get("/_dash-layout").data  # no link to a studies page
