"""The class-selectivity regularizer of Leavitt & Morcos (2020), differentiable in torch.

    reg = SelectivityRegularizer(model, ["conv1", "conv2", "conv3", "conv4"], n_classes=10)
    with reg:
        logits = model(x)
        loss = F.cross_entropy(logits, y) - alpha * reg.mean_si(y)   # alpha < 0 discourages SI

Per minibatch, each recorded layer's output is averaged over space (its post-ReLU
unit responses `[B, K]`), averaged per class present in the batch (class means
`[C', K]`), and turned into the class selectivity index of every unit:
`si = (mu_max - mu_rest) / (mu_max + mu_rest + 1e-7)` on `mu_plus = max(mu, 0)`,
`mu_rest` the mean of the other classes' means, 0 for dead units: the same numbers
as `recorder.metrics.si` on the same class means. `mean_si` is the mean over units,
then over layers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from recorder.hooks import LayerHooks

__all__ = ["SelectivityRegularizer", "class_means", "selectivity_index"]

DEAD_EPS = 1e-7  # recorder.metrics.DEAD_EPS


def class_means(responses: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """`mu [C, K]`: mean response per class of `responses [B, K]`; NaN rows for absent classes."""
    onehot = torch.nn.functional.one_hot(labels, n_classes).to(responses.dtype)  # (B, C)
    counts = onehot.sum(0)                                                       # (C,)
    sums = onehot.T @ responses                                                  # (C, K)
    mu = sums / counts.clamp(min=1).unsqueeze(1)
    return torch.where(counts.unsqueeze(1) > 0, mu, torch.full_like(mu, float("nan")))


def selectivity_index(mu: torch.Tensor) -> torch.Tensor:
    """Differentiable SI `[..., K]` of class means `mu [..., C, K]` (NaN classes left out).

    Matches `recorder.metrics.si`: computed on `max(mu, 0)`, dead units (`mu_max <=
    1e-7`) are 0, units with fewer than two valid classes are NaN.
    """
    valid = ~torch.isnan(mu)
    mu_plus = torch.where(valid, mu.clamp(min=0), torch.zeros_like(mu))
    n_valid = valid.sum(-2)                                                      # (..., K)
    mu_max = mu_plus.amax(-2)                                                    # (..., K)
    mu_rest = (mu_plus.sum(-2) - mu_max) / (n_valid - 1).clamp(min=1)
    mu_rest = mu_rest.clamp(min=0)
    si = (mu_max - mu_rest) / (mu_max + mu_rest + DEAD_EPS)
    si = torch.where(mu_max <= DEAD_EPS, torch.zeros_like(si), si.clamp(0, 1))
    return torch.where(n_valid < 2, torch.full_like(si, float("nan")), si)


def _spatial_mean(output: torch.Tensor, layer: str) -> torch.Tensor:
    if output.dim() == 4:  # (B, K, H, W)
        return output.mean((2, 3))
    if output.dim() == 2:  # (B, K)
        return output
    if output.dim() == 3:  # (B, T, K)
        return output.mean(1)
    raise ValueError(f"layer {layer!r} has output shape {tuple(output.shape)}; expected conv, linear or tokens")


class SelectivityRegularizer:
    """Keeps the training outputs of `layers` (with their graph) and gives their mean SI.

        with SelectivityRegularizer(model, ["conv3", "conv4"], n_classes=10) as reg:
            logits = model(x)
            si = reg.mean_si(y)       # a scalar tensor with grad; clears the kept outputs

    Only forward passes with grad enabled are kept (not evaluation or probe passes).
    """

    def __init__(self, model: nn.Module, layers: Sequence[str], n_classes: int):
        self.layers = list(layers)
        self.n_classes = n_classes
        self._outputs: dict[str, list[torch.Tensor]] = {name: [] for name in self.layers}
        self._hooks = LayerHooks(getattr(model, "module", model), self.layers, self._keep)

    def _keep(self, name: str, output: torch.Tensor) -> None:
        if torch.is_grad_enabled():
            self._outputs[name].append(_spatial_mean(output, name))

    def layer_si(self, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per layer, the SI `[K]` of every unit on this minibatch; clears the kept outputs."""
        out = {}
        for name in self.layers:
            if not self._outputs[name]:
                raise RuntimeError(f"layer {name!r} ran no training forward pass since the last mean_si()")
            responses = torch.cat(self._outputs[name])
            out[name] = selectivity_index(class_means(responses, labels, self.n_classes))
            self._outputs[name].clear()
        return out

    def mean_si(self, labels: torch.Tensor) -> torch.Tensor:
        """Mean SI over units (NaN units left out), then over layers; a scalar with grad."""
        per_layer = [si.nanmean() for si in self.layer_si(labels).values()]
        return torch.stack(per_layer).nanmean()

    def close(self) -> None:
        self._hooks.close()
        for outputs in self._outputs.values():
            outputs.clear()

    def __enter__(self) -> SelectivityRegularizer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
