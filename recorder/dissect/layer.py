"""Network Dissection inside the probe pass: thresholds, top-k maps and IoU per conv layer.

    layer = LayerDissection(n_units=512, map_size=(7, 7), n_images=len(probe), q=0.005, topk=8,
                            concept_category=cats, n_categories=2)
    for first, mean, spatial_max, maps in pass_one: # (B, K), (B, K), (B, K, h, w)
        layer.observe(first, mean, spatial_max, maps)   # (and row_max=maps.amax(3), if known)
    layer.finish_thresholds()                       # all-reduce; T_k exact (1 - q) quantiles
    for maps, seg in pass_two:                      # (B, K, h, w), (B, L, H, W)
        layer.count(maps, seg)
    layer.finish_counts()
    arrays = layer.row_arrays()                     # threshold, iou, topk_index/value/map

Every state is additive with one slot per rank, so merging ranks is one SUM each.
A unit with a NaN or Inf anywhere in its maps (seen as a NaN response: `unit_responses`)
gets a NaN threshold and NaN IoUs: no quantile of such values means anything (its top-k
values are NaN where a spatial max is).
"""

from __future__ import annotations

import torch

from recorder.accumulators import _Additive
from recorder.dissect.iou import IoUCounts
from recorder.dissect.quantile import threshold_accumulator


class TopMaps(_Additive):
    """Each unit's top-k probe images by spatial max, with their activation maps, streamed.

        top = TopMaps(n_units=16, k=8, map_size=(7, 7))
        top.add(0, spatial_max, maps)       # (B, K), (B, K, h, w) of images 0..B-1
        index, value, maps = top.result()   # (K, k) image ids (-1: none), (K, k), (K, k, h, w)

    Slot `rank` of `[world_size, ...]` holds this rank's candidates; `index` stores
    image id + 1 (0 = empty) so that the SUM all-reduce of the slots merges ranks.
    """

    _state = ("value", "index", "maps")

    def __init__(self, n_units: int, k: int, map_size: tuple[int, int], world_size: int = 1,
                 rank: int = 0, device: torch.device | str = "cpu"):
        self.k, self.rank = k, rank
        self.value = torch.zeros(world_size, n_units, k, device=device)
        self.index = torch.zeros(world_size, n_units, k, dtype=torch.int64, device=device)
        self.maps = torch.zeros(world_size, n_units, k, *map_size, device=device)

    def add(self, first: int, spatial_max: torch.Tensor, maps: torch.Tensor) -> None:
        """Merge images first..first+B-1: spatial max (B, K), maps (B, K, h, w)."""
        r, (n, units) = self.rank, spatial_max.shape
        held = self.index[r] > 0  # (K, k)
        values = torch.cat([torch.where(held, self.value[r], float("-inf")), spatial_max.T], 1)  # (K, k+B)
        ids = torch.arange(first + 1, first + n + 1, device=self.index.device).expand(units, n)
        top, pos = values.topk(self.k, dim=1)  # (K, k)
        self.index[r] = torch.cat([self.index[r], ids], 1).gather(1, pos)
        self.value[r] = torch.where(self.index[r] > 0, top, 0.0)
        # maps: the kept ones from the buffer, then the batch's newcomers copied in
        kept = self.maps[r].gather(1, pos.clamp(max=self.k - 1)[:, :, None, None].expand(
            -1, -1, *maps.shape[2:]))  # (K, k, h, w)
        unit, slot = (pos >= self.k).nonzero(as_tuple=True)
        kept[unit, slot] = maps[pos[unit, slot] - self.k, unit].to(kept)
        self.maps[r] = kept

    def result(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Top-k over all ranks' slots: image ids (K, k) (-1: none), values (K, k), maps (K, k, h, w)."""
        world, units, k = self.index.shape
        index = self.index.transpose(0, 1).reshape(units, world * k)
        value = torch.where(index > 0, self.value.transpose(0, 1).reshape(units, world * k), float("-inf"))
        top, pos = value.topk(k, dim=1)
        maps = self.maps.transpose(0, 1).reshape(units, world * k, *self.maps.shape[3:])
        maps = maps.gather(1, pos[:, :, None, None].expand(-1, -1, *maps.shape[2:]))
        return index.gather(1, pos) - 1, top, maps


class LayerDissection:
    """Thresholds, top-k maps and (with segmentations) IoU counts of one conv layer."""

    def __init__(self, n_units: int, map_size: tuple[int, int], n_images: int, q: float, topk: int,
                 concept_category: torch.Tensor | None = None, n_categories: int = 0,
                 world_size: int = 1, rank: int = 0, device: torch.device | str = "cpu"):
        height, width = map_size
        self.quantiles = threshold_accumulator(n_units, n_images * height * width, q,
                                               world_size=world_size, rank=rank, device=device)
        self.top = TopMaps(n_units, min(topk, n_images), map_size, world_size, rank, device)
        self.counts = None
        if concept_category is not None and len(concept_category):
            self.counts = IoUCounts(n_units, concept_category, n_categories, device)
        self.not_finite = _NotFinite(n_units, device)
        self.thresholds: torch.Tensor | None = None
        self._count_thresholds: torch.Tensor | None = None

    def observe(self, first: int, mean: torch.Tensor, spatial_max: torch.Tensor, maps: torch.Tensor,
                row_max: torch.Tensor | None = None) -> None:
        """Pass one: a batch of images first.. with responses and spatial max (B, K) (NaN where
        a map is not finite), maps (B, K, h, w) and, when known, their row maxima (B, K, h)."""
        self.not_finite.add(mean)
        self.quantiles.add(maps, row_max)
        self.top.add(first, spatial_max, maps)

    def finish_thresholds(self) -> None:
        self.not_finite.all_reduce()
        self.quantiles.all_reduce()
        self.top.all_reduce()
        bad = self.not_finite.units()
        self.thresholds = self.quantiles.thresholds().masked_fill(bad, float("nan"))
        self._count_thresholds = self.thresholds.masked_fill(bad, float("inf"))  # no pixel is above

    def count(self, maps: torch.Tensor, seg, row_max: torch.Tensor | None = None) -> None:
        """Pass two: intersections and unions of the batch's masks with its labels, seg
        (B, L, H, W) or the batch's `ConceptLabels` shared by every layer (`row_max`: the
        maps' row maxima (B, K, h), when known)."""
        self.counts.add(maps, self._count_thresholds, seg, row_max)

    def finish_counts(self) -> None:
        self.counts.all_reduce()

    def row_arrays(self) -> dict:
        index, value, maps = self.top.result()
        bad = self.not_finite.units()
        row = {
            "threshold": self.thresholds.cpu().numpy(),
            "topk_index": index.to(torch.int32).cpu().numpy(),
            "topk_value": value.cpu().numpy(),
            "topk_map": maps.to(torch.float16).cpu().numpy(),
        }
        if self.counts is not None:
            iou = self.counts.iou().masked_fill(bad[:, None], float("nan"))
            row["iou"] = iou.to(torch.float16).cpu().numpy()
        return row


class _NotFinite(_Additive):
    """How many images had a NaN or Inf in each unit's map: `count` int64 (K,)."""

    _state = ("count",)

    def __init__(self, n_units: int, device: torch.device | str = "cpu"):
        self.count = torch.zeros(n_units, dtype=torch.int64, device=device)

    def add(self, mean: torch.Tensor) -> None:
        """Count a batch's responses (B, K): NaN where the map was not finite (no device sync)."""
        self.count += torch.isnan(mean).sum(0).to(self.count.device)

    def units(self) -> torch.Tensor:
        """(K,) bool: the units that had a NaN or Inf anywhere."""
        return self.count > 0
