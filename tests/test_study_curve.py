"""viewer.study_curve and the over-training routes: with studies on, the unit page of a studied unit shows its
curve; the researcher's /overtime route and results page give the same numbers as `overtime.curves`."""

import json

import pytest

from tests.support.study_run import tiny_run
from viewer import views
from viewer.app import create_app
from viewer.study.__main__ import main as study_cli
from viewer.study.overtime import curves
from viewer.study.scripted import centre_distance
from viewer.study.source import StudySource
from viewer.study_curve import study_blocks, study_figure, unit_studies

SPEC = {"run": "tiny", "layer": "conv2", "units": [2, 5], "step": 3, "task": "pairs", "n_test": 3, "n_practice": 1,
        "n_references": 2, "n_catch": 0, "participants": 2}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = tmp_path_factory.mktemp("curve")
    tiny_run(folder / "runs" / "tiny")
    app = create_app(folder / "runs", warm=False, studies=folder / "studies.sqlite")
    db = app.server.config["TUNELINE_STUDY_DB"]
    client = app.server.test_client()
    headers = {"Authorization": f"Bearer {db.researcher_token}"}
    body = client.post("/study/api/studies", json=SPEC, headers=headers).get_json()
    for link in body["links"]:  # each participant answers every item by the occluder's distance to the centre
        path = link.split("localhost", 1)[1]
        while not (state := client.get(f"{path}/state").get_json())["done"]:
            answer = {"item": state["item"]["item"], **centre_distance(state["item"])}
            assert client.post(f"{path}/answer", json=answer).status_code == 200
    return app, db, body["study"], headers, StudySource.open(folder / "runs" / "tiny")


def test_route_cli_and_results_page_give_the_curves(served, capsys):
    app, db, study, headers, source = served
    expected = json.loads(json.dumps(curves(db, study, source)))
    client = app.server.test_client()
    assert client.get(f"/study/api/studies/{study}/overtime").status_code == 401
    got = client.get(f"/study/api/studies/{study}/overtime", headers=headers).get_json()
    assert got == expected and got["steps"] == [0, 3, 6] and set(got["units"]) == {"2", "5"}
    page = client.get(f"/study/r/{study}", headers=headers).data.decode()
    assert "Over training" in page and page.count("<svg") == 2
    assert study_cli(["overtime", study, "--db", str(db.path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "study,unit,metric,step,value" and len(lines) == 1 + 2 * 3
    for line in lines[1:]:
        _, unit, metric, step, value = line.split(",")
        row = expected["units"][unit]
        assert metric == "accuracy" and float(value) == pytest.approx(row["values"][expected["steps"].index(int(step))])


def test_the_unit_page_shows_the_study_curve(served):
    app, db, study, _, source = served
    expected = curves(db, study, source)
    with app.server.test_request_context("/"):
        registry = app.server.config["TUNELINE_REGISTRY"]
        shown = json.loads(json.dumps(views.unit_view(registry, "tiny", "conv2", 5, "true", "si", 2), cls=_Plotly))
        other = json.dumps(views.unit_view(registry, "tiny", "conv2", 1, "true", "si", 2), cls=_Plotly)
    text = json.dumps(shown)
    assert "unit-studies" in text and f"study {study}: occlusion pairs, made at step 3" in text
    figure = _find_figure(shown, f"study {study}")
    assert figure["data"][0]["x"] == [0, 3, 6] and figure["data"][0]["y"] == expected["units"][5]["values"]
    assert figure["data"][1]["x"] == [3]  # the study's own checkpoint marked
    assert "unit-studies" not in other  # unit 1 is in no study
    assert unit_studies(db, source.run.location, "conv2", 2) == [study]
    assert unit_studies(db, source.run.location, "conv1", 2) == []
    assert study_blocks(app.server.config["TUNELINE_REGISTRY"], "tiny", "conv2", 5) == []  # no app: no database


def test_study_figure_marks_the_own_step_and_spans_zero_to_one():
    fig = study_figure("t", [0, 10, 20], [0.2, None, 0.9], "imrou", 10, x=20)
    assert fig["layout"]["yaxis"]["range"] == [0.0, 1.02] and "ImRoU" in fig["layout"]["yaxis"]["title"]["text"]
    assert fig["data"][1]["y"] == [None] and fig["layout"]["shapes"][0]["x0"] == 20
    assert study_figure("t", [5], [-0.3], "imrou", 5)["layout"]["yaxis"]["range"][0] == -0.3


class _Plotly(json.JSONEncoder):
    def default(self, o):
        return o.to_plotly_json() if hasattr(o, "to_plotly_json") else str(o)


def _find_figure(tree, title):
    if isinstance(tree, dict):
        if tree.get("layout", {}).get("title", {}).get("text", "").startswith(title):
            return tree
        return next((f for v in tree.values() if (f := _find_figure(v, title)) is not None), None)
    if isinstance(tree, list):
        return next((f for v in tree if (f := _find_figure(v, title)) is not None), None)
    return None

