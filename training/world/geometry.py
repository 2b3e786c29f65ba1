"""Vectorized drawing: object frames, implicit-equation shapes and texture masks.

A `Frame` is the pixel window an object covers plus its local coordinates `x`, `y`
in units of the object's half-height (y points down, the object spans
`|x| <= aspect`, `|y| <= 1`). Without rotation `x` is a row `(1, w)` and `y` a column
`(h, 1)`, so a test on one coordinate costs a 1-D operation and numpy broadcasts to
the window only where two are combined. Shapes are boolean masks from inequalities
(ellipses, boxes, half-planes); textures are index arithmetic on pixel coordinates.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np


@lru_cache(maxsize=8)
def pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel rows `(size, 1)` and columns `(1, size)` as int64 (read-only)."""
    rows = np.arange(size).reshape(size, 1)
    cols = np.arange(size).reshape(1, size)
    rows.flags.writeable = cols.flags.writeable = False
    return rows, cols


class Frame:
    """The window `(rows, cols)` of an object centred at `(cx, cy)` px with half-height `s` px.

    `aspect` is half-width / half-height; `angle` (radians) rotates the object
    clockwise on screen; `flip` mirrors it left-right.
    """

    def __init__(self, size: int, cx: float, cy: float, s: float, aspect: float,
                 angle: float = 0.0, flip: bool = False):
        c, si = math.cos(angle), math.sin(angle)
        ext_x = abs(c) * aspect * s + abs(si) * s
        ext_y = abs(si) * aspect * s + abs(c) * s
        y0, y1 = max(0, math.floor(cy - ext_y)), min(size, math.ceil(cy + ext_y) + 1)
        x0, x1 = max(0, math.floor(cx - ext_x)), min(size, math.ceil(cx + ext_x) + 1)
        self.window = (slice(y0, y1), slice(x0, x1))
        self.shape = (max(0, y1 - y0), max(0, x1 - x0))
        rows, cols = pixel_grid(size)
        self.rows, self.cols = rows[y0:y1], cols[:, x0:x1]  # absolute pixel indices
        dy = (self.rows + 0.5 - cy) / s  # (h, 1)
        dx = (self.cols + 0.5 - cx) / s  # (1, w)
        if angle:
            x, y = c * dx + si * dy, -si * dx + c * dy  # (h, w) each
        else:
            x, y = dx, dy
        self.x = -x if flip else x
        self.y = y
        self.aspect = aspect

    @property
    def empty(self) -> bool:
        return self.shape[0] == 0 or self.shape[1] == 0


# ---------------------------------------------------------------- shapes
def box(x, y, x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
    """`x0 <= x <= x1` and `y0 <= y <= y1`."""
    return ((x >= x0) & (x <= x1)) & ((y >= y0) & (y <= y1))


def ellipse(x, y, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    """Inside the axis-aligned ellipse centred at `(cx, cy)` with radii `rx`, `ry`."""
    return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1.0


def circle(x, y, cx: float, cy: float, r: float) -> np.ndarray:
    return (x - cx) ** 2 + (y - cy) ** 2 <= r * r


def triangle(x, y, p0, p1, p2) -> np.ndarray:
    """Inside the triangle with corners `p0, p1, p2` (three half-planes, either winding)."""
    (ax, ay), (bx, by), (cx, cy) = p0, p1, p2
    sign = 1.0 if (bx - ax) * (cy - ay) - (by - ay) * (cx - ax) >= 0 else -1.0
    inside = None
    for (px, py), (qx, qy) in ((p0, p1), (p1, p2), (p2, p0)):
        # (q - p) x (point - p) >= 0 for points left of the edge p -> q
        side = sign * ((qx - px) * (y - py) - (qy - py) * (x - px)) >= 0
        inside = side if inside is None else inside & side
    return inside


def polar(x, y, cx: float, cy: float) -> tuple[np.ndarray, np.ndarray]:
    """Squared radius and angle around `(cx, cy)`."""
    dx, dy = x - cx, y - cy
    return dx * dx + dy * dy, np.arctan2(dy, dx)


# ---------------------------------------------------------------- textures
@lru_cache(maxsize=64)
def _dot_tile(period: int, radius: float) -> np.ndarray:
    r = np.arange(period) + 0.5 - period / 2
    return r[:, None] ** 2 + r[None, :] ** 2 <= radius * radius


def texture_mask(texture: str, rows: np.ndarray, cols: np.ndarray, rng, scale: float) -> np.ndarray:
    """Pattern pixels (True) of `texture` over the window `rows (h, 1) x cols (1, w)`.

    Patterns are anchored to the image grid; `scale` is image size / 64, so a
    pattern keeps its look at other sizes. `plain` has no pattern pixels.
    """
    if texture == "stripes":
        period = max(2, round((3 + 4 * rng.random()) * scale))
        width = max(1, period // 2)
        phase = int(rng.random() * period)
        kind = rng.random()
        if kind < 0.35:
            return (rows + phase) % period < width  # horizontal, (h, 1)
        if kind < 0.7:
            return (cols + phase) % period < width  # vertical, (1, w)
        sign = 1 if kind < 0.85 else -1
        return (rows + sign * cols + phase) % period < width  # diagonal
    if texture == "dots":
        period = max(3, round((4 + 4 * rng.random()) * scale))
        tile = _dot_tile(period, period * (0.28 + 0.1 * rng.random()))
        py, px = int(rng.random() * period), int(rng.random() * period)
        return tile[((rows[:, 0] + py) % period)[:, None], ((cols[0] + px) % period)[None, :]]
    if texture == "checker":
        q = max(2, round((2 + 3 * rng.random()) * scale))
        py, px = int(rng.random() * q), int(rng.random() * q)
        return ((rows + py) // q + (cols + px) // q) % 2 == 0
    if texture == "plain":
        return np.zeros((1, 1), dtype=bool)
    raise ValueError(f"texture {texture!r} is not one of plain, stripes, dots, checker")
