"""Named colors, textures and scenes of the shapes world, and its fixed concept list.

Every painted pixel carries one named color (its RGB is the palette RGB, before
jitter, shading and noise) and one texture (`plain`, or the pattern its region was
filled with). Backgrounds are painted with named colors too (sky blue sky, green
grass, blue water, yellow sand, black night), so the color and texture layers of a
segmentation are labeled everywhere.
"""

from __future__ import annotations

import numpy as np

# name -> RGB; the order is the order of the color concepts.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (210, 45, 45),
    "orange": (245, 140, 35),
    "yellow": (250, 215, 60),
    "green": (80, 170, 70),
    "sky blue": (140, 195, 240),
    "blue": (40, 80, 190),
    "purple": (130, 60, 170),
    "pink": (240, 150, 190),
    "brown": (120, 75, 40),
    "white": (245, 245, 245),
    "gray": (135, 135, 140),
    "black": (25, 25, 35),
}
COLOR_NAMES: list[str] = list(COLORS)
COLOR_RGB = np.array(list(COLORS.values()), dtype=np.float32)  # (n_colors, 3)

TEXTURES: list[str] = ["plain", "stripes", "dots", "checker"]

SCENES: list[str] = ["sky", "grass", "water", "sand", "night"]
# The named color each scene's background is mostly painted with.
SCENE_COLOR: dict[str, str] = {
    "sky": "sky blue",
    "grass": "green",
    "water": "blue",
    "sand": "yellow",
    "night": "black",
}
# Colors that would hardly show on a scene: parts and distractors avoid them there
# (unless a palette has nothing else).
SCENE_AVOID: dict[str, tuple[str, ...]] = {
    "sky": ("sky blue",),
    "grass": ("green",),
    "water": ("blue",),
    "sand": ("yellow",),
    "night": ("black", "blue", "purple"),
}

CATEGORIES: list[str] = ["object", "part", "color", "texture", "scene"]  # the seg layers, in order
