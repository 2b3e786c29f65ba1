"""Study routes over real HTTP (a server process): no truth leaks, kill -9 loses no acknowledged answer,
20 concurrent participants, researcher routes need the token, refusals are 4xx with a message."""

import http.client
import json
import random
import sqlite3
import threading
import time
import urllib.error
import urllib.request

import pytest

from tests.support.study_run import tiny_run
from tests.support.study_server import StudyServer
from viewer.study.answers import StudyDB
from viewer.study.items import generate
from viewer.study.scripted import centre_distance, lookup_answer, play, post_json
from viewer.study.source import StudySource
from viewer.study.spec import StudySpec


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("api")
    source = StudySource.open(tiny_run(folder / "run"))
    db = StudyDB(folder / "studies.sqlite")
    masks = StudySpec(run=str(source.run.location), layer="conv2", units=[1, 4], step=6, task="masks", n_test=6,
                      n_practice=2, n_examples=3)
    pairs = StudySpec(run=str(source.run.location), layer="conv2", units=[2, 5], step=6, task="pairs", n_test=3,
                      n_practice=1, n_references=2, n_catch=1, conditions=["none", "natural"])
    studies = {"masks": db.create(masks, generate(source, masks), 2)[0],
               "pairs": db.create(pairs, generate(source, pairs), 2)[0]}
    server = StudyServer(db.path).start()
    yield db, studies, server
    server.stop()


def _get(url):
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _concept_lookup(db, study):
    return {it["public"]["image"]: it["extra"]["baselines"]["concept"] if it["phase"] == "test" else it["truth"]
            for it in db.items(study)}


def test_no_response_carries_a_test_truth(setup):
    db, studies, server = setup
    bodies = []  # (url, status, text) of every response
    for task, study in studies.items():
        for token in db.add_participants(study, 2):
            link = f"{server.url}/study/p/{token}"
            predict = lookup_answer(_concept_lookup(db, study)) if task == "masks" else centre_distance

            def record(url, status, body, link=link):
                bodies.append((url, status, body))
                state = json.loads(body) if status == 200 and url.endswith("/state") else {}
                for key in ("item", "context"):  # every picture the page would load
                    value = state.get(key) or {}
                    names = [value.get(k) for k in ("image", "left", "right")] + value.get("references", []) + \
                        [e["image"] for e in value.get("examples", [])]
                    for name in filter(None, names):
                        code, data = _get(f"{link}/image/{name}")
                        assert code == 200 and data[:4] == b"\x89PNG"
                        bodies.append((name, code, data.decode("latin-1")))

            play(link, predict, on_response=record)
            for url in (f"{server.url}/study/api/studies/{study}/results", f"{server.url}/study/r/{study}",
                        f"{server.url}/study/api/studies/{study}/results.csv"):
                code, data = _get(url)  # researcher routes without the token
                assert code == 403 and b"researcher's token" in data
                bodies.append((url, code, data.decode()))
    items = {study: db.items(study) for study in studies.values()}
    shown_masks = {it["truth"] for its in items.values() for it in its if it["phase"] == "practice"}
    shown_masks |= {e["mask"] for study in studies.values() for e in _examples(db, study)}
    unique = [it["truth"] for it in items[studies["masks"]] if it["phase"] == "test" and it["truth"] not in shown_masks
              and "1" in it["truth"]]
    assert len(unique) >= 3  # the scan below has truths to look for
    values = [repr(v)[:8] for it in items[studies["pairs"]] for v in it["extra"]["values"]]
    for url, status, body in bodies:
        for truth in unique:
            assert truth not in body, url
        for value in values:
            assert value not in body, url
        if status == 200 and body.startswith("{"):
            reply = json.loads(body)
            if "truth" in reply or "feedback" in reply:
                assert reply["phase"] == "practice", url
            item = reply.get("item")
            assert "extra" not in reply and not (isinstance(item, dict) and "truth" in item), url


def _examples(db, study):
    """The example masks of every unit of the study (shown to participants before practice)."""
    with sqlite3.connect(db.path) as conn:
        rows = conn.execute("SELECT value FROM context WHERE study = ?", (study,)).fetchall()
    return [e for (value,) in rows for e in json.loads(value).get("examples", [])]


def test_refusals_over_http(setup):
    db, studies, server = setup
    (token,) = db.add_participants(studies["pairs"], 1)
    answer = f"{server.url}/study/p/{token}/answer"
    assert post_json(answer, b"not json")[0] == 400
    status, text = post_json(answer, {"item": 1, "choice": "left", "confidence": 2})
    assert status == 409 and "out of order; the next item to answer is 0" in text
    assert post_json(answer, {"item": 0, "choice": "left", "confidence": 2})[0] == 200
    status, text = post_json(answer, {"item": 0, "choice": "left", "confidence": 2})
    assert status == 409 and "already answered" in text
    status, text = post_json(answer, {"item": 1, "choice": "middle", "confidence": 2})
    assert status == 400 and "choice='middle'" in text
    assert _get(f"{server.url}/study/p/nope/state")[0] == 404
    assert _get(f"{server.url}/study/p/{token}/image/../../etc/passwd")[0] == 404
    status, body = _get(f"{server.url}/study/api/studies/{studies['pairs']}/progress?token={db.researcher_token}")
    assert status == 200 and any(p["answered"] == 1 for p in json.loads(body)["participants"])


def test_kill_9_loses_no_acknowledged_answer_and_participants_resume(setup):
    db, studies, _ = setup
    server = StudyServer(db.path).start()
    tokens = db.add_participants(studies["pairs"], 6)
    acked = {token: [] for token in tokens}

    def answer_forever(token):
        link = f"{server.url}/study/p/{token}"
        try:
            while True:
                state = json.loads(urllib.request.urlopen(f"{link}/state", timeout=10).read())
                if state["done"]:
                    return
                choice = centre_distance(state["item"])
                status, _ = post_json(f"{link}/answer", {"item": state["item"]["item"], **choice}, timeout=10)
                if status == 200:
                    acked[token].append((state["item"]["item"], choice["choice"]))
        except (OSError, http.client.HTTPException):  # e.g. IncompleteRead of a reply cut short
            return  # the server was killed

    threads = [threading.Thread(target=answer_forever, args=(t,)) for t in tokens]
    for thread in threads:
        thread.start()
    deadline = time.time() + 30
    while sum(map(len, acked.values())) < 10 and time.time() < deadline:
        time.sleep(0.005)
    time.sleep(random.random() * 0.05)
    server.kill()
    for thread in threads:
        thread.join(30)
    total = len(db.items(studies["pairs"]))
    assert 10 <= sum(map(len, acked.values())) < 6 * total  # killed mid-study
    server.start()
    try:
        stored = {}
        for a in db.answers(studies["pairs"]):
            stored.setdefault(a["participant"], []).append((a["seq"], a["answer"]))
        numbers = {p["token"]: p["number"] for p in db.participants(studies["pairs"])}
        for token in tokens:
            mine = stored.get(numbers[token], [])
            assert mine[:len(acked[token])] == acked[token]  # every acknowledged answer, unchanged
            state = json.loads(urllib.request.urlopen(f"{server.url}/study/p/{token}/state").read())
            assert state["position"] == len(mine)  # resumes after the last stored answer
            play(f"{server.url}/study/p/{token}")
        assert all(p["answered"] == total for p in db.participants(studies["pairs"]) if p["token"] in tokens)
    finally:
        server.stop()


def test_twenty_concurrent_participants(setup):
    db, studies, server = setup
    tokens = db.add_participants(studies["pairs"], 20)
    errors = []

    def run(token):
        try:
            play(f"{server.url}/study/p/{token}")
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=run, args=(t,)) for t in tokens]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors
    total = len(db.items(studies["pairs"]))
    numbers = {p["token"]: p["number"] for p in db.participants(studies["pairs"])}
    answers = [a for a in db.answers(studies["pairs"]) if a["participant"] in {numbers[t] for t in tokens}]
    assert len(answers) == 20 * total
    assert len({(a["participant"], a["seq"]) for a in answers}) == 20 * total  # none duplicated
    for token in tokens:
        assert sorted(a["seq"] for a in answers if a["participant"] == numbers[token]) == list(range(total))
