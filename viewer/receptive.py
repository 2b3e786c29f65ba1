"""Occlusion as the viewer shows it: RF sizes over training, a unit's maps and RF (numpy, no Dash).

    series = rf_series(run, "conv4")           # per occluded checkpoint: median and quartiles of rf_size
    detail = unit_occlusion(run, "conv4", unit=3, t=-1)   # the unit's maps, RF and RF size over training
    pixels = pixel_map(maps, 64, 64, patch=8, stride=4)   # (k, gh, gw) -> (k, 64, 64)

Occlusion runs every few checkpoints (NaN rows between): a unit's detail at checkpoint
t shows the latest occluded checkpoint at or before t. Pixel maps follow DESIGN.md
("Occlusion"): each grid value spread over its square, averaged where squares overlap.
The run store does not keep the probe's input size, so it is inferred from the grid:
the thumbnail's side when that gives the grid, else the smallest side that does.
"""

from __future__ import annotations

import math

import numpy as np

from recorder.store import Run

__all__ = ["has_occlusion", "input_side", "pixel_map", "rf_series", "theoretical_size", "unit_occlusion"]

STRIP = 10  # RF images at most in a unit's strip over training


def _sizes(run: Run, layer: str) -> np.ndarray | None:
    try:
        return np.asarray(run.layer(layer).rf_size, dtype=np.float64)  # (T, K)
    except KeyError:
        return None


def has_occlusion(run: Run, layer: str) -> bool:
    """Whether the layer has occlusion rows (recorded or added afterwards)."""
    sizes = _sizes(run, layer)
    return sizes is not None and bool(np.isfinite(sizes).any())


def theoretical_size(run: Run, layer: str) -> float | None:
    """The side of the layer's theoretical receptive field in input pixels (the larger axis), if stored."""
    rf = run.layer(layer).theoretical_rf
    size = (rf or {}).get("size")
    return float(max(size)) if size else None


def rf_series(run: Run, layer: str) -> dict | None:
    """`{"x": steps, "median", "lo", "hi" (25 / 75 %), "units": counted per step, "theoretical"}` of the
    layer's `rf_size` at its occluded checkpoints; None without occlusion."""
    sizes = _sizes(run, layer)
    if sizes is None:
        return None
    rows = np.flatnonzero(np.isfinite(sizes).any(axis=1))
    if not len(rows):
        return None
    kept = sizes[rows]
    lo, median, hi = np.nanpercentile(kept, [25, 50, 75], axis=1)
    return {"x": [int(s) for s in run.steps[rows]], "median": median.tolist(), "lo": lo.tolist(),
            "hi": hi.tolist(), "units": np.isfinite(kept).sum(axis=1).tolist(),
            "theoretical": theoretical_size(run, layer)}


def input_side(grid: int, patch: int, stride: int, thumb: int | None = None) -> int:
    """The image side that gives `grid` occluder positions: `thumb` if it does, else the smallest that does."""
    def cells(side):
        return math.ceil((side - patch) / stride) + 1

    if thumb is not None and thumb >= patch and cells(thumb) == grid:
        return int(thumb)
    return int(patch + (grid - 1) * stride)


def pixel_map(maps, height: int, width: int, patch: int, stride: int) -> np.ndarray:
    """float64 `(..., height, width)`: each cell's value spread over its square (cut by the border),
    averaged where squares overlap; pixels no finite value covers are NaN."""
    maps = np.asarray(maps, dtype=np.float64)
    gh, gw = maps.shape[-2:]
    total = np.zeros((*maps.shape[:-2], height, width))
    count = np.zeros((height, width))
    for i in range(gh):
        for j in range(gw):
            r, c = i * stride, j * stride
            total[..., r:r + patch, c:c + patch] += np.nan_to_num(maps[..., i, j, None, None])
            count[r:r + patch, c:c + patch] += 1
    with np.errstate(invalid="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def unit_occlusion(run: Run, layer: str, unit: int, t: int) -> dict | None:
    """One unit's occlusion at the latest occluded checkpoint at or before row t, and over training.

    `{"t", "step", "maps" (k, gh, gw), "index" (k,) top images, "rf" (2gh-1, 2gw-1), "rf_size",
    "theoretical", "patch", "stride", "steps"/"sizes" (every occluded checkpoint of the unit),
    "strip": [{"step", "rf"}] (at most STRIP, evenly spread, the shown one included)}`; None when
    the unit has no occlusion at all, {"first": step} when none yet at row t."""
    sizes = _sizes(run, layer)
    if sizes is None:
        return None
    rec = run.layer(layer)
    rows = np.flatnonzero(np.isfinite(sizes[:, unit]))
    if not len(rows):
        return None
    before = rows[rows <= t]
    if not len(before):
        return {"first": int(run.steps[rows[0]])}
    row = int(before[-1])
    settings = rec.occlusion_settings or {}
    rf = np.asarray(rec.rf[:, unit], dtype=np.float32)  # (T, 2gh-1, 2gw-1)
    picks = rows[np.unique(np.linspace(0, len(rows) - 1, min(STRIP, len(rows))).round().astype(int))]
    picks = np.union1d(picks, [row]) if row not in picks else picks
    return {
        "t": row, "step": int(run.steps[row]), "maps": np.asarray(rec.occlusion[row, unit], np.float32),
        "index": np.asarray(rec.topk_index[row, unit]) if rec.has("topk_index") else None,
        "rf": rf[row], "rf_size": float(sizes[row, unit]), "theoretical": theoretical_size(run, layer),
        "patch": int(settings.get("patch", 1)), "stride": int(settings.get("stride", 1)),
        "steps": [int(s) for s in run.steps[rows]], "sizes": sizes[rows, unit].tolist(),
        "strip": [{"step": int(run.steps[r]), "rf": rf[r]} for r in picks],
    }
