"""Network Dissection (Bau et al. 2017) as additive accumulators: thresholds, IoU counts.

    acc = threshold_accumulator(n_units=K, n_values=N * h * w, q=0.005)
    for maps in probe_maps:               # first pass: (B, K, h, w) raw activations
        acc.add(maps)
    acc.all_reduce()
    thresholds = acc.thresholds()         # (K,)
    counts = IoUCounts(K, concept_category, n_categories=2)
    for maps, seg in probe_maps_and_segs: # second pass: seg (B, L, H, W) concept ids
        counts.add(maps, thresholds, seg)
    counts.all_reduce()
    iou = counts.iou()                    # (K, P) float32

Definitions (DESIGN.md, "Network Dissection"): the mask of unit k on image x is
its map bilinearly upsampled (`align_corners=False`) to the segmentation's size, then
`> T_k`; `IoU[k, c] = sum_x |M_k(x) & L_c(x)| / sum_x |M_k(x) | L_c(x)|` over the images
carrying at least one label of c's category. `L_c(x)` is the set of pixels that any
seg layer labels c. Image-level labels (scene, texture) are a seg layer filled with
one concept id, so they need no special case. Readouts without torch are in
`recorder.metrics`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from recorder.accumulators import _Additive
from recorder.dissect.labels import ConceptLabels
from recorder.dissect.quantile import (
    THRESHOLD_BUDGET_BYTES,
    TailSketch,
    TopValues,
    exact_quantile_thresholds,
    threshold_accumulator,
)

__all__ = [
    "THRESHOLD_BUDGET_BYTES",
    "ConceptLabels",
    "IoUCounts",
    "TailSketch",
    "TopValues",
    "exact_quantile_thresholds",
    "threshold_accumulator",
]

# Bilinear values are convex combinations of (at most 4 of) the map's values, computed
# in float: PyTorch's and ours differ from the exact ones by a few float32 epsilons of
# sum_i |w_i v_i| <= 2 max(map, 0) + |value|. A value further than
# tol = _ROUNDING * (2 max(map, 0) + |T|) from T is on the same side of T in both;
# closer, the map is counted with PyTorch's own F.interpolate.
_ROUNDING = 24 * torch.finfo(torch.float32).eps  # each side errs by <= ~6 eps * that sum
_CHUNK_PIXELS = 1 << 24  # upsampled pixels per chunk of maps sent to F.interpolate
_CHUNK_VALUES = 1 << 24  # map values per chunk of the run-length path (whole images)
METHODS = ("runs", "interpolate")  # IoUCounts(method=...): the same counts, two ways


class _Grid:
    """Where bilinear upsampling (align_corners=False) from n_in to n_out samples one axis.

    PyTorch's float32 arithmetic: output i reads inputs `low[i]` and `low[i] + 1` (clamped)
    with weight `weight[i]` on the second, at source coordinate `src[i] = low + weight`
    (non-decreasing). Outputs reading the same `low = j` form band j: `start[j]:end[j]`.
    """

    def __init__(self, n_in: int, n_out: int, device: torch.device):
        self.scale = float(torch.tensor(n_in, dtype=torch.float32) / n_out)
        src = (self.scale * (torch.arange(n_out, dtype=torch.float32) + 0.5) - 0.5).clamp(min=0)
        low = src.floor().long().clamp(max=n_in - 1)
        bands = torch.arange(n_in)
        weight = (src - low).clamp(0, 1)
        start = torch.searchsorted(low, bands)
        end = torch.searchsorted(low, bands, right=True)
        self.weight, self.start, self.end = weight.to(device), start.to(device), end.to(device)
        self.high = (bands + 1).clamp(max=n_in - 1).to(device)
        # per band, its outputs and their weights padded to the longest band (weight NaN)
        offsets = torch.arange(int((end - start).max()))
        index = start[:, None] + offsets
        valid = index < end[:, None]
        self.band_index = torch.where(valid, index, 0).to(device)  # (n_in, longest band)
        self.band_weight = torch.where(valid, weight[index.clamp(max=n_out - 1)], float("nan")).to(device)
        # the weights of each band's first and last output (NaN for an empty band)
        nonempty = end > start
        self.first_weight = torch.where(nonempty, weight[start.clamp(max=n_out - 1)], float("nan")).to(device)
        self.last_weight = torch.where(nonempty, weight[(end - 1).clamp(min=0)], float("nan")).to(device)

    def first_above(self, key: torch.Tensor) -> torch.Tensor:
        """The first output whose source coordinate is > key, up to rounding (callers certify)."""
        x = torch.floor((key + 0.5) / self.scale - 0.5) + 1
        return torch.where(key < 0, 0.0, x).clamp(-1, self.weight.numel() + 1).long()


def _take(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return values.reshape(-1).index_select(0, index)


def _runs(maps: torch.Tensor, thresholds: torch.Tensor, tol: torch.Tensor, rows: _Grid, cols: _Grid,
          row_max: torch.Tensor):
    """Active pixels (upsampled value > T) of maps (n, h, w) with row maxima `row_max` (n, h),
    as runs along output rows.

    Returns `(map, y, lo, hi, unsure)`: map `map[r]` is active on output row `y[r]` at
    columns `lo[r]:hi[r]` (one run per row and column band, possibly empty), and
    `unsure` (n,) bool marks maps with a pixel within `tol` of T: their runs are not
    certified and must be counted another way.

    Why the runs are exact: in the cell between 4 input values, an output row is affine
    in the column weight, between its values `left` (weight 0) and `right` (weight 1),
    and the cell's outputs are largest at a corner of their rectangle (first or last
    output row and column). Cells whose 4 input values or 4 corner outputs, and rows
    whose first and last outputs, are all below `T - tol` have no pixel above T (each
    value computed here errs by less than `tol / 2`, as PyTorch's do). Otherwise the
    row's active pixels are a prefix or a suffix of the
    band (monotone), located analytically and certified by the two pixels either side
    of the cut (both ends of the band when it is all or nothing): they are further than
    `tol` from T, so on the same side in PyTorch's arithmetic, and every other pixel of
    the row is further still.
    """
    n, h, w = maps.shape
    device = maps.device
    # cells: (row band i, column band j) read corners (i|i+1, j|j+1) (the last row and
    # column read themselves twice); skip the cells whose 4 corners are below T - tol,
    # first by whole row bands (the max of rows i and i+1; NaN: look closer), then by cell
    lowest = thresholds - tol  # (n,)
    band_max = torch.maximum(row_max, row_max.index_select(1, rows.high))  # (n, h)
    band = (~(band_max <= lowest[:, None]) & (rows.end > rows.start)).reshape(-1).nonzero()[:, 0]
    flat_rows = maps.reshape(n * h, w)
    band_row = band % h
    second = band + rows.high.index_select(0, band_row) - band_row  # row i+1 of band i
    upper, lower = flat_rows.index_select(0, band), flat_rows.index_select(0, second)  # (bands, w)
    # the band's first and last output rows, at the input columns: a cell's outputs lie between
    first_y, last_y = (y.index_select(0, band_row).to(maps.dtype)[:, None]
                       for y in (rows.first_weight, rows.last_weight))
    pair = torch.maximum(torch.lerp(upper, lower, first_y), torch.lerp(upper, lower, last_y))  # (bands, w)
    corner_max = torch.maximum(pair, pair.index_select(1, cols.high))  # (bands, w)
    which, band_j = ((corner_max > lowest.index_select(0, band // h)[:, None])
                     & (cols.end > cols.start)).nonzero(as_tuple=True)
    cell = band.index_select(0, which) * w + band_j  # flat (map, i, j), ascending
    cell_map, band_i = cell // (h * w), cell // w % h
    right_step = cols.high.index_select(0, band_j) - band_j  # 0 or 1
    down_step = (rows.high.index_select(0, band_i) - band_i) * w
    v00, v10, v01, v11 = (_take(maps, index) for index in (cell, cell + down_step, cell + right_step,
                                                            cell + down_step + right_step))
    # a bilinear function is largest at a corner of the rectangle of a cell's outputs (first
    # and last row and column of its bands): cells whose 4 are below T - tol have none above T
    floor = lowest.index_select(0, cell_map)
    first_x, last_x = (x.index_select(0, band_j).to(maps.dtype) for x in (cols.first_weight, cols.last_weight))
    largest = torch.full_like(floor, float("-inf"))
    for weight in (rows.first_weight, rows.last_weight):
        wy = weight.index_select(0, band_i).to(maps.dtype)
        at_left, at_right = torch.lerp(v00, v10, wy), torch.lerp(v01, v11, wy)
        largest = torch.maximum(largest, torch.maximum(torch.lerp(at_left, at_right, first_x),
                                                       torch.lerp(at_left, at_right, last_x)))
    keep = (largest > floor).nonzero()[:, 0]  # NaN: False, as every output it touches is NaN
    cell_map, band_i, band_j, floor, first_x, last_x, v00, v10, v01, v11 = (
        v.index_select(0, keep) for v in (cell_map, band_i, band_j, floor, first_x, last_x, v00, v10, v01, v11))
    # output rows of each cell: values at column weight 0 (left) and 1 (right); a row is
    # affine in the weight, so rows whose first and last outputs are below T - tol are skipped
    ly = rows.band_weight.index_select(0, band_i).to(maps.dtype)  # (cells, longest band)
    left = torch.lerp(v00[:, None], v10[:, None], ly)
    right = torch.lerp(v01[:, None], v11[:, None], ly)
    ends = torch.maximum(torch.lerp(left, right, first_x[:, None]), torch.lerp(left, right, last_x[:, None]))
    entry = (ends > floor[:, None]).reshape(-1).nonzero()[:, 0]  # NaN padding: False
    longest = ly.shape[1]
    row_cell = entry // longest
    y = _take(rows.band_index, band_i.index_select(0, row_cell) * longest + entry % longest)
    left, right = _take(left, entry), _take(right, entry)
    m = cell_map.index_select(0, row_cell)
    band = band_j.index_select(0, row_cell)
    t, margin = thresholds.index_select(0, m), tol.index_select(0, m)
    slope = right - left
    rising, falling = slope > 0, slope < 0
    xs, xe = cols.start.index_select(0, band), cols.end.index_select(0, band)
    key = (band.to(slope.dtype) + (t - left) / torch.where(slope == 0, 1.0, slope)).float()
    cut = cols.first_above(key)
    lo = torch.where(rising, torch.maximum(torch.minimum(cut, xe), xs), xs)
    hi = torch.where(falling, torch.maximum(torch.minimum(cut, xe), xs), xe)
    hi = torch.where(rising | falling, hi, torch.where(left > t, xe, xs))
    # certify: partial runs by the pixels either side of the cut, others by both ends
    everything, nothing = (lo == xs) & (hi == xe), lo == hi
    partial = ~(everything | nothing)
    p1 = torch.where(partial, torch.where(rising, lo - 1, hi - 1), xs)
    p2 = torch.where(partial, torch.where(rising, lo, hi), xe - 1)
    on1 = torch.where(partial, falling, everything)
    on2 = torch.where(partial, rising, everything)
    sure = torch.ones_like(rising)
    for p, on in ((p1, on1), (p2, on2)):
        d = torch.lerp(left, right, cols.weight.index_select(0, p).to(left.dtype)) - t
        sure &= torch.where(on, d > margin, d <= -margin)
    unsure = torch.zeros(n, dtype=torch.bool, device=device)
    unsure[m[~sure]] = True
    return m, y, lo, hi, unsure


class IoUCounts(_Additive):
    """Intersection and union counts of unit masks and concept labels, summed over images.

        counts = IoUCounts(n_units=512, concept_category=torch.tensor([0, 0, 1]), n_categories=2)
        counts.add(maps, thresholds, seg)    # (B, K, h, w), (K,), (B, L, H, W) ids 1..P, 0 = none
        counts.iou()                         # (K, P) float32; 0 where the union is empty

    State (all int64 sums): `intersection` (K, P) pixels in both M_k and L_c; `active`
    (K, G) pixels of M_k summed over the images that carry category g; `label` (P,)
    pixels of L_c; `images_with_category` (G,). The union is derived:
    `active[k, cat(c)] + label[c] - intersection[k, c]`.

    Speed: `method="runs"` (default) never upsamples: only the cells between 4 map
    values whose max can exceed T_k are looked at (bilinear values never exceed their
    corners), and in them, per output row, the run of columns above T_k is found
    analytically (see `_runs`), leaving the rare map with a pixel within float rounding
    of T_k to F.interpolate, so that the counts equal `method="interpolate"` (every map
    whose max can exceed T_k through F.interpolate) exactly. Maps at the segmentation's
    size are compared directly, in the rows whose max can exceed T_k. Intersections are
    `bincount`s over `k * (P + 1) + concept` of the active pixels, one per seg layer.
    Passing the batch's `ConceptLabels` instead of seg shares the label work between layers.
    """

    _state = ("intersection", "active", "label", "images_with_category")

    def __init__(self, n_units: int, concept_category: torch.Tensor, n_categories: int,
                 device: torch.device | str = "cpu", method: str = "runs"):
        if method not in METHODS:
            raise ValueError(f"method {method!r} is not one of {METHODS}")
        self.method = method
        self._grids: dict[tuple, tuple[_Grid, _Grid]] = {}
        concept_category = torch.as_tensor(concept_category, dtype=torch.int64, device=device)
        if concept_category.dim() != 1:
            raise ValueError(f"concept_category must be 1-D (P,), got shape {tuple(concept_category.shape)}")
        if concept_category.numel() and not (0 <= int(concept_category.min())
                                             and int(concept_category.max()) < n_categories):
            raise ValueError(f"concept_category values must be in [0, {n_categories}), "
                             f"got {concept_category.unique().tolist()}")
        self.n_units, self.n_categories = n_units, n_categories
        self.n_concepts = concept_category.numel()
        self.concept_category = concept_category
        p, g = self.n_concepts, n_categories
        self.intersection = torch.zeros(n_units, p, dtype=torch.int64, device=device)
        self.active = torch.zeros(n_units, g, dtype=torch.int64, device=device)
        self.label = torch.zeros(p, dtype=torch.int64, device=device)
        self.images_with_category = torch.zeros(g, dtype=torch.int64, device=device)

    def to_(self, device: torch.device | str) -> None:
        super().to_(device)
        self.concept_category = self.concept_category.to(device)
        self._grids = {}

    def _check(self, maps: torch.Tensor, thresholds: torch.Tensor, seg: torch.Tensor) -> None:
        k = self.n_units
        if maps.dim() != 4 or maps.shape[1] != k:
            raise ValueError(f"maps must have shape (B, {k}, h, w), got {tuple(maps.shape)}")
        if tuple(thresholds.shape) != (k,):
            raise ValueError(f"thresholds must have shape ({k},), got {tuple(thresholds.shape)}")
        if seg.shape[0] != maps.shape[0]:
            raise ValueError(f"seg must have shape ({maps.shape[0]}, L, H, W), got {tuple(seg.shape)}")

    def add(self, maps: torch.Tensor, thresholds: torch.Tensor, seg: torch.Tensor | ConceptLabels,
            row_max: torch.Tensor | None = None) -> None:
        """Count a batch: maps (B, K, h, w) raw activations, thresholds (K,), seg (B, L, H, W)
        or the batch's `ConceptLabels` (prepared once for every layer); `row_max`, the maps'
        row maxima (B, K, h) (`maps.amax(3)`), when already known."""
        device = self.intersection.device
        if isinstance(seg, ConceptLabels):
            labels = seg
            if not labels.matches(self.concept_category, self.n_categories):
                raise ValueError("ConceptLabels were prepared for other concepts than these counts' "
                                 f"{self.n_concepts} concepts in {self.n_categories} categories")
            labels = labels if labels.seg.device == device else ConceptLabels(
                labels.seg.to(device), self.concept_category, self.n_categories)
        else:
            labels = ConceptLabels(seg.to(device), self.concept_category, self.n_categories)
        thresholds = thresholds.to(device=device, dtype=torch.float32)
        self._check(maps, thresholds, labels.seg)
        seg, carried = labels.seg, labels.carried  # (B, L, H, W) int32, (B, G) bool
        self.label += labels.per_image.sum(0)
        self.images_with_category += carried.sum(0)

        maps = maps.to(device=device, dtype=torch.float64 if maps.dtype == torch.float64 else torch.float32)
        maps = maps.contiguous()  # (B, K, h, w)
        row_max = maps.amax(3) if row_max is None else row_max.to(device=device, dtype=maps.dtype)  # (B, K, h)
        labelled = carried.any(1)  # (B,) images with any label: the others count nothing
        if maps.shape[2:] == seg.shape[2:]:  # same size: bilinear upsampling is the identity
            self._count_same_size(maps, thresholds, labels, labelled, row_max)
            return
        # maps whose max is within rounding of T_k or above can cross it (bilinear values
        # never exceed the map's max); a map with a NaN has no max and tol = inf: it goes
        # to F.interpolate, whose NaN pixels are not above T_k and the others count
        high = row_max.amax(2)  # (B, K), NaN where a map has one
        tol = ((2 * high.clamp(min=0) + thresholds.abs()) * _ROUNDING).nan_to_num(nan=float("inf"))
        if self.method == "runs":
            self._count_runs(maps, thresholds, tol, labels, labelled, row_max)
        else:
            crossing = ~(high <= thresholds - tol) & labelled[:, None]  # (B, K)
            images, units = crossing.nonzero(as_tuple=True)
            self._count_interpolated(maps, thresholds, labels, images, units)

    def _grid(self, maps: torch.Tensor, seg: torch.Tensor) -> tuple[_Grid, _Grid]:
        key = (*maps.shape[2:], *seg.shape[2:])
        if key not in self._grids:
            h, w, height, width = key
            self._grids[key] = (_Grid(h, height, maps.device), _Grid(w, width, maps.device))
        return self._grids[key]

    def _count_runs(self, maps, thresholds, tol, labels: ConceptLabels, labelled, row_max) -> None:
        """Count every map of the batch from its certified runs of active pixels."""
        seg, carried = labels.seg, labels.carried
        rows, cols = self._grid(maps, seg)
        n_images, n_units, h, w = maps.shape
        height, width = seg.shape[2:]
        limit = thresholds.expand(n_images, n_units).masked_fill(~labelled[:, None], float("inf"))
        per_chunk = max(1, _CHUNK_VALUES // (n_units * h * w))  # images
        for first in range(0, n_images, per_chunk):
            part = slice(first, first + per_chunk)
            n = maps[part].shape[0] * n_units
            m, y, lo, hi, unsure = _runs(maps[part].reshape(n, h, w), limit[part].reshape(n), tol[part].reshape(n),
                                         rows, cols, row_max[part].reshape(n, h))  # m: image * K + unit
            if bool(unsure.any()):  # rare: a pixel within rounding of T, leave it to F.interpolate
                flat = unsure.nonzero()[:, 0]
                self._count_interpolated(maps, thresholds, labels,
                                         first + torch.div(flat, n_units, rounding_mode="floor"),
                                         flat % n_units)
                keep = (~unsure).index_select(0, m).nonzero()[:, 0]
                m, y, lo, hi = (v.index_select(0, keep) for v in (m, y, lo, hi))
            length = hi - lo
            area = torch.zeros(n, dtype=torch.int64, device=m.device).index_add_(0, m, length)
            self.active += (area.view(-1, n_units, 1) * carried[part, None, :]).sum(0)  # (K, G)
            # one index per active pixel: (image, y, x), and unit * (P + 1)
            keep = (length > 0).nonzero()[:, 0]
            m, y, lo, length = (v.index_select(0, keep) for v in (m, y, lo, length))
            small = seg.numel() + int(length.sum()) < 2**31 and n_units * (self.n_concepts + 1) < 2**31
            index = torch.int32 if small else torch.int64
            image = first + torch.div(m, n_units, rounding_mode="floor")
            start = (image * height + y) * width + lo - (torch.cumsum(length, 0) - length)
            pixel = torch.repeat_interleave(start.to(index), length)
            pixel += torch.arange(pixel.numel(), device=pixel.device, dtype=index)
            unit = torch.repeat_interleave(((m % n_units) * (self.n_concepts + 1)).to(index), length)
            self._add_pairs(unit, pixel, labels)

    def _count_same_size(self, maps, thresholds, labels: ConceptLabels, labelled, row_max) -> None:
        """Maps at the segmentation's size: the active pixels are the values > T_k, found
        row by row (only the rows whose max is not <= T_k are compared value by value)."""
        n_images, n_units, h, w = maps.shape
        carried = labels.carried
        limit = thresholds.expand(n_images, n_units).masked_fill(~labelled[:, None], float("inf"))
        rows = maps.reshape(-1, w)  # (B * K * h, w)
        top = row_max  # (B, K, h), NaN where a row has one: compare its values
        row = (~(top <= limit[:, :, None])).view(-1).nonzero()[:, 0]
        mask = rows.index_select(0, row) > limit.view(-1).index_select(
            0, torch.div(row, h, rounding_mode="floor"))[:, None]  # (rows, w)
        which, x = mask.nonzero(as_tuple=True)
        row = row.index_select(0, which)
        m, y = torch.div(row, h, rounding_mode="floor"), row % h  # m: image * K + unit
        area = torch.bincount(m, minlength=n_images * n_units).view(n_images, n_units)
        self.active += (area[:, :, None] * carried[:, None, :]).sum(0)  # (K, G)
        image = torch.div(m, n_units, rounding_mode="floor")
        pixel = (image * h + y) * w + x  # flat (image, y, x)
        self._add_pairs((m % n_units) * (self.n_concepts + 1), pixel, labels)

    def _add_pairs(self, unit: torch.Tensor, pixel: torch.Tensor, labels: ConceptLabels) -> None:
        """Intersections: bincount of `unit + label` over active pixels and seg layers
        (unit = k * (P + 1), pixel = flat (image, y, x))."""
        width_p = self.n_concepts + 1
        if labels.seg.shape[1] == 0 or pixel.numel() == 0:
            return
        pairs = labels.ids(pixel) + unit  # (L, n)
        both = torch.bincount(pairs.reshape(-1), minlength=self.n_units * width_p)
        self.intersection += both.reshape(self.n_units, width_p)[:, 1:]

    def _count_interpolated(self, maps, thresholds, labels: ConceptLabels, images, units) -> None:
        """Upsample the maps of (images[i], units[i]) with F.interpolate, in chunks, and count."""
        chunk = max(1, _CHUNK_PIXELS // (labels.seg.shape[2] * labels.seg.shape[3]))
        for start in range(0, images.numel(), chunk):
            part = slice(start, start + chunk)
            self._count_upsampled(maps, thresholds, labels, images[part], units[part])

    def _count_upsampled(self, maps, thresholds, labels: ConceptLabels, images, units) -> None:
        seg, carried = labels.seg, labels.carried
        size = seg.shape[2:]
        up = maps[images, units][:, None]  # (n, 1, h, w)
        if up.shape[2:] != size:
            up = F.interpolate(up, size=size, mode="bilinear", align_corners=False)  # (n, 1, H, W)
        mask = up.reshape(images.numel(), -1) > thresholds[units][:, None]  # (n, H*W)
        which, pixels = mask.nonzero(as_tuple=True)
        area = torch.bincount(which, minlength=images.numel())  # (n,)
        self.active.index_add_(0, units, carried[images].to(torch.int64) * area[:, None])
        pixel = images[which] * seg[0, 0].numel() + pixels  # flat (image, y, x)
        self._add_pairs(units[which] * (self.n_concepts + 1), pixel, labels)

    def iou(self) -> torch.Tensor:
        """(K, P) float32 IoU of each unit's mask with each concept; 0 where the union is 0."""
        union = self.active[:, self.concept_category] + self.label[None, :] - self.intersection
        iou = self.intersection.to(torch.float64) / union.clamp(min=1).to(torch.float64)
        return torch.where(union > 0, iou, 0.0).to(torch.float32)
