"""The researcher's studies page: every study with its links, and a form that creates one (real Chromium)."""

import json

import pytest

from tests.support.browser import chromium, serve
from tests.support.study_run import tiny_run
from viewer.app import create_app
from viewer.study.answers import StudyDB
from viewer.study.home import home_html


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("home")
    tiny_run(root / "runs" / "tiny")
    return root


def test_the_page_lists_studies_and_offers_the_runs(runs, tmp_path):
    app = create_app(runs / "runs", warm=False, studies=tmp_path / "studies.sqlite")
    client = app.server.test_client()
    token = StudyDB(tmp_path / "studies.sqlite").researcher_token
    assert client.get("/study/").status_code == 401  # the researcher's page
    auth = {"Authorization": f"Bearer {token}"}
    page = client.get("/study/", headers=auth).get_data(as_text=True)
    assert "No studies yet." in page and "<option>tiny</option>" in page
    assert json.loads(page.split("id='runs'>", 1)[1].split("</script>", 1)[0]) == [
        {"id": "tiny", "layers": ["conv1", "conv2"], "steps": [0, 3, 6]}]
    spec = {"run": "tiny", "layer": "conv2", "units": [1, 2], "step": 6, "task": "pairs", "n_test": 2,
            "n_practice": 1, "n_references": 2, "n_catch": 0, "participants": 2}
    study = json.loads(client.post("/study/api/studies", json=spec, headers=auth).data)["study"]
    page = client.get("/study/", headers=auth).get_data(as_text=True)
    assert f"<td>{study}</td><td>pairs</td>" in page and "<td>1, 2</td>" in page and "0 of 2 done" in page
    assert f"href='r/{study}'" in page and page.count("href='p/") == 2
    assert b"nav-studies" in client.get("/_dash-layout", headers=auth).data  # the viewer links the page


def test_run_names_cannot_close_the_script_that_holds_them(tmp_path):
    db = StudyDB(tmp_path / "studies.sqlite")
    page = home_html(db, [{"id": "a</script><script>alert(1)</script>", "layers": ["x"], "steps": [1]}])
    assert page.count("</script>") == 2  # the data block's and the page script's own
    assert "a&lt;/script&gt;" in page  # the option, escaped
    assert "No runs" in home_html(db, []) and "<form" not in home_html(db, [], creates=False)


def test_a_study_created_in_the_browser_gives_working_links(runs, tmp_path):
    db_path = tmp_path / "studies.sqlite"
    token = StudyDB(db_path).researcher_token
    with serve(runs / "runs", env={"TUNELINE_STUDIES": str(db_path)}) as url, chromium() as browser:
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(f"{url}/?token={token}")  # sets the researcher's cookie
        page.click("#nav-studies")
        page.wait_for_selector("#new")
        assert page.input_value("#layer") == "conv1" and page.input_value("#step") == "6"  # the latest checkpoint
        page.select_option("#layer", "conv2")
        page.fill("#units", "1, 3-4")
        page.select_option("#task", "masks")
        assert page.is_hidden("#conditions")  # reference conditions belong to pairs studies
        page.fill("#participants", "2")
        page.fill("#n_practice", "1")
        page.fill("#n_test", "2000")  # more than the tiny probe allows: refused by the server, in its words
        page.click("#submit")
        page.wait_for_selector("#made.refused")
        assert "n_test=2000 needs that many" in page.inner_text("#made")
        page.fill("#n_test", "3")
        page.click("#submit")
        page.wait_for_selector("#made ol li a")
        links = page.eval_on_selector_all("#made ol li a", "links => links.map(a => a.href)")
        assert len(links) == 2 and all("/study/p/" in link for link in links)
        study = StudyDB(db_path).studies()[-1]
        spec = StudyDB(db_path).spec(study)
        assert (spec.layer, spec.units, spec.step, spec.task, spec.n_test) == ("conv2", [1, 3, 4], 6, "masks", 3)
        page.fill("#units", "1, x")  # refused on the page, before any request
        page.click("#submit")
        page.wait_for_selector("#made.refused")
        assert "units given an invalid value: \"x\"" in page.inner_text("#made")
        page.fill("#units", "99")  # a unit the layer does not have
        page.click("#submit")
        page.wait_for_function("() => document.querySelector('#made').innerText.includes('99')")
        assert "refused" in page.get_attribute("#made", "class")
        page.screenshot(path=str(tmp_path / "studies.png"), full_page=True)
        participant = browser.new_page()  # a participant's link works without the researcher's cookie
        participant.goto(links[0])
        participant.wait_for_selector("#main")
        page.goto(f"{url}/study/")
        assert page.locator("#studies tbody tr").count() == 1
