"""HTTP routes of studies on a Flask server (the Dash app's `app.server`), all under `/study/`.

    from viewer.study.api import register
    register(app.server, "studies.sqlite", sources=lambda run: StudySource.open(run))

Participant routes (the link is the secret): `GET /study/p/<token>` (page),
`GET .../state`, `POST .../answer`, `GET .../image/<name>`. Researcher routes need the
researcher's token (`Authorization: Bearer <token>`, the cookie a visit with
`?token=` sets, or `?token=`): the studies page `GET /study/` (every study, and a
form that creates one), `POST
/study/api/studies` (create; needs `sources`), `GET /study/api/studies`, `GET
/study/api/studies/<id>/progress`, `.../results`, `.../results.csv`, `POST
.../participants`, and the page `GET /study/r/<id>`. Refusals are HTTP 4xx with a
plain-text message.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable

import flask

from viewer.study.answers import AnswerError, StudyDB
from viewer.study.gate import researcher_token_given
from viewer.study.spec import StudySpec

__all__ = ["register"]


def _text(status: int, message: str) -> flask.Response:
    return flask.Response(message + "\n", status=status, mimetype="text/plain")


def _json(value, status: int = 200) -> flask.Response:
    response = flask.Response(json.dumps(value), status=status, mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"
    return response


def register(server: flask.Flask, db_path, sources: Callable | None = None, name: str = "tuneline_study",
             runs: Callable[[], list[dict]] | None = None) -> StudyDB:
    """Add the study routes to `server`; returns the `StudyDB` (its `researcher_token` guards researcher routes).

    `sources(run) -> StudySource` resolves a run named in a create request (None: create from the CLI only);
    `runs()` lists the runs a study may draw from ({id, layers, steps}) for the studies page's form."""
    db = StudyDB(db_path)
    bp = flask.Blueprint(name, __name__, url_prefix="/study")

    def researcher() -> flask.Response | None:
        if researcher_token_given(flask.request, db.researcher_token) is None:
            return _text(403, "this page needs the researcher's token (Authorization: Bearer <token> or ?token=); "
                              "python -m viewer.study token --db <database> prints it")
        return None

    @bp.errorhandler(AnswerError)
    def refused(exc: AnswerError):
        return _text(exc.status, exc.message)

    @bp.get("/p/<token>")
    def page(token):
        from viewer.study.participant import page_html

        db.state(token)  # 404 for an unknown link
        response = flask.Response(page_html(token), mimetype="text/html")
        response.headers["Cache-Control"] = "no-store"
        return response

    @bp.get("/p/<token>/state")
    def state(token):
        return _json(db.state(token))

    @bp.post("/p/<token>/answer")
    def answer(token):
        body = flask.request.get_json(silent=True, force=True)
        if body is None:
            return _text(400, "an answer must be a JSON body, e.g. {\"item\": 0, \"choice\": \"left\", \"confidence\": 2}")
        return _json(db.submit(token, body))

    @bp.get("/p/<token>/image/<name>")
    def image(token, name):
        response = flask.Response(db.image(token, name), mimetype="image/png")
        response.headers["Cache-Control"] = "private, max-age=3600"
        return response

    @bp.get("/")
    def home():
        if (refused := researcher()) is not None:
            return refused
        from viewer.study.home import home_html

        return flask.Response(home_html(db, runs() if runs else [], creates=sources is not None),
                              mimetype="text/html")

    @bp.post("/api/studies")
    def create():
        if (refused := researcher()) is not None:
            return refused
        if sources is None:
            return _text(400, "this server creates no studies; use python -m viewer.study create")
        body = flask.request.get_json(silent=True, force=True)
        if not isinstance(body, dict):
            return _text(400, "the body must be a JSON study spec, e.g. {\"run\": ..., \"layer\": ..., \"units\": [..], "
                              "\"step\": .., \"task\": \"masks\", \"participants\": 3}")
        body = dict(body)
        participants = body.pop("participants", 1)
        try:
            spec = StudySpec.from_dict(body)
            source = sources(spec.run)
            spec = dataclasses.replace(spec, run=str(source.run.location))
            from viewer.study.items import generate

            study, tokens = db.create(spec, generate(source, spec), participants)
        except (ValueError, KeyError, OSError) as exc:
            return _text(400, str(exc))
        root = flask.request.host_url.rstrip("/")
        return _json({"study": study, "links": [f"{root}/study/p/{t}" for t in tokens]}, 201)

    @bp.get("/api/studies")
    def studies():
        if (refused := researcher()) is not None:
            return refused
        return _json([db.progress(study) for study in db.studies()])

    @bp.get("/api/studies/<study>/progress")
    def progress(study):
        refused = researcher()
        return refused if refused is not None else _json(db.progress(study))

    @bp.post("/api/studies/<study>/participants")
    def participants(study):
        if (refused := researcher()) is not None:
            return refused
        body = flask.request.get_json(silent=True, force=True) or {}
        try:
            tokens = db.add_participants(study, body.get("n", 1) if isinstance(body, dict) else body)
        except ValueError as exc:
            return _text(400, str(exc))
        root = flask.request.host_url.rstrip("/")
        return _json({"study": study, "links": [f"{root}/study/p/{t}" for t in tokens]}, 201)

    @bp.get("/api/studies/<study>/results")
    def results(study):
        refused = researcher()
        from viewer.study.scoring import score_study

        return refused if refused is not None else _json(score_study(db, study))

    @bp.get("/api/studies/<study>/results.csv")
    def results_csv(study):
        if (refused := researcher()) is not None:
            return refused
        from viewer.study.results import results_csv as to_csv

        response = flask.Response(to_csv(db, study), mimetype="text/csv")
        response.headers["Content-Disposition"] = f"attachment; filename=study_{study}.csv"
        return response

    @bp.get("/api/studies/<study>/overtime")
    def overtime(study):
        if (refused := researcher()) is not None:
            return refused
        from viewer.study.overtime import study_curves

        return _json(study_curves(db, study))

    @bp.get("/r/<study>")
    def results_page(study):
        if (refused := researcher()) is not None:
            return refused
        from viewer.study.overtime import study_curves
        from viewer.study.results import results_html

        return flask.Response(results_html(db, study, study_curves(db, study)), mimetype="text/html")

    server.register_blueprint(bp)
    return db
