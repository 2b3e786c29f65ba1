"""Scores of a study: per unit, per participant, per condition, with bootstrap 95 % CIs, beside baselines.

    table = score_study(db, study)          # {"task", "rows": [...]} (JSON-ready)
    table = score_study(db, study, truths={seq: truth})   # the same answers against other truths

Masks: ImRoU_r (r = 0.75) and IoU pooled over a participant's test images
(`recorder.metrics.imrou`, `mask_iou`); baselines on the same items: the unit's best
Network Dissection concept mask, all-empty, and a centred blob of the unit's mean
mask size. Pairs: accuracy over the test trials (catch trials apart), mean
confidence; baselines: centre distance, patch std, chance (0.5). Practice answers
are never scored. CIs: percentile bootstrap over items (1000 resamples, seeded).
"""

from __future__ import annotations

import numpy as np

from recorder.metrics import imrou, mask_iou
from viewer.study.items import unbits

__all__ = ["bootstrap", "score_answers", "score_study"]

RESAMPLES = 1000


def bootstrap(statistic, n: int, seed: int = 0, resamples: int = RESAMPLES) -> tuple[float, float]:
    """Percentile 95 % interval of `statistic(indices)` over resamples of `range(n)` with replacement."""
    if n == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    values = np.array([statistic(rng.integers(0, n, n)) for _ in range(resamples)], dtype=np.float64)
    if np.isnan(values).all():
        return float("nan"), float("nan")
    low, high = np.nanpercentile(values, [2.5, 97.5])
    return float(low), float(high)


def _clean(value: float):
    return None if value is None or np.isnan(value) else round(float(value), 6)


def score_answers(task: str, answers: list[str], truths: list[str], shape=None, confidence=None) -> dict:
    """One row's scores: masks -> imrou, iou (+ CIs); pairs -> accuracy (+ CI), confidence."""
    n = len(answers)
    if task == "masks":
        predicted = np.stack([unbits(a, shape) for a in answers]) if n else np.zeros((0, *shape), bool)
        actual = np.stack([unbits(t, shape) for t in truths]) if n else np.zeros((0, *shape), bool)
        row = {"n": n, "imrou": imrou(predicted, actual) if n else float("nan"),
               "iou": mask_iou(predicted, actual) if n else float("nan")}
        row["imrou_low"], row["imrou_high"] = bootstrap(lambda i: imrou(predicted[i], actual[i]), n)
        row["iou_low"], row["iou_high"] = bootstrap(lambda i: mask_iou(predicted[i], actual[i]), n)
    else:
        correct = np.array([a == t for a, t in zip(answers, truths)], dtype=np.float64)
        row = {"n": n, "accuracy": correct.mean() if n else float("nan")}
        row["accuracy_low"], row["accuracy_high"] = bootstrap(lambda i: correct[i].mean(), n)
        if confidence is not None:
            row["confidence"] = float(np.mean(confidence)) if n else float("nan")
    return {key: (_clean(v) if isinstance(v, float) else v) for key, v in row.items()}


def score_study(db, study: str, truths: dict[int, str] | None = None) -> dict:
    """Every row of the results table (see the module docstring); `truths` replaces the stored truths."""
    spec = db.spec(study)
    items = [it for it in db.items(study) if it["phase"] == "test"]
    truth = {it["seq"]: (truths or {}).get(it["seq"], it["truth"]) for it in items}
    answers = [a for a in db.answers(study) if a["phase"] == "test"]
    rows = []
    for unit in spec.units:
        mine = [it for it in items if it["unit"] == unit and not it["extra"].get("catch")]
        shape = mine[0]["public"]["grid"] if spec.task == "masks" and mine else None
        seqs = {it["seq"] for it in mine}
        for condition in spec.conditions:
            given = [a for a in answers if a["seq"] in seqs and a["condition"] == condition]
            people = sorted({a["participant"] for a in given})
            for who in [*people, "all"]:
                chosen = [a for a in given if who == "all" or a["participant"] == who]
                if not chosen:
                    continue
                row = score_answers(spec.task, [a["answer"] for a in chosen], [truth[a["seq"]] for a in chosen],
                                    shape, [a["confidence"] for a in chosen] if spec.task == "pairs" else None)
                rows.append({"unit": unit, "condition": condition, "who": who, "kind": "participant", **row})
            if spec.task == "pairs":
                catch = [a for a in answers if a["unit"] == unit and a["condition"] == condition and
                         a["extra"].get("catch")]
                if catch:
                    row = score_answers("pairs", [a["answer"] for a in catch], [truth[a["seq"]] for a in catch])
                    rows.append({"unit": unit, "condition": condition, "who": "all", "kind": "catch", **row})
        names = ("concept", "empty", "blob") if spec.task == "masks" else ("centre", "std")
        for name in names:
            row = score_answers(spec.task, [it["extra"]["baselines"][name] for it in mine],
                                [truth[it["seq"]] for it in mine], shape)
            rows.append({"unit": unit, "condition": "-", "who": name, "kind": "baseline", **row})
        if spec.task == "pairs":
            rows.append({"unit": unit, "condition": "-", "who": "chance", "kind": "baseline", "n": len(mine),
                         "accuracy": 0.5, "accuracy_low": 0.5, "accuracy_high": 0.5})
    return {"study": study, "task": spec.task, "layer": spec.layer, "step": spec.step, "rows": rows}
