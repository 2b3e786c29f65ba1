"""`python -m training report`: markdown tables of a sweep's runs, and the checks the demo should show.

    python -m training report runs/demo        # prints the report and writes runs/demo/report.md

Per run (one folder with `record.zarr` under the sweep folder): the final held-out
accuracy, the mean class selectivity index (SI, by true label on the probe) of
every recorded layer at the last row, and the unique detectors per concept
category (Network Dissection, IoU > 0.04) of the last conv layer at step 0 and at
the last row; for occluded layers, the empirical receptive field size (`rf_size`,
median and quartiles over units) at the first and the last occluded step beside the
theoretical one (Zhou et al. 2015: in trained CNNs the empirical RF is far smaller). Then the expected findings, each computed from those numbers and
marked as holding or not, with the numbers: nothing is tuned to make them hold.
"""

from __future__ import annotations

import argparse
import json
import math
import warnings
from pathlib import Path

import numpy as np

from recorder import RunStore

__all__ = ["checks", "report_markdown", "summarize", "write_report", "main"]


def summarize(path: str | Path) -> dict:
    """Final accuracy, per-layer mean SI, and unique detectors at the first and last rows of one run."""
    run = RunStore.open(path)
    metrics = run.metrics
    accuracy = metrics.get("heldout_accuracy", np.array([math.nan]))
    si = {}
    for name in run.layers:
        layer = run.layer(name)
        with warnings.catch_warnings():  # all-NaN (e.g. a diverged run): NaN, no warning
            warnings.simplefilter("ignore", RuntimeWarning)
            si[name] = float(np.nanmean(layer.selectivity("si")[-1])) if layer.has("sum_true") else math.nan
    convs = [name for name in run.layers if run.layer(name).has("threshold")]  # conv maps were dissected
    dissected = [name for name in convs if run.layer(name).has("iou")]
    last_conv = dissected[-1] if dissected else None
    unique_first = unique_last = None
    if last_conv:
        unique = run.layer(last_conv).unique_detectors()
        unique_first = {k: int(v[0]) for k, v in unique.items()}
        unique_last = {k: int(v[-1]) for k, v in unique.items()}
    conv_si = [si[name] for name in convs if not math.isnan(si[name])]
    return {"rf": receptive_fields(run), **{
        "name": Path(path).name, "steps": [int(run.steps[0]), int(run.steps[-1])],
        "heldout_accuracy": float(accuracy[-1]), "si": si, "conv_layers": convs,
        "mean_conv_si": float(np.mean(conv_si)) if conv_si else math.nan,
        "last_conv": last_conv, "unique_first": unique_first, "unique_last": unique_last,
    }}


def receptive_fields(run) -> dict[str, dict]:
    """Per occluded layer: the theoretical RF size and the empirical `rf_size` (median, quartiles
    over units, input pixels) at the first and last steps with occlusion."""
    out = {}
    for name in run.layers:
        layer = run.layer(name)
        try:
            size = layer.rf_size  # [T, K], recorded or added afterwards
        except KeyError:
            continue
        rows = np.flatnonzero(np.isfinite(size).any(axis=1))
        theory = layer.theoretical_rf
        if not len(rows) or theory is None:
            continue
        thumbs = run.thumbs  # probe thumbnails: the image size when below the 128 px thumbnail limit
        image = thumbs.shape[1:3] if thumbs is not None and max(thumbs.shape[1:3]) < 128 else None
        entry = {"theoretical": float(np.sqrt(np.prod(theory["size"]))), "image": image}
        for key, t in (("first", rows[0]), ("last", rows[-1])):
            values = size[t][np.isfinite(size[t])]
            q1, median, q3 = np.percentile(values, [25, 50, 75])
            entry[key] = {"step": int(run.steps[t]), "median": float(median), "q1": float(q1), "q3": float(q3)}
        out[name] = entry
    return out


def _runs(folder: Path) -> list[Path]:
    """Run folders under `folder`, in the sweep's order when it wrote sweep.json."""
    found = sorted(p for p in folder.iterdir() if (p / "record.zarr").is_dir())
    order = []
    try:
        order = json.loads((folder / "sweep.json").read_text())["settings"]
    except (OSError, ValueError, KeyError):
        pass
    rank = {name: i for i, name in enumerate(order)}
    return sorted(found, key=lambda p: (rank.get(p.name, len(rank)), p.name))


def _num(x: float, digits: int = 3) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join([*lines, *("| " + " | ".join(row) + " |" for row in rows)])


def checks(summaries: dict[str, dict]) -> list[tuple[str, bool | None, str]]:
    """The demo's expected findings: (statement, holds (None: not measurable), the numbers)."""
    out = []
    base = summaries.get("baseline")
    if base is None:
        return [("a run named 'baseline' exists", False, f"runs: {sorted(summaries)}")]
    acc = base["heldout_accuracy"]
    out.append(("baseline held-out accuracy >= 90 %", acc >= 0.9, f"{100 * acc:.1f} %"))
    convs = base["conv_layers"]
    if len(convs) >= 2:
        first, deep = base["si"][convs[0]], base["si"][convs[-1]]
        out.append((f"baseline mean SI of the deepest conv layer ({convs[-1]}) > the first ({convs[0]})",
                    deep > first, f"{deep:.3f} vs {first:.3f}"))
    last = base["last_conv"]
    if last:
        a, b = sum(base["unique_first"].values()), sum(base["unique_last"].values())
        out.append((f"baseline unique detectors in {last}: end > step 0", b > a,
                    f"{b} at step {base['steps'][1]} vs {a} at step {base['steps'][0]}"))
    rf = base.get("rf", {})
    if rf:
        deep = list(rf)[-1]
        end, theory = rf[deep]["last"], rf[deep]["theoretical"]
        out.append((f"baseline empirical RF of {deep} smaller than its theoretical RF (Zhou et al. 2015)",
                    end["median"] < theory, f"median rf_size {end['median']:.1f} px at step {end['step']} vs "
                    f"theoretical {theory:.0f} px"))
    rot = summaries.get("rotated")
    if rot and last and rot["unique_last"] is not None:
        a, b = sum(base["unique_last"].values()), sum(rot["unique_last"].values())
        same = abs(rot["heldout_accuracy"] - acc) < 0.005
        out.append((f"rotation control: fewer unique detectors in {last} at equal accuracy", b < a and same,
                    f"{b} vs {a} unique detectors; accuracy {100 * rot['heldout_accuracy']:.1f} % vs "
                    f"{100 * acc:.1f} %"))
    for name, sign, word in (("si-neg", -1, "lowers"), ("si-pos", 1, "raises")):
        run = summaries.get(name)
        if run:
            a, b = base["mean_conv_si"], run["mean_conv_si"]
            out.append((f"{name}: the SI regularizer {word} mean conv-layer SI vs baseline", sign * (b - a) > 0,
                        f"{b:.3f} vs {a:.3f} (accuracy {100 * run['heldout_accuracy']:.1f} %)"))
    return out


def report_markdown(folder: str | Path) -> str:
    """The report of the runs under `folder` as markdown."""
    folder = Path(folder)
    summaries = {p.name: summarize(p) for p in _runs(folder)}
    if not summaries:
        return f"No runs under {folder}.\n"
    layers = list(dict.fromkeys(name for s in summaries.values() for name in s["si"]))
    rows = [[s["name"], f"{100 * s['heldout_accuracy']:.1f} %" if not math.isnan(s["heldout_accuracy"]) else "–",
             str(s["steps"][1]), *(_num(s["si"].get(name)) for name in layers), _num(s["mean_conv_si"])]
            for s in summaries.values()]
    parts = [f"# Sweep report: {folder.name}", "",
             "Held-out accuracy and mean class selectivity index (SI, probe, by true label) of each recorded "
             "layer at the last recorded step.", "",
             _table(["run", "held-out acc", "step", *(f"SI {n}" for n in layers), "SI conv mean"], rows)]
    categories = list(dict.fromkeys(k for s in summaries.values() for k in (s["unique_last"] or {})))
    detector_rows = []
    for s in summaries.values():
        if s["last_conv"] is None:
            detector_rows.append([s["name"], "–", *("–" for _ in categories), "–"])
            continue
        first, last = s["unique_first"], s["unique_last"]
        detector_rows.append([s["name"], s["last_conv"], *(f"{first[c]} → {last[c]}" for c in categories),
                              f"{sum(first.values())} → {sum(last.values())}"])
    if categories:
        parts += ["", "Unique detectors (Network Dissection, IoU > 0.04) of the last conv layer, "
                  "step 0 → last step.", "",
                  _table(["run", "layer", *categories, "total"], detector_rows)]
    rf_rows = [[s["name"], name, f"{e['theoretical']:.0f}" + (f" (image {e['image'][0]})" if e["image"] else ""),
                *(f"{e[k]['median']:.1f} [{e[k]['q1']:.1f}, {e[k]['q3']:.1f}] @ {e[k]['step']}" for k in ("first", "last")),
                f"{e['last']['median'] / e['theoretical']:.2f}"]
               for s in summaries.values() for name, e in s.get("rf", {}).items()]
    if rf_rows:
        parts += ["", "Receptive fields of the occluded layers (input pixels): theoretical size vs the empirical "
                  "rf_size (sqrt of the area at >= half the maximum of the unit's mean re-centred discrepancy "
                  "map), median [quartiles] over units at the first and last occluded step.", "",
                  _table(["run", "layer", "theoretical", "empirical first", "empirical last", "last / theoretical"],
                         rf_rows)]
    found = checks(summaries)
    if found:
        mark = {True: "holds", False: "does NOT hold", None: "n/a"}
        parts += ["", "Expected findings:", ""]
        parts += [f"- {statement}: **{mark[ok]}** ({numbers})" for statement, ok, numbers in found]
    return "\n".join(parts) + "\n"


def write_report(folder: str | Path) -> str:
    """Write `<folder>/report.md`; returns its text."""
    text = report_markdown(folder)
    (Path(folder) / "report.md").write_text(text)
    return text


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training report", description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="a sweep folder, e.g. runs/demo")
    parser.add_argument("--no-write", action="store_true", help="print only; do not write report.md")
    args = parser.parse_args(argv)
    folder = Path(args.folder)
    if not folder.is_dir():
        parser.error(f"{folder} is not a folder")
    print(report_markdown(folder) if args.no_write else write_report(folder), end="")


if __name__ == "__main__":
    main()
