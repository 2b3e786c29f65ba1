"""Rendering one image of the shapes world: background scene, distractors, one object.

    image, label, seg = render(index=7, seed=0)     # uint8 [H, W, 3], int, uint8 [5, H, W]

Each image is a function of `(seed, index)` alone (`np.random.default_rng([seed,
index])`), so any index of any split can be regenerated. Drawing writes one small
integer per pixel into a paint map: the index of a "paint" (object, part, color,
texture, shading); the image and the five segmentation layers are then gathered
from the paint tables in one indexing step each.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from functools import lru_cache

import numpy as np

from recorder.schema import Concept
from training.world.geometry import Frame, box, ellipse, pixel_grid, texture_mask, triangle
from training.world.kinds import CLASSES, KINDS, PARTS, Kind, PartSpec
from training.world.palette import CATEGORIES, COLOR_NAMES, COLOR_RGB, SCENE_AVOID, SCENE_COLOR, SCENES, TEXTURES

__all__ = ["WorldConfig", "concepts", "concept_id", "render", "render_batch"]


@dataclass(frozen=True)
class WorldConfig:
    size: int = 64                  # image height and width, pixels
    noise: float = 6.0              # std of Gaussian pixel noise on the 0-255 scale; 0 = none
    color_jitter: float = 12.0      # max shift per RGB channel of each painted color; 0 = exact palette
    shading: float = 0.12           # brightness gradient across backgrounds; 0 = flat
    distractors: int = 3            # at most this many distractor shapes (not parts) per image
    scene_bias: float = 0.4         # chance that an object is shown in its home scene
    textures: bool = True           # parts and backgrounds may be patterned; False = all plain

    def __post_init__(self):
        checks = {
            "size": isinstance(self.size, int) and 16 <= self.size <= 1024,
            "noise": 0 <= self.noise <= 100,
            "color_jitter": 0 <= self.color_jitter <= 100,
            "shading": 0 <= self.shading <= 0.5,
            "distractors": isinstance(self.distractors, int) and 0 <= self.distractors <= 20,
            "scene_bias": 0 <= self.scene_bias <= 1,
            "textures": isinstance(self.textures, bool),
        }
        valid = {
            "size": "an int in [16, 1024]", "noise": "a number in [0, 100]",
            "color_jitter": "a number in [0, 100]", "shading": "a number in [0, 0.5]",
            "distractors": "an int in [0, 20]", "scene_bias": "a number in [0, 1]",
            "textures": "True or False",
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(
                    f"WorldConfig {name!r} given an invalid value: {getattr(self, name)!r}; "
                    f"expected {valid[name]}"
                )

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


_DEFAULT = WorldConfig()


# ---------------------------------------------------------------- concepts
def concepts() -> list[Concept]:
    """All concepts, in a fixed order: objects, parts, colors, textures, scenes."""
    names = {"object": CLASSES, "part": PARTS, "color": COLOR_NAMES, "texture": TEXTURES, "scene": SCENES}
    return [Concept(name, category) for category in CATEGORIES for name in names[category]]


@lru_cache(maxsize=1)
def _ids() -> dict[tuple[str, str], int]:
    return {(c.category, c.name): i + 1 for i, c in enumerate(concepts())}


def concept_id(category: str, name: str) -> int:
    """1-based id of a concept in `concepts()`; `concept_id("color", "red")`."""
    try:
        return _ids()[(category, name)]
    except KeyError:
        valid = sorted(n for c, n in _ids() if c == category)
        raise KeyError(f"no {category} concept {name!r}; valid: {valid}") from None


_COLOR = {n: i for i, n in enumerate(COLOR_NAMES)}
_COLOR0 = concept_id("color", COLOR_NAMES[0]) - 1   # color concept id = _COLOR0 + 1 + index
_TEX = {t: concept_id("texture", t) for t in TEXTURES}
_OBJ = [concept_id("object", k.name) for k in KINDS]
_PART = [[concept_id("part", p.name) for p in k.parts] for k in KINDS]
_SCENE = [concept_id("scene", s) for s in SCENES]


@lru_cache(maxsize=4)
def _noise_bank(n: int) -> np.ndarray:
    """Fixed standard-normal values; each image adds a slice at a random offset."""
    return np.random.default_rng(20240501).standard_normal(n + 65536, dtype=np.float32)


@lru_cache(maxsize=4)
def _ramp(size: int) -> np.ndarray:
    """-1 at the top row to 1 at the bottom, `(size, 1)`: the background shading gradient."""
    return np.linspace(-1.0, 1.0, size, dtype=np.float32)[:, None]


def _pick(rng, seq):
    return seq[int(rng.random() * len(seq))]


# ---------------------------------------------------------------- the canvas
class _Canvas:
    """A paint map `[H, W]` and the table of paints it indexes."""

    def __init__(self, size: int, scene: int, config: WorldConfig, rng):
        self.size, self.config, self.rng = size, config, rng
        self.scale = size / 64.0
        self.paint = np.zeros((size, size), dtype=np.uint8)
        self.table: list[tuple[int, int, int, int]] = []   # (object, part, color, texture) ids
        self.colors: list[int] = []                          # index into COLOR_RGB
        self.grad: list[float] = []                          # shading strength (0 on objects)
        self.scene = scene

    def new_paint(self, color: str, texture: str, obj: int = 0, part: int = 0, grad: float = 0.0) -> int:
        self.table.append((obj, part, _COLOR0 + 1 + _COLOR[color], _TEX[texture]))
        self.colors.append(_COLOR[color])
        self.grad.append(grad)
        return len(self.table) - 1

    def fill(self, window, rows, cols, mask, color: str, texture: str = "plain",
             pattern_color: str | None = None, obj: int = 0, part: int = 0, grad: float = 0.0) -> None:
        """Paint `mask` (over `window`) with `color`, its `texture` pattern with `pattern_color`."""
        view = self.paint[window]
        k = self.new_paint(color, texture, obj, part, grad)
        np.copyto(view, k, where=mask)
        if texture != "plain":
            pat = texture_mask(texture, rows, cols, self.rng, self.scale)
            k2 = self.new_paint(pattern_color, texture, obj, part, grad)
            np.copyto(view, k2, where=mask & pat)

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 image [H, W, 3], uint8 seg [5, H, W])."""
        cfg, size = self.config, self.size
        # np.take is several times faster than fancy indexing; the four uint8 ids of a
        # paint travel together as one uint32 and are unpacked by a byte view.
        table = np.array(self.table, dtype=np.uint8)                 # (K, 4)
        packed = np.take(table.view(np.uint32).ravel(), self.paint)  # (H, W)
        seg = np.empty((len(CATEGORIES), size, size), dtype=np.uint8)
        seg[:4] = packed.view(np.uint8).reshape(size, size, 4).transpose(2, 0, 1)
        seg[4] = self.scene
        palette = COLOR_RGB[self.colors]                              # (K, 3)
        if cfg.color_jitter:  # each paint its own shade of its named color
            palette = palette + np.round(cfg.color_jitter * (2.0 * self.rng.random(palette.shape) - 1.0))
        rgb = np.take(palette.astype(np.float32), self.paint, axis=0)  # (H, W, 3)
        if cfg.shading:
            grad = np.take(np.array(self.grad, dtype=np.float32), self.paint)
            shade = 1.0 + grad * (cfg.shading * _ramp(size))
            rgb *= shade[:, :, None]
        if cfg.noise:
            n = size * size * 3
            start = int(self.rng.random() * 65536)
            rgb += cfg.noise * _noise_bank(n)[start:start + n].reshape(size, size, 3)
        np.clip(rgb, 0.0, 255.0, out=rgb)
        image = (rgb + 0.5).astype(np.uint8) if (cfg.shading or cfg.noise) else rgb.astype(np.uint8)
        return image, seg


# ---------------------------------------------------------------- drawing
def _texture(rng, spec_textures, config: WorldConfig) -> str:
    return _pick(rng, spec_textures) if config.textures else "plain"


def _color(rng, palette, avoid: tuple[str, ...]) -> str:
    options = [c for c in palette if c not in avoid] or list(palette)
    return _pick(rng, options)


def _pattern_color(rng, spec: PartSpec, base: str) -> str:
    options = [c for c in (spec.pattern_colors or COLOR_NAMES) if c != base]
    return _pick(rng, options)


def _background(cv: _Canvas, scene: str, rng) -> int:
    """Paint the scene; return the row of its horizon (0 for sky and night)."""
    size, rows, cols = cv.size, *pixel_grid(cv.size)
    full = (slice(0, size), slice(0, size))
    if scene in ("sky", "night"):
        color = SCENE_COLOR[scene]
        cv.fill(full, rows, cols, True, color, grad=-1.0 if scene == "sky" else 0.5)
        if scene == "night":  # a few stars
            n = 4 + int(rng.random() * 10)
            k = cv.new_paint(_pick(rng, ("white", "white", "yellow")), "plain")
            idx = (rng.random(2 * n) * size).astype(np.intp)
            cv.paint[idx[:n], idx[n:]] = k
        return 0
    horizon = int(size * (0.2 + 0.25 * rng.random()))
    sky = (slice(0, horizon), slice(0, size))
    cv.fill(sky, rows[:horizon], cols, True, "sky blue", grad=-1.0)
    ground = (slice(horizon, size), slice(0, size))
    r = rows[horizon:]
    color, texture, pattern = SCENE_COLOR[scene], "plain", None
    if cv.config.textures:
        if scene == "water":  # wavy stripes
            period = max(3, round((4 + 3 * rng.random()) * cv.scale))
            wave = np.round(1.5 * cv.scale * np.sin(cols * (0.25 + 0.3 * rng.random()) / cv.scale
                                                    + 6.3 * rng.random())).astype(np.int64)
            k = cv.new_paint(color, "stripes", grad=0.7)
            k2 = cv.new_paint(_pick(rng, ("sky blue", "white")), "stripes", grad=0.7)
            cv.paint[ground] = np.where((r + wave) % period < max(1, period // 3), k2, k)
            return horizon
        if scene == "sand" or rng.random() < 0.3:
            texture = "dots"
            pattern = _pick(rng, ("brown", "orange")) if scene == "sand" else _pick(rng, ("yellow", "white"))
    cv.fill(ground, r, cols, True, color, texture, pattern, grad=0.7)
    return horizon


def _clouds(cv: _Canvas, horizon: int, rng) -> None:
    size = cv.size
    bottom = horizon if horizon else size
    for _ in range(int(rng.random() * 3)):
        s = size * (0.05 + 0.05 * rng.random())
        cy = rng.random() * max(1.0, bottom - s)
        f = Frame(size, rng.random() * size, cy, s, 2.0)
        if f.empty:
            continue
        mask = ellipse(f.x, f.y, -0.8, 0.2, 1.1, 0.8) | ellipse(f.x, f.y, 0.5, 0.0, 1.2, 1.0)
        if horizon:
            mask = mask & (f.rows < horizon)
        cv.fill(f.window, f.rows, f.cols, mask, "white")


def _distractor(cv: _Canvas, avoid: tuple[str, ...], rng) -> None:
    size = cv.size
    s = size * (0.05 + 0.08 * rng.random())
    f = Frame(size, rng.random() * size, rng.random() * size, s, 0.6 + 0.8 * rng.random(),
              angle=rng.random() * math.pi)
    if f.empty:
        return
    x, y, a, kind = f.x, f.y, f.aspect, rng.random()
    if kind < 0.35:
        mask = ellipse(x, y, 0.0, 0.0, a, 1.0)
    elif kind < 0.7:
        mask = box(x, y, -a, a, -1.0, 1.0)
    else:
        mask = triangle(x, y, (-a, 1.0), (a, 1.0), ((rng.random() - 0.5) * a, -1.0))
    color = _color(rng, COLOR_NAMES, avoid)
    texture = _pick(rng, ("plain", "plain", "plain", "stripes", "dots", "checker")) if cv.config.textures else "plain"
    pattern = _pick(rng, [c for c in COLOR_NAMES if c != color])
    cv.fill(f.window, f.rows, f.cols, mask, color, texture, pattern)


def _object(cv: _Canvas, label: int, kind: Kind, avoid: tuple[str, ...], rng) -> None:
    size = cv.size
    a = kind.aspect[0] + (kind.aspect[1] - kind.aspect[0]) * rng.random()
    s = size * (0.2 + 0.2 * rng.random())
    s = min(s, 0.5 * size / a)
    margin_x, margin_y = 0.8 * a * s, 0.8 * s
    cx = margin_x + rng.random() * max(0.0, size - 2 * margin_x)
    cy = margin_y + rng.random() * max(0.0, size - 2 * margin_y)
    angle = math.radians(kind.tilt) * (2 * rng.random() - 1) if kind.tilt else 0.0
    flip = kind.flip and rng.random() < 0.5
    f = Frame(size, cx, cy, s, a, angle, flip)
    masks = kind.shape(f.x, f.y, a, rng)
    for j, (spec, mask) in enumerate(zip(kind.parts, masks)):
        color = _color(rng, spec.colors, avoid)
        texture = _texture(rng, spec.textures, cv.config)
        pattern = _pattern_color(rng, spec, color) if texture != "plain" else None
        cv.fill(f.window, f.rows, f.cols, mask, color, texture, pattern,
                obj=_OBJ[label], part=_PART[label][j])


def render(index: int, seed: int = 0, config: WorldConfig | None = None) -> tuple[np.ndarray, int, np.ndarray]:
    """Image `index` of the world `seed`: (uint8 image [H, W, 3], label, uint8 seg [5, H, W]).

    The label is `index % 10` (classes are balanced over any 10 consecutive
    indices). `seg` layers are object, part, color, texture and scene concept ids,
    1-based into `concepts()`, 0 where a layer has no label (object and part
    outside the object); the scene layer is the scene's id everywhere.
    """
    config = config or _DEFAULT
    if int(index) < 0 or int(seed) < 0:
        raise ValueError(f"index and seed must be non-negative ints, got index={index!r}, seed={seed!r}")
    rng = np.random.default_rng([int(seed), int(index)])
    label = int(index) % len(KINDS)
    kind = KINDS[label]
    scene = kind.home if rng.random() < config.scene_bias else _pick(rng, SCENES)
    cv = _Canvas(config.size, _SCENE[SCENES.index(scene)], config, rng)
    horizon = _background(cv, scene, rng)
    if scene != "night":
        _clouds(cv, horizon, rng)
    avoid = SCENE_AVOID[scene]
    for _ in range(int(rng.random() * (config.distractors + 1))):
        _distractor(cv, avoid, rng)
    _object(cv, label, kind, avoid, rng)
    image, seg = cv.finish()
    return image, label, seg


def render_batch(n: int, seed: int = 0, start: int = 0, config: WorldConfig | None = None):
    """Images `start .. start + n - 1`: (uint8 [n, H, W, 3], int64 labels [n], uint8 seg [n, 5, H, W])."""
    config = config or WorldConfig()
    size = config.size
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    labels = np.empty(n, dtype=np.int64)
    segs = np.empty((n, len(CATEGORIES), size, size), dtype=np.uint8)
    for i in range(n):
        images[i], labels[i], segs[i] = render(start + i, seed, config)
    return images, labels, segs
