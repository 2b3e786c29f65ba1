"""The Dash app factory: `create_app(root)` serves the runs found below `root`.

    from viewer.app import create_app
    app = create_app("runs")                     # or create_app("s3://bucket/sweep")
    app.run(host="127.0.0.1", port=8050)

Nothing is read at import time; `create_app` builds the registry (which searches
the folder lazily), the layout and the callbacks. No module imports the app
object: `viewer.callbacks.register(app, registry)` registers the callbacks on the
app it is given (`app.callback`), so several apps live side by side in one process.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import dash
from dash.exceptions import DependencyException

from viewer import callbacks, study
from viewer.data import Registry, ViewError
from viewer.layout import app_shell

__all__ = ["create_app"]

ASSETS = Path(__file__).resolve().parent / "assets"


def _warm(registry: Registry) -> None:
    """Compute the first run's default map in the background, so the first page paints fast."""
    try:
        entries = [e for e in registry.entries() if e.error is None]
        if entries:
            run = registry.run(entries[0].id)
            if run.layers and run.n_committed:
                registry.payload(entries[0].id, run.layers[0], "true", "si")
                registry.hover(entries[0].id, run.layers[0])
                registry.series(entries[0].id, "true", "si")
                registry.detectors(entries[0].id, run.layers[0])
    except (ViewError, OSError, KeyError, ValueError):
        pass  # the page will say what is wrong


def _not_served(exc: DependencyException):
    """A request for a script path Dash did not register (e.g. '../../etc/passwd'): a 404, not a
    500 with a traceback in the log (Dash checks the path before reading any file)."""
    return "Not found: the viewer serves only the scripts of its own page.", 404


def create_app(root: str | os.PathLike, *, warm: bool = True, storage_options: dict | None = None,
               studies: str | os.PathLike | None = None) -> dash.Dash:
    """A Dash app serving the runs below folder or URL `root` (which may be empty or not exist yet).

    `storage_options` go to the run store for a URL root (endpoint, credentials, ...); `studies`
    names the study database (default: the environment's TUNELINE_STUDIES, if any)."""
    registry = Registry(root, storage_options=storage_options)
    app = dash.Dash(
        __name__, title="tuneline", assets_folder=str(ASSETS), suppress_callback_exceptions=True,
        update_title=None, serve_locally=True)
    studies = study.register(app, registry, db_path=studies)  # /study/... routes when a database is named
    app.layout = app_shell(registry.root, studies=studies is not None)
    app.server.config["TUNELINE_REGISTRY"] = registry
    app.server.register_error_handler(DependencyException, _not_served)
    callbacks.register(app, registry)
    if warm:
        threading.Thread(target=_warm, args=(registry,), name="tuneline-warm", daemon=True).start()
    return app
