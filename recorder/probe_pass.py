"""One probe pass: the probe set through the model with hooks, then one row of arrays.

    with observation_mode(model):
        per_image, preds, dissections = run_probe_pass(model, probe, layers, shapes, device)
    arrays = probe_row_arrays(per_image["layer4"], preds, probe.labels, n_classes=10)
    arrays.update(dissections["layer4"].row_arrays())   # conv layers: threshold, iou, top-k with maps

The pass runs in `eval()` under `no_grad`; `observation_mode` restores every module's
train/eval flag and the Python, NumPy and torch RNG states afterwards.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from recorder import metrics
from recorder.accumulators import ClassSums, Floor, ImageResponses, Predictions
from recorder.dissect.labels import ConceptLabels
from recorder.dissect.layer import LayerDissection
from recorder.distributed import agree, rank_and_world
from recorder.hooks import FailingModule, LayerHooks, nan_if_not_finite, unit_responses
from recorder.probe_buffers import ProbeBuffers


@contextlib.contextmanager
def observation_mode(model: nn.Module) -> Iterator[None]:
    """Run the body in eval() under no_grad; restore train flags and RNG states after."""
    flags = [(module, module.training) for module in model.modules()]
    py_state, np_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    try:
        model.eval()
        with torch.no_grad():
            yield
    finally:
        for module, training in flags:
            module.training = training
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)


def default_predict(output) -> torch.Tensor:
    """Predicted class per image: argmax over dim 1 of the model's output (first item of a tuple)."""
    if isinstance(output, (tuple, list)) and output:
        output = output[0]
    if isinstance(output, dict) and "logits" in output:
        output = output["logits"]
    if not torch.is_tensor(output) or output.dim() != 2:
        shape = tuple(output.shape) if torch.is_tensor(output) else type(output).__name__
        raise ValueError(
            f"cannot take predicted classes from the model output {shape}: expected logits "
            "[B, C]; pass predict=callable(output) -> class indices to the Recorder"
        )
    return output.argmax(1)


class _Capture:
    """Hook callback keeping the responses per batch. The maps of conv layers are copied
    into `targets`, set before each forward (name -> (B, K, h, w) maps and (B, K, h) row
    maxima, float32 views), their row maxima computed there and the spatial max from them."""

    def __init__(self, device: torch.device, shapes: dict[str, tuple]):
        self.device = device  # of the accumulators: a layer of a model split over devices may differ
        self.shapes = shapes
        self.targets: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.batch: dict[str, tuple] = {}

    def __call__(self, name: str, output) -> None:
        if name in self.batch:
            raise ValueError(
                f"layer {name!r} ran more than once in one forward pass; record a module "
                "that is called once per forward"
            )
        maps, row_max = self.targets.get(name, (None, None))
        mean, spatial_max = unit_responses(output, name, with_max=maps is None)
        if mean.shape[1] != self.shapes[name][0]:
            raise ValueError(f"layer {name!r} has {mean.shape[1]} units now but "
                             f"{self.shapes[name][0]} when the run started")
        if maps is not None:
            if tuple(output.shape[1:]) != tuple(maps.shape[1:]):
                raise ValueError(f"layer {name!r} has maps of shape {tuple(output.shape[1:])} now but "
                                 f"{tuple(maps.shape[1:])} when the run started")
            # a copy: a later in-place op (ReLU(inplace=True)) must not change the kept maps
            maps.copy_(output.detach())
            torch.amax(maps, 3, out=row_max)  # (B, K, h), NaN where a row has one
            spatial_max = nan_if_not_finite(row_max.amax(2))  # as unit_responses' max
        if mean.device != self.device:
            mean, spatial_max = mean.to(self.device), spatial_max.to(self.device)
        self.batch[name] = (mean, spatial_max, maps, row_max)

    def take(self, layers: Sequence[str]) -> dict[str, tuple]:
        missing = [name for name in layers if name not in self.batch]
        if missing:
            raise ValueError(
                f"layer(s) {missing} were not called during the forward pass; record layers "
                "that the model's forward uses"
            )
        batch, self.batch = self.batch, {}
        return batch


def layer_shapes(model: nn.Module, probe, layers: Sequence[str], device: torch.device) -> dict[str, tuple]:
    """Per-image output shape of each layer, (K, h, w) for conv and (K,) otherwise,
    from one forward of the first probe images. A model that fails on the probe's
    images raises a ValueError naming their shape and the module that failed."""
    shapes, refused = {}, []
    x = probe.batch(range(min(2, len(probe)))).to(device)  # (B, C, H, W)

    def record_shape(name, output):
        try:
            unit_responses(output, name, with_max=False)  # rejects unsupported shapes
            if output.shape[0] != x.shape[0]:
                raise ValueError(
                    f"layer {name!r} has output shape {tuple(output.shape)} for a batch of {x.shape[0]} "
                    "images: outputs must have the batch first ([B, ...]); for nn.LSTM, "
                    "nn.MultiheadAttention or nn.Transformer* layers pass batch_first=True")
        except ValueError as exc:
            refused.append(exc)
            raise
        shape = tuple(output.shape[1:])
        shapes[name] = shape if len(shape) == 3 else (shape[-1],)

    with observation_mode(model), LayerHooks(model, layers, record_shape):
        try:
            with FailingModule(model) as where:
                model(x)
        except Exception as exc:
            if refused:
                raise refused[0] from None
            raise ValueError(
                f"the model failed on the probe's images, shape {list(x.shape)} (N, C, H, W), in module "
                f"{where.name!r}: {type(exc).__name__}: {exc}. Check that the probe's image size "
                f"{tuple(probe.image_size)} and channel count {x.shape[1]} are what the model expects"
            ) from exc
    missing = [name for name in layers if name not in shapes]
    if missing:
        raise ValueError(f"layer(s) {missing} were not called during the forward pass; record layers "
                         "that the model's forward uses")
    return shapes


MAP_CACHE_BYTES = 1 << 30  # keep pass one's conv maps for pass two up to this size
LABEL_GROUP_BYTES = 1 << 26  # with cached maps, pass two counts this many bytes of labels at a time


def _concept_categories(probe, device) -> tuple[torch.Tensor, int]:
    categories = list(dict.fromkeys(c.category for c in probe.concepts))
    ids = [categories.index(c.category) for c in probe.concepts]
    return torch.tensor(ids, dtype=torch.int64, device=device), len(categories)


def run_probe_pass(
    model: nn.Module,
    probe,
    layers: Sequence[str],
    shapes: dict[str, tuple],
    device: torch.device,
    *,
    batch_size: int = 64,
    predict: Callable = default_predict,
    progress: bool = True,
    description: str = "probe pass",
    quantile: float = 0.005,
    topk: int = 8,
    dissect: bool = True,
    cache_bytes: int = MAP_CACHE_BYTES,
    buffers: ProbeBuffers | None = None,
) -> tuple[dict[str, ImageResponses], Predictions, dict[str, LayerDissection]]:
    """Responses of every probe image per layer, predictions, and dissection of conv layers.

    Call inside `observation_mode(model)`. Each rank runs its shard; the returned
    accumulators are already all-reduced, so every rank holds the whole probe.
    Pass one computes responses, thresholds and top-k maps; when `dissect` and the
    probe has segmentations, pass two counts IoU, reusing pass one's maps when they
    fit `cache_bytes` and running the forward again otherwise. The maps are copied
    into `buffers` (pass the same `ProbeBuffers` to every pass to reuse its memory).
    """
    n = len(probe)
    rank, world = rank_and_world()
    per_image = {name: ImageResponses(n, shapes[name][0], device) for name in layers}
    preds = Predictions(n, device)
    map_layers = [name for name in layers if len(shapes[name]) == 3] if dissect else []
    with_iou = dissect and probe.has_seg and bool(probe.concepts)
    categories, n_categories = _concept_categories(probe, device) if with_iou else (None, 0)
    dissections = {
        name: LayerDissection(shapes[name][0], shapes[name][1:], n, quantile, topk, categories,
                              n_categories, world, rank, device)
        for name in map_layers
    }
    start, stop = probe.shard(rank, world)
    batches = [slice(first, min(first + batch_size, stop)) for first in range(start, stop, batch_size)]
    map_bytes = (stop - start) * sum(4 * int(np.prod(shapes[name])) for name in map_layers)
    # cached: the shard's maps, kept for pass two (and observed at once); else one batch's
    cached = with_iou and map_bytes <= cache_bytes
    buffers = buffers if buffers is not None else ProbeBuffers()
    rows_held = stop - start if cached else min(batch_size, stop - start)
    store = {name: (buffers.take(name, (rows_held, *shapes[name]), device),  # maps (N, K, h, w)
                    buffers.take(name + " row max", (rows_held, *shapes[name][:2]), device))  # (N, K, h)
             for name in map_layers}
    capture = _Capture(torch.device(device), shapes)
    show = progress and rank == 0

    def held_maps(rows: slice) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Each conv layer's maps and row maxima of images `rows`: views of the buffers."""
        held = slice(rows.start - start, rows.stop - start) if cached else slice(0, rows.stop - rows.start)
        return {name: (maps[held], row_max[held]) for name, (maps, row_max) in store.items()}

    def forward(rows: slice):
        images = probe.batch(range(rows.start, rows.stop)).to(device, non_blocking=True)
        capture.targets = held_maps(rows)
        output = model(images)
        return output, capture.take(layers)

    def pass_one() -> None:
        for rows in tqdm(batches, desc=description, delay=1.0, leave=False, disable=not show):
            output, responses = forward(rows)
            for name in layers:
                mean, spatial_max, maps, row_max = responses[name]
                per_image[name].add(rows, mean, spatial_max)
                if name in dissections and not cached:
                    dissections[name].observe(rows.start, mean, spatial_max, maps, row_max)
            predicted = predict(output)
            predicted = torch.where((predicted >= 0) & (predicted < len(probe.classes)), predicted, -1)
            preds.add(rows, predicted)
        if cached:  # the whole shard at once: one guessed floor and one selection per layer
            for name, dissection in dissections.items():
                shard, (maps, row_max) = per_image[name], store[name]
                dissection.observe(start, shard.mean[start:stop], shard.max[start:stop], maps, row_max)

    def labels_of(rows: slice) -> ConceptLabels:
        def make():
            seg = probe.seg_batch(range(rows.start, rows.stop)).to(device, non_blocking=True)
            return ConceptLabels(seg, categories, n_categories)  # (B, L, H, W): once for every layer
        return buffers.labels(probe, rows, make)

    def pass_two() -> None:
        # cached maps: groups of images as large as their labels allow; else batch by batch
        groups = batches
        if cached and stop > start:
            layers_h_w = probe.seg_batch(range(start, start + 1)).shape[1:]  # (L, H, W)
            size = max(batch_size, LABEL_GROUP_BYTES // (4 * int(np.prod(layers_h_w))))
            groups = [slice(first, min(first + size, stop)) for first in range(start, stop, size)]
        for rows in tqdm(groups, desc=description + " (IoU)", delay=1.0, leave=False, disable=not show):
            if not cached:
                forward(rows)  # refills the one batch's buffers
            maps = held_maps(rows)
            labels = labels_of(rows)
            for name, dissection in dissections.items():
                layer_maps, row_max = maps[name]
                dissection.count(layer_maps, labels, row_max)

    with LayerHooks(model, layers, capture):
        _local(pass_one, f"in the {description}", device)  # every rank, before the collectives
        for accumulator in (*per_image.values(), preds):
            accumulator.all_reduce()
        for dissection in dissections.values():
            dissection.finish_thresholds()
        if with_iou and dissections:
            _local(pass_two, f"in the {description} (IoU)", device)
            for dissection in dissections.values():
                dissection.finish_counts()
    return per_image, preds, dissections


def _local(work: Callable[[], None], what: str, device: torch.device) -> None:
    """Run this rank's share of work, then agree with every rank that it went well.

    A rank whose forward raises still reaches the agreement, so every rank raises
    (`RankFailedError` under DDP; the error itself in one process) instead of waiting
    in the next all-reduce for a rank that will never come.
    """
    error = None
    try:
        work()
    except Exception as exc:  # noqa: BLE001 - re-raised by agree() on every rank
        error = exc
    agree(error, what, device)


def topk_row_arrays(per_image: ImageResponses, topk: int) -> dict[str, np.ndarray]:
    """Each unit's top-k probe images by spatial max (layers without maps; conv layers get
    theirs, with the maps, from `LayerDissection.row_arrays`)."""
    k = min(topk, per_image.max.shape[0])
    top_values, top_index = torch.topk(per_image.max.T, k, dim=1)  # (K, k)
    return {"topk_index": top_index.to(torch.int32).cpu().numpy(), "topk_value": top_values.cpu().numpy()}


def topk_mean_row_arrays(per_image: ImageResponses, topk: int) -> dict[str, np.ndarray]:
    """Each unit's top-k probe images by response (spatial mean for conv layers):
    `topk_mean_index`, `topk_mean_value` (K, k), for `Recorder(topk_by=("max", "mean"))`."""
    k = min(topk, per_image.mean.shape[0])
    top_values, top_index = torch.topk(per_image.mean.T, k, dim=1)  # (K, k)
    return {"topk_mean_index": top_index.to(torch.int32).cpu().numpy(), "topk_mean_value": top_values.cpu().numpy()}


def topk_max_index(per_image: ImageResponses, dissection: LayerDissection | None, topk: int) -> torch.Tensor:
    """Each unit's top-k image indices by spatial max (K, k), as stored in `topk_index`; on
    every rank (the probe pass leaves merged accumulators on each)."""
    if dissection is not None:
        return dissection.top.result()[0]
    return torch.topk(per_image.max.T, min(topk, per_image.max.shape[0]), dim=1)[1]


def probe_row_arrays(
    per_image: ImageResponses,
    preds: Predictions,
    labels: torch.Tensor,
    n_classes: int,
) -> dict[str, np.ndarray]:
    """One layer's per-class arrays of the run store from the whole probe's per-image responses,
    and `response_min`, each unit's smallest response over the probe (the signed-layer floor)."""
    floor = Floor(per_image.mean.shape[1], per_image.mean.device)
    floor.add(per_image.mean)
    response_min = floor.values().cpu().numpy()
    if n_classes == 0:
        return {"response_min": response_min}
    labels = labels.to(per_image.mean.device)
    by_true = ClassSums(n_classes, per_image.mean.shape[1], per_image.mean.device)
    by_true.add(per_image.mean, labels)
    max_true = ClassSums(n_classes, per_image.mean.shape[1], per_image.mean.device)
    max_true.add(per_image.max, labels)
    by_pred = ClassSums(n_classes, per_image.mean.shape[1], per_image.mean.device)
    by_pred.add(per_image.mean, preds.labels())
    sum_true, count_true = by_true.sum.cpu().numpy(), by_true.count.cpu().numpy()
    mu = metrics.class_means(sum_true, count_true)
    return dict(
        sum_true=sum_true.astype(np.float32),
        count_true=count_true,
        sum_pred=by_pred.sum.cpu().numpy().astype(np.float32),
        count_pred=by_pred.count.cpu().numpy(),
        max_true=metrics.class_means(max_true.sum.cpu().numpy(), count_true).astype(np.float32),
        precision=metrics.precision(
            per_image.mean.cpu().numpy(), labels.cpu().numpy(), metrics.dominant(mu),
            dead=metrics.is_dead(mu, response_min)).astype(np.float32),
        response_min=response_min,
    )
