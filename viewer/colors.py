"""Tile colors: hue = dominant class, saturation = selectivity (numpy only).

    >>> rgb = tile_rgb(dominant=[1], selectivity=[0.5], dead=[False], n_classes=4)
    >>> rgb.tolist()   # hue 1/4, saturation 0.5, value 0.9
    [[172, 230, 115]]

Class c of C gets the hue c / C (evenly spaced around the color wheel); the
saturation is the selectivity clipped to [0, 1] (0 = gray, 1 = full color), and
the value is fixed at `VALUE`. Dead units are dark gray; a unit without a dominant
class or with NaN selectivity is mid gray.

In the browser, tiles are colored by table lookup: the server sends per tile a
class code (`dominant_codes`) and a saturation code (`saturation_codes`: the
selectivity in hundredths, or `SAT_DEAD` / `SAT_NAN`), plus `palette(C)`, the RGB
of every (class, saturation code) pair. So this module is the only place where the
HSV mapping is computed, and `tile_rgb` is exactly what the browser paints.
"""

from __future__ import annotations

import numpy as np

__all__ = ["DEAD_RGB", "NAN_RGB", "SAT_DEAD", "SAT_LEVELS", "SAT_NAN", "VALUE", "class_hex", "class_rgb",
           "dominant_codes", "hsv_to_rgb", "no_class_code", "palette", "saturation_codes", "tile_rgb", "to_hex"]

VALUE = 0.9  # HSV value of every live tile
SAT_LEVELS = 100  # saturation is sent in hundredths: codes 0 .. 100
SAT_DEAD = 254  # saturation code of a dead unit
SAT_NAN = 255  # saturation code of a unit whose selectivity is NaN (or that has no class)
DEAD_RGB = (58, 58, 62)  # dark gray
NAN_RGB = (140, 140, 140)  # mid gray


def hsv_to_rgb(h, s, v) -> np.ndarray:
    """uint8 `[..., 3]` RGB of HSV values in [0, 1] (the `colorsys` formula, rounded half up)."""
    h, s, v = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (h, s, v)))
    h6 = (h % 1.0) * 6.0
    i = np.floor(h6).astype(np.int64) % 6
    f = h6 - np.floor(h6)
    p, q, t = v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f))
    r = np.choose(i, [v, q, p, p, t, v])
    g = np.choose(i, [t, v, v, q, p, p])
    b = np.choose(i, [p, p, t, v, v, q])
    return np.floor(np.stack([r, g, b], axis=-1) * 255.0 + 0.5).astype(np.uint8)


def class_hue(c, n_classes: int) -> np.ndarray:
    """Hue of class c of C: c / C."""
    return np.asarray(c, dtype=np.float64) / max(1, n_classes)


def class_rgb(n_classes: int) -> np.ndarray:
    """uint8 `[C, 3]`: each class at full saturation (legend, histograms)."""
    return hsv_to_rgb(class_hue(np.arange(n_classes), n_classes), 1.0, VALUE)


def to_hex(rgb) -> str:
    r, g, b = (int(x) for x in rgb)
    return f"#{r:02x}{g:02x}{b:02x}"


def class_hex(n_classes: int) -> list[str]:
    """'#rrggbb' of each class at full saturation."""
    return [to_hex(rgb) for rgb in class_rgb(n_classes)]


def palette(n_classes: int) -> np.ndarray:
    """uint8 `[C, SAT_LEVELS + 1, 3]`: the RGB of class c at saturation code s (= s / 100)."""
    c = np.arange(n_classes)[:, None]
    s = np.arange(SAT_LEVELS + 1)[None, :] / SAT_LEVELS
    return hsv_to_rgb(class_hue(c, n_classes), s, VALUE)


def no_class_code(n_classes: int) -> int:
    """The class code of a unit without a dominant class (the dtype's maximum)."""
    return 255 if n_classes < 255 else 65535


def dominant_codes(dominant, n_classes: int) -> np.ndarray:
    """Class codes: uint8 when C < 255, else uint16; -1 (no class) -> `no_class_code(C)`."""
    dominant = np.asarray(dominant)
    dtype = np.uint8 if n_classes < 255 else np.uint16
    return np.where(dominant < 0, no_class_code(n_classes), dominant).astype(dtype)


def saturation_codes(selectivity, dead) -> np.ndarray:
    """uint8 codes: round(100 * clip(selectivity, 0, 1)); `SAT_DEAD` where dead, `SAT_NAN` where NaN."""
    sel = np.asarray(selectivity, dtype=np.float64)
    dead = np.asarray(dead, dtype=bool)
    codes = np.floor(np.clip(np.nan_to_num(sel, nan=0.0), 0.0, 1.0) * SAT_LEVELS + 0.5).astype(np.uint8)
    codes = np.where(np.isnan(sel), SAT_NAN, codes)
    return np.where(dead, SAT_DEAD, codes).astype(np.uint8)


def tile_rgb(dominant, selectivity, dead, n_classes: int) -> np.ndarray:
    """uint8 `[..., 3]`: the color the browser paints for each tile (palette lookup of the codes)."""
    dom = dominant_codes(dominant, n_classes).astype(np.int64)
    sat = saturation_codes(selectivity, dead).astype(np.int64)
    table = palette(n_classes)
    no_class = dom == no_class_code(n_classes)
    live = ~no_class & (sat <= SAT_LEVELS)
    out = np.empty(dom.shape + (3,), np.uint8)
    out[...] = NAN_RGB
    out[~no_class & (sat == SAT_DEAD)] = DEAD_RGB
    out[live] = table[dom[live], sat[live]]
    return out
