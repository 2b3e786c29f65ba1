"""Human studies: the mask-prediction game (Harth 2022) and the occlusion-pair quiz (Zimmermann et al. 2021).

    python -m viewer.study create runs/demo/baseline --db studies.sqlite --layer conv3 --units 4,9 \
        --step 1500 --task masks --participants 3
    TUNELINE_STUDIES=studies.sqlite python -m viewer runs/      # the viewer serves the links too

`register(app, registry)` adds the study routes (`viewer.study.api`) to a viewer app
when the environment names a study database in `TUNELINE_STUDIES`; runs named in
create requests are resolved among the registry's runs only. It also installs the
researcher gate (`viewer.study.gate`): every page and callback but the participants'
then needs the researcher's token, and `app.server.config["TUNELINE_STUDY_DB"]` holds
the `StudyDB` (its `researcher_token`).
"""

from __future__ import annotations

import os

__all__ = ["register"]


def register(app, registry, db_path=None):
    """Add the study routes to the Dash `app` (its Flask `app.server`); None when no database is named."""
    path = db_path or os.environ.get("TUNELINE_STUDIES")
    if not path:
        return None
    from viewer.study.api import register as add_routes
    from viewer.study.source import StudySource

    def sources(run_id: str) -> StudySource:
        try:
            run = registry.run(run_id)
        except Exception as exc:  # noqa: BLE001 - an unknown or unreadable run, said in the reply
            raise ValueError(f"run given an invalid value: {run_id!r}: {exc}") from exc
        return StudySource.open(run.path if run.path is not None else run.location)

    def runs() -> list[dict]:
        """The readable runs with their layers of spatial maps and recorded steps, for the studies page."""
        out = []
        for entry in registry.entries():
            try:
                run = registry.run(entry.id)
            except Exception:  # noqa: BLE001 - an unreadable run is not offered
                continue
            layers = [name for name in run.layers if run.layer(name).has("topk_map")]  # maps: conv layers
            if layers:
                out.append({"id": entry.id, "layers": layers, "steps": [int(s) for s in run.steps]})
        return out

    from viewer.study.gate import install

    db = add_routes(app.server, path, sources=sources, runs=runs)
    install(app.server, db.researcher_token)
    app.server.config["TUNELINE_STUDY_DB"] = db
    return db
