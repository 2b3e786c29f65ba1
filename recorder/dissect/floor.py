"""Per-unit floors: keep only the activations that can still enter a unit's top m.

    guess = sample_floor(maps, need=m)            # (K,) a guess of each unit's m-th largest
    kept, counts, nans = above_floor(maps, guess) # (K, c) values not <= floor, -inf padded
    top_m = torch.cat([held, kept], 1).topk(m, dim=1).values

`TopValues` streams each unit's m largest values. A value `<= floor[k]`, where at
least m values of unit k seen so far are `> floor[k]`, has m values above it and
cannot be among the m largest, so it never needs to enter a sort. Once a unit's
buffer is full its floor is the smallest value it holds; for the first batch,
`sample_floor` guesses one from a strided sample, which the caller verifies with
the counts that `above_floor` returns.

The filter keeps what is *not* `<= floor`, so NaN passes it: `above_floor` counts
the NaNs per unit (a unit with any NaN has no meaningful quantile) and puts `-inf`
in their place. It reads the maps once for the maximum of each group of (up to 64)
consecutive positions and compares single values only in the groups whose maximum
is above the floor.
"""

from __future__ import annotations

import math

import torch

__all__ = ["above_floor", "group_size", "sample_floor"]


def group_size(area: int, width: int) -> int:
    """Positions per group of a map of `area` positions, rows `width` long: the largest
    divisor of `area` in [16, 64], else one row."""
    return next((g for g in range(min(64, area), 15, -1) if area % g == 0), width)


def above_floor(maps: torch.Tensor, floor: torch.Tensor,
                row_max: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The values of maps (B, K, h, w) that are not `<= floor[k]` (NaN included), per unit.

    Returns `(kept, counts, nans)`: kept (K, c), row k holding unit k's kept values (in
    any order) followed by `-inf` up to `c` = the largest count, each NaN replaced by
    `-inf`; counts and nans int64 (K,): kept values (NaNs included) and NaNs per unit.
    Given the maps' row maxima (B, K, h) (`maps.amax(3)`), the rows are the groups.
    """
    n_images, n_units, height, width = maps.shape
    size = width if row_max is not None else group_size(height * width, width)
    n_groups = height * width // size
    groups = maps.contiguous().reshape(-1, size)  # (B * K * n_groups, size)
    top = row_max if row_max is not None else groups.amax(1).view(n_images, n_units, n_groups)  # NaN propagates
    unit, column = (~(top <= floor[:, None])).transpose(0, 1).reshape(n_units, -1).nonzero(as_tuple=True)
    image = torch.div(column, n_groups, rounding_mode="floor")
    group = (image * n_units + unit) * n_groups + column - image * n_groups  # grouped by unit
    part = groups.index_select(0, group)  # (n, size)
    hit = (~(part <= floor.index_select(0, unit)[:, None])).view(-1).nonzero()[:, 0]  # flat (group, position)
    values = part.view(-1).index_select(0, hit)
    unit = unit.index_select(0, torch.div(hit, size, rounding_mode="floor"))  # still grouped by unit
    counts = torch.bincount(unit, minlength=n_units)  # (K,)
    nan = torch.isnan(values)
    nans = torch.bincount(unit[nan], minlength=n_units)
    values = values.masked_fill(nan, float("-inf"))
    start = torch.cumsum(counts, 0) - counts  # (K,) first entry of each unit
    slot = torch.arange(unit.numel(), device=maps.device) - start.index_select(0, unit)
    kept = torch.full((n_units, int(counts.max()) if unit.numel() else 0), float("-inf"),
                      dtype=maps.dtype, device=maps.device)
    kept.index_put_((unit, slot), values)
    return kept, counts, nans


def sample_floor(maps: torch.Tensor, need: int, slack: float = 1.2) -> torch.Tensor:
    """(K,) a guess, per unit, of a value with at least `need` values of maps (B, K, h, w)
    above it: a quantile of `max(2 * need, 1024)` sampled values per unit, lowered by
    `slack` and four standard deviations of the sample count. Not verified here; `-inf`
    when the batch has too few values to guess from.

    The sample takes images evenly and, in each, a position of a golden-ratio sequence,
    so that it covers the whole map (a stride within each map would read the same
    border positions of every image)."""
    n_images, n_units = maps.shape[:2]
    area = maps[0, 0].numel()
    lowest = torch.full((n_units,), float("-inf"), dtype=maps.dtype, device=maps.device)
    if n_images * area <= need or need < 1:
        return lowest
    size = min(n_images * area, max(2 * need, 1024))
    draw = torch.arange(size, dtype=torch.float64, device=maps.device)
    image = (draw * n_images / size).long()  # ascending, every image about equally often
    position = ((draw * _GOLDEN) % 1.0 * area).long().clamp(max=area - 1)
    sample = maps.reshape(n_images, n_units, area)[image, :, position].T  # (K, size)
    expected = need * size / (n_images * area)  # sample values above the need-th largest
    rank = math.ceil(slack * expected + 4 * math.sqrt(expected)) + 1
    if rank >= size:
        return lowest
    return sample.topk(rank, dim=1, sorted=False).values.amin(1)  # NaN sorts highest


_GOLDEN = (math.sqrt(5) - 1) / 2  # positions j * _GOLDEN mod 1 spread evenly over [0, 1)
