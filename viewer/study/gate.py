"""The researcher gate: while participants are served, only their routes are open to all.

    from viewer.study.gate import install, researcher_token_given
    install(app.server, db.researcher_token)     # every other route now needs the token

A request passes when its path is a participant route (`/study/p/...`) or a static
asset (the viewer's `/assets/`, Dash's script bundles, the favicon), or when it
carries the researcher's token: `Authorization: Bearer <token>`, the cookie
`tuneline_researcher`, or `?token=` in the URL. A visit with `?token=` sets the
cookie (HttpOnly, SameSite=Strict), so one visit to `/?token=...` opens the whole
viewer in that browser; the viewer's own page is then redirected to its URL less
the token. Everything else is answered 401 with a plain-text message, so no route
shows a participant a unit's masks, maps or activations.
"""

from __future__ import annotations

import hmac
from urllib.parse import urlencode

import flask

__all__ = ["COOKIE", "install", "researcher_token_given"]

COOKIE = "tuneline_researcher"
OPEN_PREFIXES = ("/study/p/", "/assets/", "/_dash-component-suites/")
OPEN_PATHS = ("/_favicon.ico", "/favicon.ico")


def researcher_token_given(request: flask.Request, token: str) -> str | None:
    """Where the request carries the researcher's `token` ("header", "cookie", "query"), or None."""
    given = [("header", request.headers.get("Authorization", "").removeprefix("Bearer ").strip()),
             ("query", request.args.get("token", "")), ("cookie", request.cookies.get(COOKIE, ""))]
    for where, value in given:
        if value and hmac.compare_digest(value.encode(), token.encode()):
            return where
    return None


def _is_open(path: str) -> bool:
    return path.startswith(OPEN_PREFIXES) or path in OPEN_PATHS


def install(server: flask.Flask, token: str) -> None:
    """Guard every route of `server` but the participant routes and static assets with `token`."""
    if server.config.get("TUNELINE_GATE"):
        return
    server.config["TUNELINE_GATE"] = True

    @server.before_request
    def gate():
        request = flask.request
        if _is_open(request.path):
            return None
        where = researcher_token_given(request, token)
        if where is None:
            return flask.Response(
                "this viewer serves a human study: its pages need the researcher's token. Open "
                "/?token=<token> once in this browser (python -m viewer.study token --db <database> prints it), "
                "or send Authorization: Bearer <token>\n", status=401, mimetype="text/plain",
                headers={"WWW-Authenticate": "Bearer", "Cache-Control": "no-store"})
        if where == "query":
            flask.g.tuneline_set_cookie = True
            if request.method == "GET" and request.path == "/":  # the viewer's page: drop the token from its URL
                rest = [(k, v) for k, v in request.args.items(multi=True) if k != "token"]
                response = flask.redirect("/" + (f"?{urlencode(rest)}" if rest else ""), code=303)
                response.headers["Cache-Control"] = "no-store"
                return response
        return None

    @server.after_request
    def remember(response: flask.Response) -> flask.Response:
        if flask.g.get("tuneline_set_cookie"):
            response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/",
                                max_age=30 * 24 * 3600)
        return response
