"""The shapes world: tuneline's built-in, procedurally generated data set (no downloads).

    from training.world import ShapesWorld, make_probe, render, WorldConfig, CLASSES
    train = ShapesWorld(20_000, seed=0)             # (image [3, 64, 64] float, label)
    probe = make_probe(500, seed=1234)               # ProbeSet with concept segmentations
    image, label, seg = render(7, seed=0)            # uint8 [64, 64, 3], int, uint8 [5, 64, 64]

Ten object kinds made of parts (house = wall + roof + door, ...) on five scenes
(sky, grass, water, sand, night), with random distractor shapes, textures, color
jitter and pixel noise. Every image carries a five-layer segmentation (object,
part, color, texture, scene) into the concept list `concepts()`. Images depend on
`(seed, index)` only: use different seeds for training and probe sets.
"""

from training.world.dataset import MEAN, STD, ShapesWorld, make_probe
from training.world.kinds import CLASSES, KINDS, PARTS
from training.world.palette import CATEGORIES, COLOR_NAMES, COLORS, SCENES, TEXTURES
from training.world.render import WorldConfig, concept_id, concepts, render, render_batch

__all__ = [
    "CATEGORIES", "CLASSES", "COLORS", "COLOR_NAMES", "KINDS", "MEAN", "PARTS", "SCENES", "STD",
    "TEXTURES", "ShapesWorld", "WorldConfig", "concept_id", "concepts", "make_probe", "render",
    "render_batch",
]
