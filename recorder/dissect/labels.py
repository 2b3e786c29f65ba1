"""One batch's concept labels, prepared once and shared by every layer's IoU counts.

    labels = ConceptLabels(seg, concept_category, n_categories)  # seg (B, L, H, W) ids 1..P, 0 = none
    for counts, maps in zip(layer_counts, layer_maps):
        counts.add(maps, thresholds, labels)                     # the same as passing seg itself

`L_c(x)` is the set of pixels that any seg layer labels c, so a label that an
earlier layer already gives the same pixel is dropped once here (`seg`, int32), with
the label pixels per image (`per_image`, (B, P)) and the categories each image
carries (`carried`, (B, G) bool): none of it depends on the layer.
"""

from __future__ import annotations

import torch

__all__ = ["ConceptLabels"]


def _distinct_labels(seg: torch.Tensor) -> torch.Tensor:
    """An int32 copy of seg (B, L, H, W) in which a label that an earlier layer already
    gives the same pixel is zeroed, so that L_c(x) is a set of pixels."""
    out = seg.to(torch.int32, copy=True)
    for layer in range(1, seg.shape[1]):
        repeated = out[:, layer] == out[:, 0]
        for earlier in range(1, layer):
            repeated |= out[:, layer] == out[:, earlier]
        out[:, layer].masked_fill_(repeated, 0)
    return out


class ConceptLabels:
    """Segmentations of a batch with the per-image sums that IoU counting needs.

        labels = ConceptLabels(torch.zeros(2, 1, 8, 8, dtype=torch.long), torch.tensor([0, 1]), 2)
        labels.seg, labels.per_image, labels.carried   # (2, 1, 8, 8) int32, (2, 2), (2, 2) bool
        labels.ids(torch.tensor([0, 5]))                # (1, 2): the ids of pixels 0 and 5, per layer

    Counting reads the L ids of each active pixel (b, y, x), flat `(b * H + y) * W + x`:
    from `packed` (B * H * W,) int64, which holds them in one number (layer l at bits
    `l * bits`) when they fit 62 bits, else from `pixels` (B * H * W, L), a pixel's ids
    side by side.
    """

    def __init__(self, seg: torch.Tensor, concept_category: torch.Tensor, n_categories: int):
        n_concepts = concept_category.numel()
        if seg.dim() != 4:
            raise ValueError(f"seg must have shape (B, L, H, W), got {tuple(seg.shape)}")
        if seg.dtype.is_floating_point or seg.dtype == torch.bool:
            raise ValueError(f"seg must hold integer concept ids, got dtype {seg.dtype}")
        low, high = seg.aminmax() if seg.numel() else (torch.tensor(0), torch.tensor(0))
        if int(low) < 0 or int(high) > n_concepts:
            raise ValueError(f"seg ids must be in [0, {n_concepts}] (0 = unlabeled), "
                             f"got [{int(low)}, {int(high)}]")
        device, n_images, width = seg.device, seg.shape[0], n_concepts + 1  # ids 0..P
        n_layers = seg.shape[1]
        self.concept_category, self.n_categories = concept_category.to(device), n_categories
        self.seg = _distinct_labels(seg)  # (B, L, H, W) int32, a copy
        offsets = torch.arange(n_images, device=device, dtype=torch.int32)[:, None] * width
        self.per_image = torch.bincount((self.seg.reshape(n_images, -1) + offsets).reshape(-1),
                                        minlength=n_images * width).reshape(n_images, width)[:, 1:]  # (B, P)
        carried = torch.zeros(n_images, n_categories, dtype=torch.int64, device=device)
        self.carried = carried.index_add_(1, self.concept_category, self.per_image) > 0  # (B, G)
        self.bits = max(1, n_concepts.bit_length())  # per id 0..P
        self.packed = self.pixels = None
        if n_layers * self.bits <= 62:
            self.packed = torch.zeros(seg.shape[0], *seg.shape[2:], dtype=torch.int64, device=device)  # (B, H, W)
            for layer in range(n_layers):
                self.packed |= self.seg[:, layer].to(torch.int64) << (layer * self.bits)
            self.packed = self.packed.view(-1)
        else:
            self.pixels = self.seg.permute(0, 2, 3, 1).reshape(-1, n_layers)  # (B * H * W, L), a copy

    def ids(self, pixel: torch.Tensor) -> torch.Tensor:
        """(L, n) int64: the ids of pixels `pixel` (n,) (flat (b, y, x)) in each layer."""
        if self.packed is None:
            return self.pixels.index_select(0, pixel).T.to(torch.int64)
        codes = self.packed.index_select(0, pixel)  # (n,)
        shifts = torch.arange(self.seg.shape[1], device=codes.device, dtype=codes.dtype) * self.bits
        return (codes[None, :] >> shifts[:, None]) & ((1 << self.bits) - 1)

    def matches(self, concept_category: torch.Tensor, n_categories: int) -> bool:
        """Whether these labels were prepared for the given concepts."""
        return (n_categories == self.n_categories
                and torch.equal(concept_category.to(self.concept_category.device), self.concept_category))
