"""Command line for studies: create one, print links and progress, serve it, export results.

    python -m viewer.study create runs/demo/baseline --db studies.sqlite --layer conv3 --units 4,9 \
        --step 1500 --task masks --test 60 --practice 5 --participants 3
    python -m viewer.study create runs/demo/baseline --db studies.sqlite --layer conv3 --sample 5 \
        --task pairs --conditions none,natural --participants 10
    python -m viewer.study progress --db studies.sqlite STUDY
    python -m viewer.study results --db studies.sqlite STUDY > results.csv
    python -m viewer.study overtime --db studies.sqlite STUDY > curves.csv   # answers re-scored per checkpoint
    python -m viewer.study serve --db studies.sqlite --port 8050      # study routes only
    python -m viewer.study token --db studies.sqlite                  # the researcher's token

`create` prints one link per participant (under `--base-url`); the viewer
(`python -m viewer runs/`) serves the same links when it uses the same database.
Errors go to stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["main"]


def _units(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--units given an invalid value: {text!r}; expected comma-separated unit indices, "
                         "e.g. 4,9") from None


def create(args) -> str:
    import numpy as np

    from viewer.study.answers import StudyDB
    from viewer.study.items import generate
    from viewer.study.source import StudySource
    from viewer.study.spec import StudySpec

    source = StudySource.open(args.run, builder=args.builder)
    step = args.step if args.step is not None else (source.weight_steps or [None])[-1]
    if step is None:
        raise ValueError(source.why_no_weights)
    common = dict(run=str(args.run), layer=args.layer, step=step, task=args.task, n_practice=args.practice,
                  n_test=args.test, seed=args.seed,
                  conditions=[c for c in (args.conditions or "").split(",") if c])
    if (args.units is None) == (args.sample is None):
        raise ValueError("give either --units 4,9 or --sample N")
    if args.units is not None:
        units = _units(args.units)
    else:
        n_units = source.check_layer(args.layer, [])
        units = []
        for unit in np.random.default_rng(args.seed).permutation(n_units).tolist():
            try:  # a unit that cannot supply the items (too few firing images) is passed over
                generate(source, StudySpec(units=[unit], **common))
            except ValueError:
                continue
            units.append(unit)
            if len(units) == args.sample:
                break
        if len(units) < args.sample:
            raise ValueError(f"only {len(units)} units of layer {args.layer!r} can supply {common['n_test'] or 'the'} "
                             f"test items; --sample {args.sample} asks for more")
    spec = StudySpec(units=units, **common)
    db = StudyDB(args.db)
    study, tokens = db.create(spec, generate(source, spec), args.participants)
    base = args.base_url.rstrip("/")
    lines = [f"study {study}: {spec.task}, layer {spec.layer}, units {', '.join(map(str, units))}, step {step}",
             f"researcher token: {db.researcher_token}",
             f"results: {base}/study/r/{study}?token={db.researcher_token}",
             *[f"participant {i + 1}: {base}/study/p/{token}" for i, token in enumerate(tokens)]]
    return "\n".join(lines)


def overtime(args) -> str:
    """CSV of each unit's pooled score at every checkpoint with saved weights (why not, on stderr)."""
    from viewer.study.answers import StudyDB
    from viewer.study.overtime import study_curves

    curve = study_curves(StudyDB(args.db), args.study, builder=args.builder)
    if curve["why"]:
        print(f"python -m viewer.study overtime: {curve['why']}", file=sys.stderr)
    lines = ["study,unit,metric,step,value"]
    for unit, row in curve["units"].items():
        lines += [f"{args.study},{unit},{row['metric']},{step},{'' if v is None else f'{v:.6g}'}"
                  for step, v in zip(curve["steps"], row["values"])]
    return "\n".join(lines)


def serve(args) -> None:
    if args.runs:
        from viewer.app import create_app

        server = create_app(args.runs, studies=args.db).server
        token = server.config["TUNELINE_STUDY_DB"].researcher_token
        print(f"researcher: http://{args.host}:{args.port}/?token={token}; studies page: "
              f"http://{args.host}:{args.port}/study/", file=sys.stderr, flush=True)
    else:
        import flask

        from viewer.study.api import register

        server = flask.Flask("tuneline-study")
        register(server, args.db)
    from werkzeug.serving import run_simple

    run_simple(args.host, args.port, server, threaded=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m viewer.study", description="Human studies of a run's units.")
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("create", help="create a study and print one link per participant")
    c.add_argument("run", help="local run folder with config.json and checkpoints/")
    c.add_argument("--db", required=True, help="the SQLite database of studies (created if missing)")
    c.add_argument("--layer", required=True)
    c.add_argument("--units", help="comma-separated unit indices")
    c.add_argument("--sample", type=int, help="a seeded random sample of N units that can supply the items")
    c.add_argument("--step", type=int, help="checkpoint step (default: the last with saved weights)")
    c.add_argument("--task", required=True, choices=["masks", "pairs"])
    c.add_argument("--practice", type=int, default=3, help="practice items per unit (default 3)")
    c.add_argument("--test", type=int, help="test items per unit (default: masks 60, pairs 10)")
    c.add_argument("--conditions", help="pairs: none, natural or none,natural (assigned in turn)")
    c.add_argument("--participants", type=int, default=1)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--builder", help="module:function (config dict -> (model, probe)); default: the run's")
    c.add_argument("--base-url", default="http://127.0.0.1:8050", help="where the links point")
    for name, text in (("progress", "answers per participant"), ("results", "per-answer and summary CSV")):
        p = sub.add_parser(name, help=text)
        p.add_argument("study")
        p.add_argument("--db", required=True)
    o = sub.add_parser("overtime", help="CSV: every stored answer re-scored at each checkpoint with saved weights")
    o.add_argument("study")
    o.add_argument("--db", required=True)
    o.add_argument("--builder", help="module:function (config dict -> (model, probe)); default: the run's")
    t = sub.add_parser("token", help="print the researcher's token")
    t.add_argument("--db", required=True)
    s = sub.add_parser("serve", help="serve the study routes (with --runs: the whole viewer)")
    s.add_argument("--db", required=True)
    s.add_argument("--runs", help="serve the viewer of this folder too")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8050)
    args = parser.parse_args(argv)
    from viewer.study.answers import AnswerError, StudyDB

    try:
        if args.command == "create":
            print(create(args))
        elif args.command == "progress":
            print(json.dumps(StudyDB(args.db).progress(args.study), indent=1))
        elif args.command == "results":
            from viewer.study.results import results_csv

            sys.stdout.write(results_csv(StudyDB(args.db), args.study))
        elif args.command == "overtime":
            print(overtime(args))
        elif args.command == "token":
            print(StudyDB(args.db).researcher_token)
        else:
            serve(args)
    except (OSError, ValueError, ImportError) as exc:
        print(f"{parser.prog} {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except AnswerError as exc:
        print(f"{parser.prog} {args.command}: error: {exc.message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
