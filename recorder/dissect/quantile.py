"""Per-unit `1 - q` quantile thresholds of Network Dissection, streamed over a probe.

    acc = threshold_accumulator(n_units=512, n_values=n_images * 7 * 7, q=0.005)
    for maps in batches:                  # (B, K, h, w) raw activations, any device
        acc.add(maps)
    acc.all_reduce()                      # merge ranks: one SUM per state tensor
    thresholds = acc.thresholds()         # (K,) float32

`T_k` is the exact `1 - q` quantile (linear interpolation, `numpy.quantile`'s
default method) of unit k's `n_values = N * h * w` activations. Only the top
`m = floor(q * (n_values - 1)) + 2` values of a unit take part in that quantile, so
`TopValues` keeps exactly those, streaming. When `world_size * K * m * 4` bytes do
not fit `budget_bytes`, `threshold_accumulator` returns a `TailSketch` instead: the
same interface in bounded memory, with a rank error that it states and bounds.

Both keep one slot of rows per rank (`[world_size, K, ...]`), fill only their own
and leave the others zero, so the SUM all-reduce assembles every rank's buffer (the
"disjoint rows" of `ImageResponses`); `thresholds()` merges the slots.
"""

from __future__ import annotations

import math

import torch

from recorder.accumulators import _Additive
from recorder.dissect.floor import above_floor, sample_floor

__all__ = [
    "THRESHOLD_BUDGET_BYTES",
    "TailSketch",
    "TopValues",
    "exact_quantile_thresholds",
    "threshold_accumulator",
    "top_count",
]

THRESHOLD_BUDGET_BYTES = 1 << 30  # exact top-m buffers up to this many bytes, else TailSketch
_BLOCK_ELEMENTS = 1 << 24  # thresholds() merges ranks' buffers this many values at a time


def _virtual_index(n: int, q: float) -> tuple[int, int, float]:
    """Ascending positions (lower, upper) and weight of the `1 - q` quantile of n values.

    The same float arithmetic as `numpy.quantile(..., method="linear")`.
    """
    level = 1.0 - q
    virtual = n * level + (1.0 + level * (1 - 1 - 1)) - 1
    if virtual >= n - 1:
        return n - 1, n - 1, 0.0
    lower = max(int(math.floor(virtual)), 0)
    return lower, lower + 1, max(virtual - lower, 0.0)


def top_count(n_values: int, q: float) -> int:
    """How many of the largest of `n_values` values the `1 - q` quantile depends on."""
    lower, _, _ = _virtual_index(n_values, q)
    return min(n_values, max(int(math.floor(q * (n_values - 1))) + 2, n_values - lower))


def _lerp(low: torch.Tensor, high: torch.Tensor, weight: float) -> torch.Tensor:
    """numpy's `_lerp`, in the dtype of the values (float32), weight a Python float."""
    diff = high - low
    if weight >= 0.5:
        return high - diff * (1.0 - weight)
    return low + diff * weight


def _quantile_from_descending(top: torch.Tensor, n: int, q: float) -> torch.Tensor:
    """The `1 - q` quantile of n values per row, from each row's values sorted descending."""
    lower, upper, weight = _virtual_index(n, q)
    return _lerp(top[:, n - 1 - lower], top[:, n - 1 - upper], weight)


def _quantile_from_largest(pool: torch.Tensor, n: int, q: float) -> torch.Tensor:
    """The `1 - q` quantile of n values per row, from a pool (rows, s) holding each row's
    `top_count(n, q)` largest values, in any order, and only smaller ones (e.g. -inf) beside.

    The quantile reads the values at two adjacent descending positions a - 1 and a: the
    two smallest of the a + 1 largest, found without sorting the pool."""
    lower, upper, weight = _virtual_index(n, q)
    a = n - 1 - lower  # descending position of the lower order statistic; upper's is a or a - 1
    top = pool if a + 1 >= pool.shape[1] else pool.topk(a + 1, dim=1, sorted=False).values
    two = top.topk(min(2, top.shape[1]), dim=1, largest=False, sorted=True).values  # (rows, <= 2)
    at_a, before_a = two[:, 0], two[:, -1]
    return _lerp(at_a, at_a if upper == lower else before_a, weight)


def _unit_values(maps: torch.Tensor, n_units: int, device: torch.device) -> torch.Tensor:
    """(B, K, h, w) activations -> (K, B*h*w) float32 on `device`."""
    if maps.dim() != 4 or maps.shape[1] != n_units:
        raise ValueError(f"maps must have shape (B, {n_units}, h, w), got {tuple(maps.shape)}")
    return maps.to(device=device, dtype=torch.float32).transpose(0, 1).reshape(n_units, -1)


def _check_common(n_units: int, n_values: int, q: float, world_size: int, rank: int) -> None:
    if n_units < 1 or n_values < 1:
        raise ValueError(f"n_units and n_values must be >= 1, got {n_units} and {n_values}")
    if not 0.0 <= q < 1.0:
        raise ValueError(f"q must be in [0, 1), got {q!r}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size), got rank={rank}, world_size={world_size}")


def exact_quantile_thresholds(maps_all: torch.Tensor, q: float) -> torch.Tensor:
    """Reference: the `1 - q` quantile of each unit over all of `maps_all` (N, K, h, w), by sorting."""
    values = _unit_values(maps_all, maps_all.shape[1], maps_all.device)
    top = values.sort(dim=1, descending=True).values
    return _quantile_from_descending(top, values.shape[1], q)


class TopValues(_Additive):
    """Exact streaming `1 - q` quantile per unit: keeps each unit's m largest values.

        top = TopValues(n_units=512, n_values=n_images * 49, q=0.005)
        top.add(maps)                    # (B, 512, 7, 7), repeatedly
        top.thresholds()                 # (512,) float32, equal to numpy.quantile(.., 1 - q)

    State: `values` float32 (world_size, K, m), slot r holding (unsorted) the largest
    `min(seen[r], m)` values of rank r in its first entries and zero beyond; `seen`
    int64 (world_size,), values per unit added by each rank. Only slot `rank` is
    written here; `nans` int64 (K,), NaNs seen per unit (such a unit's threshold is
    NaN, as numpy's, and its buffer is left unspecified).

    Speed: a batch value enters the (unsorted) top-m selection only when it is above
    its unit's floor (`recorder.dissect.floor`): once a slot is full, the smallest
    value it holds; for a first batch of more than m values, a guess verified by
    counting (units whose guess fails keep every value).
    """

    _state = ("values", "seen", "nans")

    def __init__(self, n_units: int, n_values: int, q: float, world_size: int = 1, rank: int = 0,
                 device: torch.device | str = "cpu"):
        _check_common(n_units, n_values, q, world_size, rank)
        self.n_units, self.n_values, self.q, self.rank = n_units, n_values, q, rank
        self.m = top_count(n_values, q)
        self.values = torch.zeros(world_size, n_units, self.m, dtype=torch.float32, device=device)
        self.seen = torch.zeros(world_size, dtype=torch.int64, device=device)
        self.nans = torch.zeros(n_units, dtype=torch.int64, device=device)

    def add(self, maps: torch.Tensor, row_max: torch.Tensor | None = None) -> None:
        """Merge a batch of activation maps (B, K, h, w) into this rank's top-m buffer
        (`row_max`: the maps' row maxima (B, K, h), when already known)."""
        if maps.dim() != 4 or maps.shape[1] != self.n_units:
            raise ValueError(f"maps must have shape (B, {self.n_units}, h, w), got {tuple(maps.shape)}")
        maps = maps.to(device=self.values.device, dtype=torch.float32)
        mine, m = self.values[self.rank], self.m
        held, size = min(int(self.seen[self.rank]), m), maps[:, 0].numel()
        self.seen[self.rank] += size
        lowest = torch.full((self.n_units,), float("-inf"), device=mine.device)
        guessed = held < m < held + size
        floor = mine.amin(1) if held == m else sample_floor(maps, m) if guessed else lowest  # (K,)
        floor = floor.masked_fill(self.nans > 0, float("inf"))  # NaN units: only count their NaNs
        if row_max is not None:
            row_max = row_max.to(device=mine.device, dtype=torch.float32)
        kept, counts, nans = above_floor(maps, floor, row_max)  # (K, c), -inf padded
        if guessed:  # a guessed floor must have m batch values above it
            short = (counts - nans < m) & (floor > float("-inf")) & (self.nans + nans == 0)
            if bool(short.any()):
                kept, counts, nans = above_floor(maps, torch.where(short, lowest, floor), row_max)
        self.nans += nans
        if held == m and kept.shape[1] == 0:
            return
        # top m of held and kept values: the -inf padding enters a buffer only in place
        # of a dropped -inf (a finite floor has m kept values above it)
        pool = torch.cat([mine[:, :held], kept], dim=1) if held else kept
        if pool.shape[1] > m:
            pool = pool.topk(m, dim=1, sorted=False).values
        mine[:, :pool.shape[1]] = pool
        mine[:, pool.shape[1]:held + size] = float("-inf")  # dropped -inf values, if any

    def thresholds(self) -> torch.Tensor:
        """(K,) float32 `1 - q` quantiles over every rank's values; NaN before any add and
        for a unit that saw a NaN."""
        n = int(self.seen.sum())
        if n == 0:
            return torch.full((self.n_units,), float("nan"), device=self.values.device)
        need = top_count(n, self.q)
        if need > self.m:
            raise ValueError(f"TopValues saw {n} values per unit, more than the {self.n_values} "
                             f"it was sized for")
        held = self.seen.clamp(max=self.m)  # (W,)
        world = self.values.shape[0]
        valid = torch.arange(self.m, device=held.device)[None, :] < held[:, None]  # (W, m)
        out = torch.empty(self.n_units, dtype=torch.float32, device=self.values.device)
        block = max(1, _BLOCK_ELEMENTS // (world * self.m))
        for start in range(0, self.n_units, block):
            part = self.values[:, start:start + block]  # (W, b, m)
            part = part.masked_fill(~valid[:, None, :], float("-inf"))
            pool = part.transpose(0, 1).reshape(part.shape[1], world * self.m)
            out[start:start + block] = _quantile_from_largest(pool, n, self.q)
        return out.masked_fill(self.nans > 0, float("nan"))


class TailSketch(_Additive):
    """Streaming `1 - q` quantile per unit in bounded memory, with a stated rank error.

        sketch = TailSketch(n_units=512, n_values=10**8, q=0.005, capacity=2**18)
        sketch.add(maps)                  # (B, 512, h, w), repeatedly
        sketch.thresholds()               # (512,) float32
        sketch.rank_error_bound()         # E: the guarantee below, for this stream

    Per unit and rank it holds `p` exact pending values and `c` representatives of
    weight `s = ceil(m / c)` (`c + p = capacity`). A batch that would overflow the
    pending buffer is *compacted* with it: of their values sorted descending, the top
    `t = min(count, m)` are kept (the rest have >= m values above them, so they are not
    in any unit's top m), cut from the top into groups of s consecutive values, each
    group replaced by its h-th value with weight s (h = ceil(s/2); for even s, h alternates
    between s/2 and s/2 + 1 from one compaction to the next), and the `t mod s` lowest
    kept values stay pending, exact. The representatives are merged with the held ones,
    keeping the c largest (weight `c * s >= m`, so the top m stay represented).

    Rank error (proved for any input order, ties included): let `d` be the descending
    position (0-based) of the lower order statistic that the exact threshold
    interpolates from. The returned `T` satisfies

        #{values > T} <= d + E   and   #{values >= T} >= d - E,
        E = floor(s / 2) * (number of compactions, summed over ranks),

    i.e. `T` lies between the exact order statistics `E` positions either side of
    the exact threshold's. Why: a compaction changes the count of values above any
    cut by at most floor(s/2) (only the one group straddling the cut is misjudged,
    by at most max(h - 1, s - h) = floor(s/2)), other groups and exact values
    count exactly, and no dropped value lies above the selected representative
    because the kept ones above it weigh at least m. A rank compacts at most once
    per `p - s + 1` values it adds after its first compaction, so a priori

        E <= floor(s / 2) * sum over ranks of ceil(M_r / (p - s + 1)),

    roughly `M * m / (2 c p)`: relative to the tail size m, `E / m ~ 2 M / capacity**2`.
    `rank_error_bound()` returns the E of the stream actually seen (exactly 0 while
    nothing was compacted).

    State: `reps` float32 (W, K, c), `pending` float32 (W, K, p), `n_reps`,
    `n_pending`, `seen`, `compactions` int64 (W,); only slot `rank` is written here.
    """

    _state = ("reps", "pending", "n_reps", "n_pending", "seen", "compactions")

    def __init__(self, n_units: int, n_values: int, q: float, capacity: int, world_size: int = 1,
                 rank: int = 0, device: torch.device | str = "cpu"):
        _check_common(n_units, n_values, q, world_size, rank)
        self.n_units, self.n_values, self.q, self.rank = n_units, n_values, q, rank
        self.m = top_count(n_values, q)
        self.c = capacity // 2
        self.p = capacity - self.c
        self.s = math.ceil(self.m / max(self.c, 1))
        if self.c < 1 or self.p < 2 * self.s:
            raise ValueError(f"TailSketch capacity {capacity} per unit is too small for the top "
                             f"{self.m} values of {n_values}; need at least about "
                             f"{math.ceil(2 * math.sqrt(2 * self.m))}")
        self.reps = torch.zeros(world_size, n_units, self.c, dtype=torch.float32, device=device)
        self.pending = torch.zeros(world_size, n_units, self.p, dtype=torch.float32, device=device)
        for name in ("n_reps", "n_pending", "seen", "compactions"):
            setattr(self, name, torch.zeros(world_size, dtype=torch.int64, device=device))

    def rank_error_bound(self) -> int:
        """E of the docstring for the values added so far (over all merged ranks)."""
        return (self.s // 2) * int(self.compactions.sum())

    def a_priori_bound(self) -> int:
        """The largest E any stream of `n_values` values split over the ranks may reach."""
        return (self.s // 2) * (math.ceil(self.n_values / (self.p - self.s + 1)) + self.reps.shape[0])

    def add(self, maps: torch.Tensor, row_max: torch.Tensor | None = None) -> None:
        """Add a batch of activation maps (B, K, h, w) to this rank's sketch (`row_max` is
        not needed: every value enters the sketch)."""
        values = _unit_values(maps, self.n_units, self.reps.device)
        r, b = self.rank, values.shape[1]
        held = int(self.n_pending[r])
        pending = self.pending[r]
        if held + b <= self.p:
            pending[:, held:held + b] = values
            self.n_pending[r] += b
        else:
            self._compact(torch.cat([pending[:, :held], values], dim=1))
        self.seen[r] += b

    def _compact(self, pool: torch.Tensor) -> None:
        r, s = self.rank, self.s
        keep = min(pool.shape[1], self.m)
        top = pool.topk(keep, dim=1, sorted=True).values  # (K, keep) descending
        groups = keep // s
        # each group's h-th value; for even s, h alternates between s/2 and s/2 + 1 so the
        # one-sided errors of successive compactions cancel on average
        h = (s + 1) // 2 if s % 2 else s // 2 + int(self.compactions[r]) % 2
        new = top[:, h - 1:groups * s:s]  # (K, groups)
        held = int(self.n_reps[r])
        merged = torch.cat([self.reps[r, :, :held], new], dim=1)
        kept = min(self.c, merged.shape[1])
        if kept:
            self.reps[r, :, :kept] = merged.topk(kept, dim=1, sorted=True).values
        self.n_reps[r] = kept
        rest = keep - groups * s
        self.pending[r, :, :rest] = top[:, groups * s:]
        self.pending[r, :, rest:] = 0
        self.n_pending[r] = rest
        self.compactions[r] += 1

    def thresholds(self) -> torch.Tensor:
        """(K,) float32 estimated `1 - q` quantiles over every rank; NaN before any add."""
        device = self.reps.device
        n = int(self.seen.sum())
        if n == 0:
            return torch.full((self.n_units,), float("nan"), device=device)
        if top_count(n, self.q) > self.m:
            raise ValueError(f"TailSketch saw {n} values per unit, more than the {self.n_values} "
                             f"it was sized for")
        lower, upper, weight = _virtual_index(n, self.q)
        slots, weights = [], []
        for r in range(self.reps.shape[0]):
            n_pending, n_reps = int(self.n_pending[r]), int(self.n_reps[r])
            slots += [self.pending[r, :, :n_pending], self.reps[r, :, :n_reps]]
            weights += [torch.ones(n_pending, dtype=torch.int64, device=device),
                        torch.full((n_reps,), self.s, dtype=torch.int64, device=device)]
        weights = torch.cat(weights)
        targets = torch.tensor([n - lower, n - upper], dtype=torch.int64, device=device)  # 1-based
        out = torch.empty(self.n_units, dtype=torch.float32, device=device)
        block = max(1, _BLOCK_ELEMENTS // max(weights.numel(), 1))
        for start in range(0, self.n_units, block):
            items = torch.cat([slot[start:start + block] for slot in slots], dim=1)
            ordered, order = items.sort(dim=1, descending=True)
            cumulative = weights[order].cumsum(dim=1)
            where = torch.searchsorted(cumulative, targets.expand(items.shape[0], 2).contiguous())
            picked = ordered.gather(1, where.clamp(max=items.shape[1] - 1))
            out[start:start + block] = _lerp(picked[:, 0], picked[:, 1], weight)
        return out


def threshold_accumulator(n_units: int, n_values: int, q: float,
                          budget_bytes: int = THRESHOLD_BUDGET_BYTES, world_size: int = 1,
                          rank: int = 0, device: torch.device | str = "cpu") -> TopValues | TailSketch:
    """Exact `TopValues` when its `world_size * K * m * 4` bytes fit `budget_bytes`, else a
    `TailSketch` using the budget (see its rank-error bound)."""
    _check_common(n_units, n_values, q, world_size, rank)
    m = top_count(n_values, q)
    if world_size * n_units * m * 4 <= budget_bytes:
        return TopValues(n_units, n_values, q, world_size=world_size, rank=rank, device=device)
    capacity = budget_bytes // (4 * world_size * n_units)
    return TailSketch(n_units, n_values, q, capacity, world_size=world_size, rank=rank, device=device)
