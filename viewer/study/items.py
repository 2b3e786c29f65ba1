"""Study items, generated deterministically from a `StudySpec` and the run's model at the study's step.

    items = generate(source, spec)        # source: viewer.study.source.StudySource
    items.items[0].public                 # what the participant's browser receives
    items.items[0].truth                  # kept on the server: a mask "0110..." or "left" / "right"

Masks (Harth 2022): a unit's masks are its maps at the layer's own resolution `h x w`
thresholded at the stored `T_k` of the study's step. The first `n_test` probe images
on which the unit fires anywhere are the test set (`harth_split`); practice and
example images come from the other images on which it fires, in a seeded order.

Pairs (Zimmermann et al. 2021): for each query image (ranks `query_rank ...` of the
unit's ranking by spatial max), `recorder.occlusion.occlusion_pair` (40 % of the side,
stride 2, fill and measure "mean"); the occluded images leaving the activation highest
and lowest, in seeded left/right order; the truth is the side with the higher one.
Practice queries follow the test queries in the ranking, the natural references
follow those. Catch trials show the unoccluded query beside a blank (the image filled
with its own mean); their truth is measured, not assumed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from recorder.hooks import LayerHooks
from recorder.occlusion import occlusion_pair
from viewer.study.render import box_of, png, to_rgb
from viewer.study.spec import StudySpec

__all__ = ["Item", "Items", "bits", "blob_mask", "generate", "harth_split", "unit_maps"]


@dataclass
class Item:
    """One trial: `public` goes to the browser, `truth` and `extra` (baselines, cells) stay on the server."""

    unit: int
    phase: str            # "practice" | "test"
    public: dict
    truth: str
    extra: dict = field(default_factory=dict)


@dataclass
class Items:
    """Every item of a study in the order participants see them, plus per-unit extras and PNGs."""

    items: list[Item]
    context: dict[int, dict]          # unit -> {"examples": [...]} (masks) or {"references": [...]} (pairs)
    images: dict[str, bytes]          # name -> PNG


def bits(mask: np.ndarray) -> str:
    """A bool (h, w) mask as a row-major string of '0' and '1'."""
    return "".join("1" if v else "0" for v in np.asarray(mask, bool).ravel())


def unbits(text: str, shape) -> np.ndarray:
    return np.frombuffer(text.encode(), dtype=np.uint8).reshape(shape) == ord("1")


@torch.no_grad()
def unit_maps(model: nn.Module, layer: str, images: torch.Tensor, units, batch_size: int = 64) -> np.ndarray:
    """The maps of `units` of conv `layer` on `images` (N, C, H, W): float64 (N, U, h, w)."""
    out = []

    def keep(name, output):
        if output.dim() != 4:
            raise ValueError(f"layer {layer!r} gives outputs of shape {tuple(output.shape)}; a study needs a conv "
                             "layer [B, K, h, w]")
        out.append(output[:, list(units)].double().cpu())

    was_training = model.training
    model.eval()
    try:
        with LayerHooks(model, [layer], keep):
            for start in range(0, len(images), batch_size):
                model(images[start:start + batch_size])
    finally:
        model.train(was_training)
    return torch.cat(out).numpy()


def harth_split(fires: np.ndarray, n_test: int) -> tuple[np.ndarray, np.ndarray]:
    """(test, rest) probe indices: the first `n_test` images where `fires` (N,) is true, and the others."""
    firing = np.flatnonzero(fires)
    if len(firing) < n_test:
        raise ValueError(f"the unit fires on only {len(firing)} probe images; n_test={n_test} needs that many "
                         "(lower n_test, or choose another unit or step)")
    test = firing[:n_test]
    return test, np.setdiff1d(np.arange(len(fires)), test)


def blob_mask(shape: tuple[int, int], area: float) -> np.ndarray:
    """A centred blob: the `round(area)` cells nearest the grid's centre (ties in row-major order)."""
    h, w = shape
    rows, cols = np.mgrid[:h, :w]
    distance = (rows - (h - 1) / 2) ** 2 + (cols - (w - 1) / 2) ** 2
    order = np.argsort(distance.ravel(), kind="stable")[:int(round(area))]
    mask = np.zeros(h * w, bool)
    mask[order] = True
    return mask.reshape(h, w)


def _name(spec: StudySpec, *parts) -> str:
    return hashlib.sha256(":".join(map(str, (spec.seed, spec.run, spec.layer, spec.step, *parts))).encode()
                          ).hexdigest()[:20]


def _concept_masks(probe, indices, concept: int, shape) -> np.ndarray:
    """(n, h, w) bool: concept `concept` (0-based) covers at least half of each layer cell."""
    if concept < 0 or not probe.has_seg:
        return np.zeros((len(indices), *shape), bool)
    seg = probe.seg_batch(torch.as_tensor(indices))  # (n, L, sh, sw)
    covered = (seg == concept + 1).any(1, keepdim=True).double()
    return (torch.nn.functional.adaptive_avg_pool2d(covered, shape)[:, 0] >= 0.5).numpy()


def mask_items(source, spec: StudySpec, unit: int, model: nn.Module, images: dict) -> tuple[list[Item], dict]:
    probe = source.probe
    everything = probe.batch(torch.arange(len(probe)))
    maps = unit_maps(model, spec.layer, everything, [unit])[:, 0]  # (N, h, w)
    masks = maps > source.threshold(spec.layer, spec.step)[unit]
    test, rest = harth_split(masks.any((1, 2)), spec.n_test)
    rng = np.random.default_rng([spec.seed, unit, 0])
    others = rng.permutation(rest[masks[rest].any((1, 2))])
    if len(others) < spec.n_practice:
        raise ValueError(f"unit {unit} fires on only {len(others)} probe images outside the test set; "
                         f"n_practice={spec.n_practice} needs that many")
    practice, examples = others[:spec.n_practice], others[spec.n_practice:spec.n_practice + spec.n_examples]
    pixels = to_rgb(everything, probe.mean, probe.std)
    seen = others if len(others) else test
    area = float(masks[seen].sum((1, 2)).mean())
    concept = int(source.best_concepts(spec.layer, spec.step)[unit])
    concept_masks = _concept_masks(probe, test, concept, masks.shape[1:])
    h, w = masks.shape[1:]

    def show(index: int, role: str) -> str:
        name = _name(spec, unit, role, int(index))
        images[name] = png(pixels[index])
        return name

    items = [Item(unit, "practice", {"kind": "mask", "image": show(i, "practice"), "grid": [h, w]}, bits(masks[i]),
                  {"image": int(i)}) for i in practice]
    for n, i in enumerate(test):
        baselines = {"concept": bits(concept_masks[n]), "empty": bits(np.zeros((h, w), bool)),
                     "blob": bits(blob_mask((h, w), area))}
        items.append(Item(unit, "test", {"kind": "mask", "image": show(i, "test"), "grid": [h, w]}, bits(masks[i]),
                          {"image": int(i), "baselines": baselines, "concept": concept}))
    context = {"examples": [{"image": show(i, "example"), "mask": bits(masks[i])} for i in examples],
               "grid": [h, w]}
    return items, context


@torch.no_grad()
def _measure(model: nn.Module, layer: str, images: torch.Tensor, unit: int) -> np.ndarray:
    return unit_maps(model, layer, images, [unit])[:, 0].mean((1, 2))


def _pair_item(spec, unit, model, probe, index, role, rng, images) -> Item:
    image = probe.batch(torch.as_tensor([index]))[0]  # (C, H, W)
    pair = occlusion_pair(model, spec.layer, unit, image, stride=2, fill="mean", measure="mean")
    high, low = pair.images(image)
    size = image.shape[1:]
    high_left = bool(rng.random() < 0.5)
    sides = {"left": (high, pair.high), "right": (low, pair.low)} if high_left else \
        {"left": (low, pair.low), "right": (high, pair.high)}
    public = {"kind": "pair", "size": list(size)}
    for side, (picture, cell) in sides.items():
        name = _name(spec, unit, role, int(index), side)
        images[name] = png(to_rgb(picture[None], probe.mean, probe.std)[0])
        public[side] = name
    public["boxes"] = {side: box_of(cell, pair.patch, pair.stride, size) for side, (_, cell) in sides.items()}
    std = {side: float(image[:, b[0]:b[2], b[1]:b[3]].std()) for side, b in public["boxes"].items()}
    centre = {side: np.hypot((b[0] + b[2]) / 2 - size[0] / 2, (b[1] + b[3]) / 2 - size[1] / 2)
              for side, b in public["boxes"].items()}
    baselines = {"centre": "left" if centre["left"] >= centre["right"] else "right",
                 "std": "left" if std["left"] <= std["right"] else "right"}
    extra = {"image": int(index), "high": list(pair.high), "low": list(pair.low), "high_left": high_left,
             "patch": pair.patch, "stride": pair.stride, "values": [pair.high_value, pair.low_value],
             "baselines": baselines, "catch": False}
    return Item(unit, role, public, "left" if high_left else "right", extra)


def _catch_item(spec, unit, model, probe, index, n, rng, images) -> Item:
    image = probe.batch(torch.as_tensor([index]))[0]
    blank = image.mean((1, 2), keepdim=True).expand_as(image).clone()
    values = _measure(model, spec.layer, torch.stack([image, blank]), unit)
    image_left = bool(rng.random() < 0.5)
    size = list(image.shape[1:])
    whole = [0, 0, size[0], size[1]]
    public = {"kind": "pair", "size": size}
    for side, picture in (("left", image if image_left else blank), ("right", blank if image_left else image)):
        name = _name(spec, unit, "catch", n, side)
        images[name] = png(to_rgb(picture[None], probe.mean, probe.std)[0])
        public[side] = name
    public["boxes"] = {"left": None if image_left else whole, "right": whole if image_left else None}
    image_side, blank_side = ("left", "right") if image_left else ("right", "left")
    truth = image_side if values[0] >= values[1] else blank_side
    baselines = {"centre": image_side, "std": image_side}
    return Item(unit, "test", public, truth, {"image": int(index), "catch": True, "values": values.tolist(),
                                              "image_left": image_left, "baselines": baselines})


def pair_items(source, spec: StudySpec, unit: int, model: nn.Module, images: dict) -> tuple[list[Item], dict]:
    probe = source.probe
    everything = probe.batch(torch.arange(len(probe)))
    peak = unit_maps(model, spec.layer, everything, [unit])[:, 0].max((1, 2))  # (N,)
    order = np.argsort(-peak, kind="stable")
    first = spec.query_rank - 1
    need = first + spec.n_test + spec.n_practice + spec.n_references
    if len(order) < need:
        raise ValueError(f"the probe has {len(order)} images; query rank {spec.query_rank}, {spec.n_test} test, "
                         f"{spec.n_practice} practice and {spec.n_references} reference images need {need}")
    queries = order[first:first + spec.n_test]
    practice = order[first + spec.n_test:first + spec.n_test + spec.n_practice]
    references = order[first + spec.n_test + spec.n_practice:need]
    rng = np.random.default_rng([spec.seed, unit, 1])
    items = [_pair_item(spec, unit, model, probe, i, "practice", rng, images) for i in practice]
    test = [_pair_item(spec, unit, model, probe, i, "test", rng, images) for i in queries]
    catch_at = sorted(rng.choice(len(test) + spec.n_catch, size=spec.n_catch, replace=False).tolist())
    for n, at in enumerate(catch_at):
        test.insert(at, _catch_item(spec, unit, model, probe, int(order[n % max(first, 1)]), n, rng, images))
    pixels = to_rgb(probe.batch(torch.as_tensor(references)), probe.mean, probe.std)
    names = []
    for i, picture in zip(references, pixels):
        names.append(_name(spec, unit, "reference", int(i)))
        images[names[-1]] = png(picture)
    return items + test, {"references": names}


def generate(source, spec: StudySpec) -> Items:
    """Every item of the study (see the module docstring); ValueError when the run cannot supply them."""
    source.check_layer(spec.layer, spec.units)
    source.row(spec.step)
    model = source.model_at(spec.step)
    if model is None:
        raise ValueError(f"step {spec.step} has no saved model weights; steps with weights: "
                         f"{source.weight_steps or 'none'}" + (f" ({source.why_no_weights})"
                                                               if source.why_no_weights else ""))
    images: dict[str, bytes] = {}
    items, context = [], {}
    make = mask_items if spec.task == "masks" else pair_items
    for unit in spec.units:
        unit_items, context[unit] = make(source, spec, unit, model, images)
        items.extend(unit_items)
    return Items(items, context, images)
