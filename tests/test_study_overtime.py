"""viewer.study.overtime.study_curves: the study's own run opened by its stored location, cached until an
answer is stored; a run that lost its weights, or cannot be opened, scores the study's own step and says why."""

import shutil

import pytest

from tests.support.study_run import tiny_run
from viewer.study.answers import StudyDB
from viewer.study.items import generate
from viewer.study.overtime import curves, study_curves
from viewer.study.source import StudySource
from viewer.study.spec import StudySpec


@pytest.fixture()
def study(tmp_path):
    source = StudySource.open(tiny_run(tmp_path / "run"))
    spec = StudySpec(run=str(source.run.location), layer="conv2", units=[2], step=3, task="pairs", n_test=3,
                     n_practice=1, n_references=2, n_catch=0)
    db = StudyDB(tmp_path / "s.sqlite")
    study, (token,) = db.create(spec, generate(source, spec), 1)
    return db, study, token, source


def _answer(db, token, n):
    for _ in range(n):
        state = db.state(token)
        db.submit(token, {"item": state["item"]["item"], "choice": "left", "confidence": 2})


def test_equals_curves_of_the_run_and_follows_new_answers(study):
    db, study_id, token, source = study
    _answer(db, token, 3)  # the practice item and two test items
    first = study_curves(db, study_id)
    assert first == curves(db, study_id, source) and first["steps"] == [0, 3, 6] and first["why"] is None
    assert study_curves(db, study_id) is first  # cached: no answer stored since
    _answer(db, token, 1)
    again = study_curves(db, study_id)
    assert again is not first and again == curves(db, study_id, source)


def test_a_run_without_weights_scores_the_study_step_and_says_why(study, tmp_path):
    db, study_id, token, source = study
    _answer(db, token, 4)
    shutil.rmtree(tmp_path / "run" / "checkpoints")
    curve = study_curves(db, study_id)
    assert curve["steps"] == [3] and "saved no model weights" in curve["why"] and "own step 3" in curve["why"]
    bare = StudySource(source.run, source.probe, model_at=lambda step: None, weight_steps=[])
    assert curve["units"] == curves(db, study_id, bare)["units"]


def test_a_run_that_cannot_be_opened_says_so(study, tmp_path):
    db, study_id, token, _ = study
    _answer(db, token, 4)
    shutil.rmtree(tmp_path / "run")
    curve = study_curves(db, study_id)
    assert curve["steps"] == [3] and "cannot be opened" in curve["why"] and str(tmp_path / "run") in curve["why"]
    assert curve["units"][2]["metric"] == "accuracy" and curve["units"][2]["values"][0] is not None
