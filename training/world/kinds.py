"""The ten object kinds of the shapes world: their parts, palettes and geometry.

Each kind's `shape(x, y, a, rng)` returns one boolean mask per part, in the order
of `parts`, which is also the drawing order (a later part covers an earlier one).
Coordinates are in units of the object's half-height: y points down, the object
spans `|x| <= a` (its aspect) and `|y| <= 1`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from training.world.geometry import box, circle, ellipse, polar, triangle


@dataclass(frozen=True)
class PartSpec:
    name: str                        # concept name, unique across all concepts
    colors: tuple[str, ...]          # palette: one is drawn per object
    textures: tuple[str, ...] = ("plain",)  # drawn uniformly (repeat a name to weight it)
    pattern_colors: tuple[str, ...] = ()    # colors of a texture's pattern; () = any other color


@dataclass(frozen=True)
class Kind:
    name: str                        # class name, also the object concept
    parts: tuple[PartSpec, ...]
    aspect: tuple[float, float]      # range of half-width / half-height
    shape: Callable                  # (x, y, a, rng) -> [mask per part]
    home: str                        # the scene it is most often found in
    tilt: float = 0.0                # max rotation, degrees
    flip: bool = False               # mirrored left-right at random


def _house(x, y, a, rng):
    top = -0.3 + 0.25 * rng.random()                 # where roof meets wall
    wall = box(x, y, -0.82 * a, 0.82 * a, top, 1.0)
    roof = (y <= top) & (y >= -1.0 + (top + 1.0) * np.abs(x) / a)
    dx, hw = (rng.random() - 0.5) * 0.9 * a, 0.14 + 0.06 * rng.random()
    door = box(x, y, dx - hw, dx + hw, 0.35 + 0.15 * rng.random(), 1.0)
    return [wall, roof, door]


def _car(x, y, a, rng):
    c = (rng.random() - 0.5) * 0.4 * a               # cabin offset
    chassis = box(x, y, -a, a, -0.15, 0.55)
    cabin = (y >= -0.75) & (y <= -0.15) & (np.abs(x - c) <= 0.32 * a + 0.35 * a * (y + 0.75))
    r = 0.28 + 0.06 * rng.random()
    wheels = circle(np.abs(x), y, 0.58 * a, 0.95 - r, r)
    return [chassis | cabin, wheels]


def _tree(x, y, a, rng):
    tw = 0.1 + 0.08 * rng.random()
    trunk = box(x, y, -tw, tw, -0.1, 1.0)
    if rng.random() < 0.6:  # round crown
        foliage = ellipse(x, y, 0.0, -0.35, 0.97 * a, 0.65)
    else:  # conifer
        foliage = (y <= 0.45) & (y >= -1.0 + 1.45 * np.abs(x) / a)
    return [trunk, foliage]


def _flower(x, y, a, rng):
    hc, radius = -0.5, min(a, 0.5)
    stem = box(x, y, -0.06, 0.06, hc, 1.0) | ellipse(x, y, 0.17, 0.45, 0.17, 0.07)
    r2, theta = polar(x, y, 0.0, hc)
    n = 5 + int(rng.random() * 4)
    rho = radius * (0.45 + 0.55 * np.abs(np.cos(0.5 * n * theta + rng.random() * math.pi)))
    petals = r2 <= rho * rho
    center = r2 <= (0.33 * radius) ** 2
    return [stem, petals, center]


def _boat(x, y, a, rng):
    hull = (y >= 0.3) & (y <= 0.75) & (np.abs(x) <= a - 0.75 * a * (y - 0.3))
    m = (rng.random() - 0.6) * 0.3 * a                # mast position
    sail = (x >= m) & (y <= 0.22) & (x - m <= 0.8 * a * (y + 1.0) / 1.22) & (y >= -1.0)
    return [hull, sail]


def _fish(x, y, a, rng):
    body = ellipse(x, y, -0.2 * a, 0.0, 0.8 * a, 0.6 + 0.1 * rng.random())
    t0 = 0.45 * a
    tail = (x <= a) & (np.abs(y) <= 0.7 * (x - t0) / (a - t0))
    return [body, tail]


def _sun(x, y, a, rng):
    disc = circle(x, y, 0.0, 0.0, 0.5)
    r2, theta = polar(x, y, 0.0, 0.0)
    n = 8 + int(rng.random() * 5)
    rays = (r2 >= 0.62 ** 2) & (r2 <= 0.98 ** 2) & (np.cos(n * theta + rng.random() * 6.3) > 0.3)
    return [disc, rays]


def _mushroom(x, y, a, rng):
    base = -0.05 - 0.15 * rng.random()
    sw = (0.18 + 0.1 * rng.random()) * a
    stem = (y >= base) & (y <= 1.0) & (np.abs(x) <= sw * (1.0 + 0.3 * (y - base)))
    cap = ellipse(x, y, 0.0, base, a, 1.0 + base) & (y <= base)
    return [stem, cap]


def _snowman(x, y, a, rng):
    balls = circle(x, y, 0.0, 0.55, 0.45) | circle(x, y, 0.0, -0.05, 0.33) | circle(x, y, 0.0, -0.47, 0.23)
    hat = box(x, y, -0.28, 0.28, -0.72, -0.64) | box(x, y, -0.17, 0.17, -1.0, -0.64)
    return [balls, hat]


def _rocket(x, y, a, rng):
    body = box(x, y, -0.28, 0.28, -0.35, 0.55) | ((y <= -0.35) & (y >= -1.0 + 0.65 * np.abs(x) / 0.28))
    fins = triangle(np.abs(x), y, (0.28, 0.1), (0.28, 0.6), (min(a, 0.62), 0.72))
    flame = (y >= 0.55) & (np.abs(x) <= 0.2 * (1.0 - (y - 0.55) / 0.45))
    return [body, fins, flame]


KINDS: tuple[Kind, ...] = (
    Kind("house", (
        PartSpec("wall", ("white", "yellow", "pink", "gray", "orange"), ("plain", "plain", "checker", "stripes")),
        PartSpec("roof", ("red", "brown", "gray", "blue"), ("plain", "plain", "stripes")),
        PartSpec("door", ("brown", "blue", "red", "black")),
    ), (0.75, 1.15), _house, "grass"),
    Kind("car", (
        PartSpec("car body", ("red", "blue", "yellow", "orange", "purple", "white", "green"),
                 ("plain", "plain", "plain", "stripes")),
        PartSpec("wheel", ("black", "gray")),
    ), (1.35, 1.85), _car, "sand", flip=True),
    Kind("tree", (
        PartSpec("trunk", ("brown",), ("plain", "plain", "stripes"), ("black", "orange")),
        PartSpec("foliage", ("green", "green", "orange", "yellow"), ("plain", "plain", "dots"),
                 ("red", "orange", "yellow", "white")),
    ), (0.55, 0.9), _tree, "grass"),
    Kind("flower", (
        PartSpec("flower stem", ("green",)),
        PartSpec("petals", ("red", "pink", "purple", "yellow", "white", "orange", "blue")),
        PartSpec("flower center", ("yellow", "orange", "brown"), ("plain", "plain", "dots")),
    ), (0.5, 0.65), _flower, "grass"),
    Kind("boat", (
        PartSpec("hull", ("brown", "red", "blue", "white", "black"), ("plain", "plain", "stripes")),
        PartSpec("sail", ("white", "yellow", "red", "orange"), ("plain", "plain", "stripes")),
    ), (0.9, 1.3), _boat, "water", tilt=10.0, flip=True),
    Kind("fish", (
        PartSpec("fish body", ("orange", "yellow", "red", "purple", "pink", "blue"),
                 ("plain", "plain", "stripes", "dots")),
        PartSpec("tail", ("orange", "yellow", "red", "purple", "pink", "blue"), ("plain", "plain", "stripes")),
    ), (1.3, 1.75), _fish, "water", tilt=20.0, flip=True),
    Kind("sun", (
        PartSpec("sun disc", ("yellow", "orange")),
        PartSpec("rays", ("yellow", "orange", "red")),
    ), (1.0, 1.0), _sun, "sky"),
    Kind("mushroom", (
        PartSpec("mushroom stem", ("white", "gray", "yellow")),
        PartSpec("cap", ("red", "brown", "orange", "purple"), ("plain", "dots", "dots"), ("white",)),
    ), (0.75, 1.05), _mushroom, "grass"),
    Kind("snowman", (
        PartSpec("snowballs", ("white",)),
        PartSpec("hat", ("black", "red", "blue", "brown"), ("plain", "plain", "stripes")),
    ), (0.48, 0.62), _snowman, "night"),
    Kind("rocket", (
        PartSpec("rocket body", ("gray", "white", "red", "blue"), ("plain", "plain", "stripes", "checker")),
        PartSpec("fins", ("red", "blue", "orange", "black", "purple")),
        PartSpec("flame", ("orange", "yellow", "red"), ("plain", "plain", "stripes"), ("yellow", "red", "white")),
    ), (0.6, 0.7), _rocket, "night", tilt=20.0),
)

CLASSES: list[str] = [k.name for k in KINDS]
PARTS: list[str] = [p.name for k in KINDS for p in k.parts]
