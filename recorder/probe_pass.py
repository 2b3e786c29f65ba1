"""One probe pass: the probe set through the model with hooks, then one row of arrays.

    with observation_mode(model):
        per_image, preds = run_probe_pass(model, probe, layers, units, device)
    arrays = probe_row_arrays(per_image["layer4"], preds, probe.labels, n_classes=10, topk=8)

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
from recorder.accumulators import ClassSums, ImageResponses, Predictions
from recorder.distributed import rank_and_world
from recorder.hooks import LayerHooks, unit_responses


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
    """Hook callback keeping the responses of each layer for the current batch."""

    def __init__(self, with_max: bool = True):
        self.with_max = with_max
        self.batch: dict[str, tuple] = {}

    def __call__(self, name: str, output) -> None:
        if name in self.batch:
            raise ValueError(
                f"layer {name!r} ran more than once in one forward pass; record a module "
                "that is called once per forward"
            )
        self.batch[name] = unit_responses(output, name, self.with_max)

    def take(self, layers: Sequence[str]) -> dict[str, tuple]:
        missing = [name for name in layers if name not in self.batch]
        if missing:
            raise ValueError(
                f"layer(s) {missing} were not called during the forward pass; record layers "
                "that the model's forward uses"
            )
        batch, self.batch = self.batch, {}
        return batch


def count_units(model: nn.Module, probe, layers: Sequence[str], device: torch.device) -> dict[str, int]:
    """Number of units of each layer, from one forward of the first probe image."""
    capture = _Capture(with_max=False)
    with observation_mode(model), LayerHooks(model, layers, capture):
        model(probe.batch([0]).to(device))
        responses = capture.take(layers)
    return {name: int(responses[name][0].shape[1]) for name in layers}


def run_probe_pass(
    model: nn.Module,
    probe,
    layers: Sequence[str],
    units: dict[str, int],
    device: torch.device,
    *,
    batch_size: int = 64,
    predict: Callable = default_predict,
    progress: bool = True,
    description: str = "probe pass",
) -> tuple[dict[str, ImageResponses], Predictions]:
    """Responses of every probe image of this rank's shard, per layer, and predictions.

    Call inside `observation_mode(model)`. Rows of other ranks' shards stay zero;
    all-reduce the returned accumulators to assemble the whole probe.
    """
    n = len(probe)
    per_image = {name: ImageResponses(n, units[name], device) for name in layers}
    preds = Predictions(n, device)
    rank, world = rank_and_world()
    start, stop = probe.shard(rank, world)
    capture = _Capture()
    starts = range(start, stop, batch_size)
    bar = tqdm(starts, desc=description, delay=1.0, leave=False, disable=not progress or rank != 0)
    with LayerHooks(model, layers, capture):
        for first in bar:
            rows = slice(first, min(first + batch_size, stop))
            images = probe.batch(range(rows.start, rows.stop)).to(device, non_blocking=True)
            output = model(images)
            responses = capture.take(layers)
            for name in layers:
                mean, spatial_max = responses[name]
                if mean.shape[1] != units[name]:
                    raise ValueError(
                        f"layer {name!r} has {mean.shape[1]} units now but {units[name]} when the "
                        "run started"
                    )
                per_image[name].add(rows, mean, spatial_max)
            predicted = predict(output)
            predicted = torch.where((predicted >= 0) & (predicted < len(probe.classes)), predicted, -1)
            preds.add(rows, predicted)
    return per_image, preds


def probe_row_arrays(
    per_image: ImageResponses,
    preds: Predictions,
    labels: torch.Tensor,
    n_classes: int,
    topk: int,
) -> dict[str, np.ndarray]:
    """One layer's row of the run store from the whole probe's per-image responses."""
    k = min(topk, per_image.max.shape[0])
    top_values, top_index = torch.topk(per_image.max.T, k, dim=1)  # (K, k)
    row = {
        "topk_index": top_index.to(torch.int32).cpu().numpy(),
        "topk_value": top_values.cpu().numpy(),
    }
    if n_classes == 0:
        return row
    labels = labels.to(per_image.mean.device)
    by_true = ClassSums(n_classes, per_image.mean.shape[1], per_image.mean.device)
    by_true.add(per_image.mean, labels)
    max_true = ClassSums(n_classes, per_image.mean.shape[1], per_image.mean.device)
    max_true.add(per_image.max, labels)
    by_pred = ClassSums(n_classes, per_image.mean.shape[1], per_image.mean.device)
    by_pred.add(per_image.mean, preds.labels())
    sum_true, count_true = by_true.sum.cpu().numpy(), by_true.count.cpu().numpy()
    mu = metrics.class_means(sum_true, count_true)
    row.update(
        sum_true=sum_true.astype(np.float32),
        count_true=count_true,
        sum_pred=by_pred.sum.cpu().numpy().astype(np.float32),
        count_pred=by_pred.count.cpu().numpy(),
        max_true=metrics.class_means(max_true.sum.cpu().numpy(), count_true).astype(np.float32),
        precision=metrics.precision(
            per_image.mean.cpu().numpy(), labels.cpu().numpy(), metrics.dominant(mu), dead=metrics.is_dead(mu)
        ).astype(np.float32),
    )
    return row
