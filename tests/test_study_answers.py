"""Answers in SQLite: strict order, refusals with clear messages, practice feedback, resume, conditions."""

import sqlite3

import pytest

from tests.support.study_run import tiny_run
from viewer.study.answers import AnswerError, StudyDB
from viewer.study.items import generate
from viewer.study.source import StudySource
from viewer.study.spec import StudySpec


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return StudySource.open(tiny_run(tmp_path_factory.mktemp("answers") / "run"))


@pytest.fixture
def pairs(source, tmp_path):
    spec = StudySpec(run=str(source.run.location), layer="conv2", units=[1], step=6, task="pairs", n_test=3,
                     n_practice=1, n_references=2, n_catch=1, conditions=["none", "natural"])
    db = StudyDB(tmp_path / "s.sqlite")
    study, tokens = db.create(spec, generate(source, spec), participants=3)
    return db, study, tokens


def test_wal_and_answers_in_order(pairs):
    db, study, tokens = pairs
    with sqlite3.connect(db.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    state = db.state(tokens[0])
    assert state["position"] == 0 and state["total"] == 5 and state["item"]["phase"] == "practice"
    reply = db.submit(tokens[0], {"item": 0, "choice": "left", "confidence": 2})
    assert reply["truth"] in ("left", "right") and reply["feedback"]["correct"] == (reply["truth"] == "left")
    reply = db.submit(tokens[0], {"item": 1, "choice": "right", "confidence": 1})
    assert reply["phase"] == "test" and "truth" not in reply and "feedback" not in reply
    assert StudyDB(db.path).state(tokens[0])["position"] == 2  # a new connection resumes there
    stored = db.answers(study)
    assert [(a["participant"], a["seq"], a["answer"], a["confidence"]) for a in stored] == [
        (0, 0, "left", 2), (0, 1, "right", 1)]


@pytest.mark.parametrize("body, status, match", [
    ({"item": 0, "choice": "left", "confidence": 2}, 409, "item 0 was already answered"),
    ({"item": 3, "choice": "left", "confidence": 2}, 409, "item 3 is out of order; the next item to answer is 1"),
    ({"item": "1", "choice": "left", "confidence": 2}, 400, "item given an invalid value: '1'"),
    ({"item": 1, "choice": "up", "confidence": 2}, 400, "choice='up'"),
    ({"item": 1, "choice": "left", "confidence": 4}, 400, "confidence=4"),
    ({"item": 1, "choice": "left", "confidence": True}, 400, "confidence=True"),
    ({"item": 1, "choice": "left", "confidence": 2, "truth": "left"}, 400, "unexpected field"),
    ([1, 2], 400, "must be a JSON object"),
])
def test_refusals(pairs, body, status, match):
    db, _, tokens = pairs
    db.submit(tokens[0], {"item": 0, "choice": "left", "confidence": 2})
    with pytest.raises(AnswerError, match=match) as info:
        db.submit(tokens[0], body)
    assert info.value.status == status
    assert db.state(tokens[0])["position"] == 1  # nothing stored by a refusal


def test_unknown_link_and_conditions(pairs):
    db, study, tokens = pairs
    with pytest.raises(AnswerError, match="no study at this link") as info:
        db.state("not-a-token")
    assert info.value.status == 404
    assert [p["condition"] for p in db.participants(study)] == ["none", "natural", "none"]
    assert "references" not in db.state(tokens[0])["context"]
    assert len(db.state(tokens[1])["context"]["references"]) == 2


def test_complete_study_refuses_more(pairs):
    db, _, tokens = pairs
    for seq in range(5):
        db.submit(tokens[2], {"item": seq, "choice": "left", "confidence": 3})
    assert db.state(tokens[2])["done"]
    with pytest.raises(AnswerError, match="already answered"):
        db.submit(tokens[2], {"item": 4, "choice": "left", "confidence": 3})
    with pytest.raises(AnswerError, match="the study is complete"):
        db.submit(tokens[2], {"item": 5, "choice": "left", "confidence": 3})


def test_mask_answers(source, tmp_path):
    spec = StudySpec(run=str(source.run.location), layer="conv2", units=[3], step=6, task="masks", n_test=2,
                     n_practice=1, n_examples=2)
    db = StudyDB(tmp_path / "m.sqlite")
    _, (token,) = db.create(spec, generate(source, spec))
    item = db.state(token)["item"]
    h, w = item["grid"]
    with pytest.raises(AnswerError, match=f"a string of {h * w} characters '0' or '1'"):
        db.submit(token, {"item": 0, "mask": "01"})
    reply = db.submit(token, {"item": 0, "mask": "1" * (h * w)})
    assert len(reply["truth"]) == h * w and 0 < reply["feedback"]["iou"] <= 1
    assert len(db.state(token)["context"]["examples"]) == 2
