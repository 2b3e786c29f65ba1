"""Command line: `python -m recorder info RUN` and `python -m recorder export RUN OUT.h5`.

    $ python -m recorder info runs/demo/baseline
    $ python -m recorder info s3://bucket/runs/baseline     # any fsspec URL
    $ python -m recorder export runs/demo/baseline baseline.h5
    $ python -m recorder occlude runs/demo/baseline --layers conv3,conv4 --every 5
    $ python -m recorder occlude runs/demo/baseline --layers conv3 --units conv3:0-15

`occlude` adds occlusion maps and receptive fields to a finished local run from its
checkpoints (see `recorder.occlusion.after`: the model and probe are rebuilt by the
builder the run's config names, or `--builder module:function`).

RUN is a run folder or URL; a URL's endpoint and credentials come from the
environment (e.g. AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID). A path that is missing or
holds no run, or a URL that cannot be opened, is reported on stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

import numpy as np

from recorder import metrics
from recorder.store import Run


def _last_mean_si(layer) -> str:
    if not layer.has("sum_true") or not layer.has("count_true") or layer.run.n_committed == 0:
        return "-"
    mu = metrics.class_means(layer.row("sum_true", -1), layer.row("count_true", -1))
    floor = layer.row("response_min", -1) if layer.has("response_min") else None
    si = metrics.si(mu, floor, signed=layer.signed and floor is not None)
    return "-" if np.isnan(si).all() else f"{np.nanmean(si):.3f}"


def _names(names: list[str], most: int = 20) -> str:
    if not names:
        return "-"
    shown = ", ".join(names[:most])
    return shown if len(names) <= most else f"{shown}, ... (+{len(names) - most} more)"


def info_text(run: Run) -> str:
    """A human summary of a run: what it holds and how far it got."""
    n = run.n_committed
    steps = run.steps
    lines = [
        f"run       {run.name}",
        f"path      {run.location}",
        f"schema    {run.schema}",
        f"created   {run.created or '-'}",
        f"rows      {n} committed" + (f", steps {steps[0]} .. {steps[-1]}" if n else ""),
        f"classes   {len(run.classes)}: {_names(run.classes)}",
    ]
    per_category = Counter(c.category for c in run.concepts)
    lines.append(f"concepts  {len(run.concepts)}" + (
        ": " + ", ".join(f"{cat} {k}" for cat, k in sorted(per_category.items())) if per_category else ""))
    probe = run.probe
    lines.append(f"probe     {probe.get('source')}, {probe.get('n_images')} images, "
                 f"fingerprint {probe.get('fingerprint')}, thumbnails {'yes' if run.thumbs is not None else 'no'}")
    last = {name: run.scalar(name) for name in run.scalar_names}
    last = {name: (steps[-1], values[-1]) for name, (steps, values) in last.items() if len(steps)}
    lines.append("metrics   " + (", ".join(f"{name} = {value:.4g} @ {step}" for name, (step, value) in last.items())
                                 or "-") + ("  (latest)" if last else ""))
    lines.append(f"layers    {len(run.layers)}  (top-k {run.topk})")
    for name in run.layers:
        layer = run.layer(name)
        rule = "signed" if layer.signed else "Morcos"
        lines.append(f"  {name}: {layer.units} units, mean SI at the last row {_last_mean_si(layer)} ({rule} rule)")
        lines.append(f"    arrays: {', '.join(layer.arrays) or '-'}")
    return "\n".join(lines)


def sweep_text(root: str, runs: list) -> str:
    """A table of the runs found below `root` (a sweep folder or URL): rows and steps."""
    lines = [f"{len(runs)} run{'s' if len(runs) != 1 else ''} below {root}", f"  {'run':<32} {'rows':>5}  steps"]
    for location in runs:
        run = Run.open(location)
        steps = run.steps
        span = f"{steps[0]} .. {steps[-1]}" if len(steps) else "-"
        rel = str(location)[len(str(root)):].lstrip("/\\") or run.name
        lines.append(f"  {rel:<32} {run.n_committed:>5}  {span}")
    return "\n".join(lines)


def _info(where: str) -> str:
    """`info_text` of the run at `where`; for a folder or URL that holds runs below it, `sweep_text`."""
    from recorder.store import NotARunError, RunStore

    try:
        return info_text(Run.open(where))
    except (NotARunError, FileNotFoundError) as exc:
        try:
            runs = RunStore.find(where)
        except (OSError, ValueError):
            runs = []
        if not runs:
            raise exc from None
        return sweep_text(where, runs)


def _occlude_parser(sub) -> None:
    occlude = sub.add_parser("occlude", help="add occlusion maps and receptive fields from a run's checkpoints")
    occlude.add_argument("run", help="local run folder with config.json and checkpoints/step_<N>.pt")
    occlude.add_argument("--layers", help="comma-separated conv layers (default: every recorded conv layer)")
    occlude.add_argument("--every", type=int, default=1, help="every N-th row, counted in rows (default 1)")
    occlude.add_argument("--patch", type=int, help="occluder square in input pixels (default: the layer's, else 8)")
    occlude.add_argument("--stride", type=int, help="occluder stride in input pixels (default: the layer's, else 4)")
    occlude.add_argument("--fill", help="zero, mean or noise (default: the layer's, else mean)")
    occlude.add_argument("--measure", help="mean, max or peak (default: the layer's, else peak)")
    occlude.add_argument("--units", action="append", metavar="LAYER:UNITS",
                         help="only these units of a layer, e.g. conv3:0-15,40 (repeat for more layers; "
                         "default: every unit)")
    occlude.add_argument("--builder", help="module:function (config dict -> (model, probe)); default: the "
                         "run config's 'builder'")
    occlude.add_argument("--device", default="cpu", help="torch device (default cpu)")


def _layer_units(spec: str) -> tuple[str, list[int]]:
    """Parse LAYER:UNITS, e.g. `conv3:0-3,40` -> ("conv3", [0, 1, 2, 3, 40]) (ranges inclusive)."""
    layer, sep, listed = spec.rpartition(":")
    try:
        if not sep or not layer or not listed:
            raise ValueError
        units = []
        for part in listed.split(","):
            first, dash, last = part.strip().partition("-")
            units += list(range(int(first), int(last) + 1)) if dash else [int(first)]
        if not units or min(units) < 0:
            raise ValueError
    except ValueError:
        raise ValueError(f"--units given an invalid value: {spec!r}; expected LAYER:UNITS with unit indices "
                         "and inclusive ranges, e.g. conv3:0-15,40") from None
    return layer, sorted(set(units))


def _occlude(args) -> None:
    from recorder.occlusion.after import occlude_run  # imports torch

    layers = [name.strip() for name in args.layers.split(",") if name.strip()] if args.layers else None
    units = dict(_layer_units(spec) for spec in args.units) if args.units else None
    done = occlude_run(args.run, layers=layers, every=args.every, patch=args.patch, stride=args.stride,
                       fill=args.fill, measure=args.measure, units=units, builder=args.builder,
                       device=args.device, log=lambda line: print(line, flush=True))
    print(f"occluded {len(done)} checkpoint(s)" if done else "nothing to occlude: every chosen row with a "
          "checkpoint has occlusion already")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recorder", description="Inspect and export tuneline runs.")
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="print a summary of a run, or list the runs below a sweep folder")
    info.add_argument("run", help="run folder or URL (or its record.zarr), or a folder/URL holding runs")
    export = sub.add_parser("export", help="write every committed array of a run to HDF5")
    export.add_argument("run", help="run folder or URL (or its record.zarr)")
    export.add_argument("out", help="the HDF5 file to write, e.g. run.h5")
    export.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    _occlude_parser(sub)
    args = parser.parse_args(argv)
    try:
        if args.command == "info":
            print(_info(args.run))
        elif args.command == "occlude":
            _occlude(args)
        else:
            from pathlib import Path

            from recorder.store.export import export_hdf5

            if Path(args.out).exists() and not args.force:
                raise FileExistsError(f"'{args.out}' exists; pass --force to overwrite it")
            print(export_hdf5(args.run, args.out))
    except (OSError, ValueError, ImportError) as exc:  # missing path, not a run, bad URL, unwritable out
        print(f"{parser.prog} {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
