"""Accumulators of unit responses with additive state only (sums and counts).

    sums = ClassSums(n_classes=10, n_units=512)
    sums.add(responses, labels)        # responses (B, K), labels (B,)
    sums.all_reduce()                  # merge ranks: one SUM per tensor
    mu = sums.sum / sums.count[:, None]

Because every state tensor is a sum, merging ranks is `all_reduce(SUM)` and
resuming is `load_state_dict`.
"""

from __future__ import annotations

import torch

from recorder.distributed import all_reduce


class _Additive:
    """Shared plumbing: state tensors listed in `_state`, all of them sums."""

    _state: tuple[str, ...] = ()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name).clone() for name in self._state}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name in self._state:
            mine = getattr(self, name)
            theirs = state[name]
            if tuple(theirs.shape) != tuple(mine.shape):
                raise ValueError(
                    f"{type(self).__name__}.{name}: state has shape {tuple(theirs.shape)}, "
                    f"expected {tuple(mine.shape)}"
                )
            mine.copy_(theirs)

    def all_reduce(self) -> None:
        """Sum the state over all `torch.distributed` ranks (no-op without it)."""
        all_reduce(getattr(self, name) for name in self._state)

    def reset(self) -> None:
        for name in self._state:
            getattr(self, name).zero_()

    def to_(self, device: torch.device | str) -> None:
        for name in self._state:
            setattr(self, name, getattr(self, name).to(device))


class ClassSums(_Additive):
    """Sum of each unit's response per class, and the number of images per class.

        sums = ClassSums(n_classes=3, n_units=4)
        sums.add(torch.randn(8, 4), torch.tensor([0, 1, 2, 0, 1, 2, 0, -1]))
        sums.count        # tensor([3, 2, 2]); label -1 is ignored

    State: `sum` float64 (C, K), `count` int64 (C,).
    """

    _state = ("sum", "count")

    def __init__(self, n_classes: int, n_units: int, device: torch.device | str = "cpu"):
        self.n_classes = n_classes
        self.sum = torch.zeros(n_classes, n_units, dtype=torch.float64, device=device)
        self.count = torch.zeros(n_classes, dtype=torch.int64, device=device)

    def add(self, responses: torch.Tensor, labels: torch.Tensor) -> None:
        """Add responses (B, K) of images with class labels (B,); labels < 0 are skipped."""
        labels = labels.to(self.sum.device).long()
        keep = labels >= 0
        if not bool(keep.all()):
            responses, labels = responses[keep], labels[keep]
        self.sum.index_add_(0, labels, responses.to(self.sum.device, torch.float64))
        self.count += torch.bincount(labels, minlength=self.n_classes)


class Floor:
    """Each unit's smallest response so far (NaN ignored): the floor of the signed-layer rule.

        floor = Floor(n_units=4)
        floor.add(torch.randn(8, 4))     # responses (B, K)
        floor.all_reduce()               # merge ranks: MIN
        floor.values()                   # float32 (K,), NaN for a unit that saw no finite response

    The one accumulator merged with MIN rather than SUM: a minimum is not a sum.
    """

    def __init__(self, n_units: int, device: torch.device | str = "cpu"):
        self.min = torch.full((n_units,), float("inf"), dtype=torch.float32, device=device)

    def add(self, responses: torch.Tensor) -> None:
        if len(responses):
            r = responses.to(self.min.device, torch.float32)  # (B, K)
            self.min = torch.minimum(self.min, r.masked_fill(torch.isnan(r), float("inf")).amin(0))

    def all_reduce(self) -> None:
        all_reduce([self.min], op="min")

    def values(self) -> torch.Tensor:
        return self.min.masked_fill(torch.isinf(self.min) & (self.min > 0), float("nan"))

    def reset(self) -> None:
        self.min.fill_(float("inf"))

    def to_(self, device: torch.device | str) -> None:
        self.min = self.min.to(device)


class ImageResponses(_Additive):
    """Per-image unit responses over a probe of N images, filled row by row.

        per_image = ImageResponses(n_images=100, n_units=512)
        per_image.add(slice(0, 32), mean, spatial_max)     # each (32, K)

    Each rank fills only its own shard of rows and leaves the rest zero, so the
    SUM all-reduce assembles the whole probe. State: `mean`, `max` float32 (N, K)
    and `filled` int64 (N,) (1 where a row was written, so gaps are detectable).
    """

    _state = ("mean", "max", "filled")

    def __init__(self, n_images: int, n_units: int, device: torch.device | str = "cpu"):
        self.mean = torch.zeros(n_images, n_units, dtype=torch.float32, device=device)
        self.max = torch.zeros(n_images, n_units, dtype=torch.float32, device=device)
        self.filled = torch.zeros(n_images, dtype=torch.int64, device=device)

    def add(self, rows: slice, mean: torch.Tensor, spatial_max: torch.Tensor) -> None:
        self.mean[rows] = mean
        self.max[rows] = spatial_max
        self.filled[rows] += 1


class Predictions(_Additive):
    """The model's predicted class per probe image, stored as `pred + 1` (0 = not seen).

        preds = Predictions(n_images=100)
        preds.add(slice(0, 32), logits.argmax(1))
        preds.labels()    # (N,) with -1 where unseen or not a class
    """

    _state = ("shifted",)

    def __init__(self, n_images: int, device: torch.device | str = "cpu"):
        self.shifted = torch.zeros(n_images, dtype=torch.int64, device=device)

    def add(self, rows: slice, predicted: torch.Tensor) -> None:
        self.shifted[rows] = predicted.to(self.shifted.device).long() + 1

    def labels(self) -> torch.Tensor:
        return self.shifted - 1
