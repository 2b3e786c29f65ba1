"""Scores with bootstrap CIs beside baselines, and answers re-scored at every saved checkpoint."""

import numpy as np
import pytest

from recorder.metrics import imrou
from tests.support.study_run import tiny_run
from viewer.study.answers import StudyDB
from viewer.study.items import generate, unbits
from viewer.study.overtime import curves, truths_at
from viewer.study.results import results_csv, results_html
from viewer.study.scoring import bootstrap, score_answers, score_study
from viewer.study.source import StudySource
from viewer.study.spec import StudySpec


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return StudySource.open(tiny_run(tmp_path_factory.mktemp("scoring") / "run"))


def _answer_all(db, token, answer):
    while not (state := db.state(token))["done"]:
        db.submit(token, {"item": state["item"]["item"], **answer(state["item"])})


@pytest.fixture(scope="module")
def masks(source, tmp_path_factory):
    spec = StudySpec(run=str(source.run.location), layer="conv2", units=[1, 4], step=3, task="masks", n_test=8,
                     n_practice=1, n_examples=2)
    db = StudyDB(tmp_path_factory.mktemp("m") / "s.sqlite")
    study, (a, b) = db.create(spec, generate(source, spec), 2)
    h, w = db.state(a)["item"]["grid"]
    rng = np.random.default_rng(0)
    _answer_all(db, a, lambda item: {"mask": "".join(rng.choice(["0", "1"], h * w))})
    _answer_all(db, b, lambda item: {"mask": "1" * (h * w // 2) + "0" * (h * w - h * w // 2)})
    return db, study


@pytest.fixture(scope="module")
def pairs(source, tmp_path_factory):
    spec = StudySpec(run=str(source.run.location), layer="conv2", units=[2], step=3, task="pairs", n_test=5,
                     n_practice=1, n_references=2, n_catch=1, conditions=["none", "natural"])
    db = StudyDB(tmp_path_factory.mktemp("p") / "s.sqlite")
    study, tokens = db.create(spec, generate(source, spec), 3)
    for n, token in enumerate(tokens):
        _answer_all(db, token, lambda item, n=n: {"choice": ["left", "right"][(item["item"] + n) % 2],
                                                  "confidence": 1 + n})
    return db, study


def test_bootstrap_interval():
    values = np.arange(10.0)
    low, high = bootstrap(lambda i: values[i].mean(), 10)
    assert low < values.mean() < high and (low, high) == bootstrap(lambda i: values[i].mean(), 10)
    assert bootstrap(lambda i: 1.0, 5) == (1.0, 1.0)


def test_score_answers_against_a_plain_computation():
    rng = np.random.default_rng(1)
    truths = ["".join(rng.choice(["0", "1"], 9)) for _ in range(12)]
    answers = ["".join(rng.choice(["0", "1"], 9)) for _ in range(12)]
    row = score_answers("masks", answers, truths, (3, 3))
    stack = lambda xs: np.stack([np.array([c == "1" for c in x]).reshape(3, 3) for x in xs])  # noqa: E731
    assert row["imrou"] == pytest.approx(imrou(stack(answers), stack(truths)), abs=1e-6)
    inter = sum(int(a == b == "1") for x, y in zip(answers, truths) for a, b in zip(x, y))
    union = sum(int("1" in (a, b)) for x, y in zip(answers, truths) for a, b in zip(x, y))
    assert row["iou"] == pytest.approx(inter / union, abs=1e-6)
    assert row["imrou_low"] <= row["imrou"] <= row["imrou_high"]
    row = score_answers("pairs", ["left", "right", "left", "left"], ["left", "left", "left", "right"],
                        confidence=[1, 2, 3, 3])
    assert row["accuracy"] == 0.5 and row["confidence"] == 2.25 and row["n"] == 4


def test_masks_table(masks):
    db, study = masks
    table = score_study(db, study)
    items = {it["seq"]: it for it in db.items(study)}
    answers = [a for a in db.answers(study) if a["phase"] == "test"]
    for unit in (1, 4):
        mine = [a for a in answers if a["unit"] == unit]
        shape = mine[0]["public"]["grid"]
        pooled = imrou(np.stack([unbits(a["answer"], shape) for a in mine]),
                       np.stack([unbits(a["truth"], shape) for a in mine]))
        row = next(r for r in table["rows"] if r["unit"] == unit and r["who"] == "all")
        assert row["imrou"] == pytest.approx(pooled, abs=1e-6) and row["n"] == 16
        tests = [it for it in items.values() if it["unit"] == unit and it["phase"] == "test"]
        for name in ("concept", "empty", "blob"):
            expected = imrou(np.stack([unbits(it["extra"]["baselines"][name], shape) for it in tests]),
                             np.stack([unbits(it["truth"], shape) for it in tests]))
            row = next(r for r in table["rows"] if r["unit"] == unit and r["who"] == name)
            assert row["kind"] == "baseline" and row["imrou"] == pytest.approx(expected, abs=1e-6)
        assert {r["who"] for r in table["rows"] if r["unit"] == unit} == {0, 1, "all", "concept", "empty", "blob"}
    text = results_csv(db, study)
    assert text.splitlines()[0].startswith("study,task,layer,step,unit,condition,kind,who,n,imrou")
    assert len(text.splitlines()) == 1 + len(table["rows"])


def test_pairs_table(pairs):
    db, study = pairs
    table = score_study(db, study)
    rows = {(r["condition"], r["kind"], r["who"]): r for r in table["rows"]}
    answers = [a for a in db.answers(study) if a["phase"] == "test" and not a["extra"]["catch"]]
    for condition, people in (("none", [0, 2]), ("natural", [1])):
        for who in people:
            mine = [a for a in answers if a["participant"] == who]
            assert rows[(condition, "participant", who)]["accuracy"] == pytest.approx(
                np.mean([a["answer"] == a["truth"] for a in mine]), abs=1e-6)
            assert rows[(condition, "participant", who)]["confidence"] == 1 + who
    assert ("none", "catch", "all") in rows and rows[("-", "baseline", "chance")]["accuracy"] == 0.5
    tests = [it for it in db.items(study) if it["phase"] == "test" and not it["extra"]["catch"]]
    assert rows[("-", "baseline", "centre")]["accuracy"] == pytest.approx(
        np.mean([it["extra"]["baselines"]["centre"] == it["truth"] for it in tests]), abs=1e-6)


@pytest.mark.parametrize("fixture", ["masks", "pairs"])
def test_over_training(request, source, fixture):
    db, study = request.getfixturevalue(fixture)
    spec = db.spec(study)
    stored = {it["seq"]: it["truth"] for it in db.items(study) if it["phase"] == "test"}
    assert truths_at(db, study, source, spec.step) == stored  # the study's own step gives the stored truths
    curve = curves(db, study, source)
    assert curve["steps"] == [0, 3, 6] and curve["why"] is None
    table = score_study(db, study)
    for unit in spec.units:
        at_own = curve["units"][unit]["values"][curve["steps"].index(spec.step)]
        pooled = [r for r in table["rows"] if r["unit"] == unit and r["who"] == "all" and r["kind"] == "participant"]
        if len(pooled) == 1:
            assert at_own == pooled[0][curve["units"][unit]["metric"]]
        at_zero = score_study(db, study, truths=truths_at(db, study, source, 0))
        zero = [r for r in at_zero["rows"] if r["unit"] == unit and r["who"] == "all" and r["kind"] == "participant"]
        if len(zero) == 1:
            assert curve["units"][unit]["values"][0] == zero[0][curve["units"][unit]["metric"]]
    page = results_html(db, study, curve)
    assert "Over training" in page and page.count("<svg") == len(spec.units)


def test_a_run_without_weights_scores_its_own_step_only(source, masks):
    db, study = masks
    bare = StudySource(source.run, source.probe, model_at=lambda step: None, weight_steps=[],
                       why_no_weights="the run saved no model weights")
    curve = curves(db, study, bare)
    assert curve["steps"] == [3] and "saved no model weights" in curve["why"] and "own step 3" in curve["why"]
    table = score_study(db, study)
    for unit in (1, 4):
        row = next(r for r in table["rows"] if r["unit"] == unit and r["who"] == "all")
        assert curve["units"][unit]["values"] == [row["imrou"]]
    assert "saved no model weights" in results_html(db, study, curve)
