"""Every stored answer re-scored against the unit at every checkpoint whose weights were saved.

    curve = curves(db, study, source)   # {"steps": [...], "why": str | None, "units": {unit: {"metric", "values"}}}
    curve = study_curves(db, study)     # the same for the study's own run, cached until an answer is stored

Masks: the truth at step s is the unit's map on each test image at s thresholded at
the run's stored `T_k` of s. Pairs: the truth at s is the side whose shown (occluded)
image gives the unit the higher spatial-mean activation at s. Scores pool every
participant's test answers (`viewer.study.scoring.score_answers`). A run without saved
weights gives the study's own step only (stored truths), and says why.
"""

from __future__ import annotations

import threading

import torch

from viewer.study.items import bits, unit_maps
from viewer.study.scoring import score_answers

__all__ = ["curves", "study_curves", "truths_at"]

_SOURCES: dict = {}  # run location -> StudySource (its model rebuilt once per process)
_CURVES: dict = {}  # (database, study, answers stored) -> curves
_LOCK = threading.Lock()


def _pair_images(probe, item: dict) -> torch.Tensor:
    """The (left, right) images of a stored pair item, rebuilt in model-input space: (2, C, H, W)."""
    from recorder.occlusion.grid import OcclusionGrid

    extra = item["extra"]
    image = probe.batch(torch.as_tensor([extra["image"]]))[0]
    if extra["catch"]:
        blank = image.mean((1, 2), keepdim=True).expand_as(image).clone()
        return torch.stack([image, blank] if extra["image_left"] else [blank, image])
    grid = OcclusionGrid.of(image.shape[1], image.shape[2], extra["patch"], extra["stride"])
    gw = grid.shape[1]
    high, low = extra["high"], extra["low"]
    cells = torch.tensor([high[0] * gw + high[1], low[0] * gw + low[1]])
    occluded = grid.occlude(image[None], torch.zeros(2, dtype=torch.int64), cells, "mean", None)  # (2, C, H, W)
    return occluded if extra["high_left"] else occluded.flip(0)


def truths_at(db, study: str, source, step: int) -> dict[int, str] | None:
    """Each test item's truth for the unit at `step` (None when the weights of `step` were not saved)."""
    spec = db.spec(study)
    model = source.model_at(step)
    if model is None:
        return None
    items = [it for it in db.items(study) if it["phase"] == "test"]
    truths = {}
    if spec.task == "masks":
        threshold = source.threshold(spec.layer, step)
        for unit in spec.units:
            mine = [it for it in items if it["unit"] == unit]
            images = source.probe.batch(torch.as_tensor([it["extra"]["image"] for it in mine]))
            maps = unit_maps(model, spec.layer, images, [unit])[:, 0]  # (n, h, w)
            truths.update({it["seq"]: bits(m > threshold[unit]) for it, m in zip(mine, maps)})
        return truths
    for it in items:
        values = unit_maps(model, spec.layer, _pair_images(source.probe, it), [it["unit"]])[:, 0].mean((1, 2))
        truths[it["seq"]] = "left" if values[0] >= values[1] else "right"
    return truths


def curves(db, study: str, source, why: str | None = None) -> dict:
    """Per unit, the pooled score of every stored test answer at each checkpoint with saved weights.

    `source` None (with `why`: e.g. the run cannot be opened) scores the study's own step only."""
    spec = db.spec(study)
    answers = [a for a in db.answers(study) if a["phase"] == "test" and not a["extra"].get("catch")]
    steps = [] if source is None else [s for s in source.weight_steps if s in set(source.run.steps.tolist())]
    if not steps:
        reason = why or (source.why_no_weights if source is not None else None) or "the run saved no model weights"
        steps, why = [spec.step], f"{reason}; only the study's own step {spec.step} is scored"
    metric = "imrou" if spec.task == "masks" else "accuracy"
    units = {unit: {"metric": metric, "values": []} for unit in spec.units}
    for step in steps:
        truths = truths_at(db, study, source, step) if why is None else None
        for unit in spec.units:
            mine = [a for a in answers if a["unit"] == unit]
            shape = mine[0]["public"].get("grid") if mine else None
            truth = [(truths or {}).get(a["seq"], a["truth"]) for a in mine]
            row = score_answers(spec.task, [a["answer"] for a in mine], truth, shape) if mine else {metric: None}
            units[unit]["values"].append(row[metric])
    return {"study": study, "steps": steps, "why": why, "units": units}


def study_curves(db, study: str, builder: str | None = None) -> dict:
    """`curves` against the study's own run (`spec.run`), cached until the study stores a new answer.

    A run that cannot be opened (moved, no builder) gives the study's own step, saying why."""
    from viewer.study.source import StudySource

    spec = db.spec(study)
    key = (str(db.path), study, len(db.answers(study)), builder)
    with _LOCK:  # one computation at a time: each rebuilds models and runs the probe images through them
        if key in _CURVES:
            return _CURVES[key]
        source, why = _SOURCES.get((spec.run, builder)), None
        if source is None:
            try:
                source = _SOURCES[(spec.run, builder)] = StudySource.open(spec.run, builder=builder)
            except (OSError, ValueError, ImportError) as exc:
                why = f"the study's run {spec.run!r} cannot be opened: {exc}"
        _CURVES[key] = result = curves(db, study, source, why)
        return result
