"""`python -m training show-world`: a PNG grid of shapes-world samples and their masks.

    python -m training show-world --out world.png [--n 10] [--seed 0] [--size 64] [--zoom 2]

One row per sample: the image, then its object, part, color and texture layers
colorized (colors painted with their own RGB; other concepts with fixed distinct
colors; unlabeled black), with the class and scene written above the image.
"""

from __future__ import annotations

import argparse
import colorsys

import numpy as np
from PIL import Image, ImageDraw

from training.world import COLORS, WorldConfig, concepts, render

HEADER = 14  # pixels of caption above each tile
COLUMNS = ["image", "object", "part", "color", "texture"]


def concept_colors() -> np.ndarray:
    """uint8 `[P + 1, 3]`: an RGB per concept id (0 = black); colors show their own RGB."""
    table = np.zeros((len(concepts()) + 1, 3), dtype=np.uint8)
    for i, c in enumerate(concepts(), start=1):
        if c.category == "color":
            table[i] = COLORS[c.name]
        else:
            hue = (i * 0.618034) % 1.0  # golden-ratio hues: neighbours differ
            table[i] = np.round(255 * np.array(colorsys.hsv_to_rgb(hue, 0.75, 0.95)))
    return table


def world_grid(n: int = 10, seed: int = 0, config: WorldConfig | None = None, zoom: int = 2) -> Image.Image:
    """The grid image: `n` rows of image + four colorized layers, each `size * zoom` wide."""
    config = config or WorldConfig()
    table = concept_colors()
    names = [c.name for c in concepts()]
    tile = config.size * zoom
    grid = Image.new("RGB", (len(COLUMNS) * tile, HEADER + n * (tile + HEADER)), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for j, title in enumerate(COLUMNS):
        draw.text((j * tile + 3, 1), title, fill=(0, 0, 0))
    for i in range(n):
        image, label, seg = render(i, seed, config)
        top = HEADER + i * (tile + HEADER)
        scene = names[int(seg[4, 0, 0]) - 1]
        draw.text((3, top + 1), f"{names[int(seg[0].max()) - 1] if seg[0].any() else '?'} / {scene}",
                  fill=(0, 0, 0))
        tiles = [image] + [table[seg[layer]] for layer in range(4)]
        for j, t in enumerate(tiles):
            im = Image.fromarray(t).resize((tile, tile), Image.NEAREST)
            grid.paste(im, (j * tile, top + HEADER))
    return grid


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training show-world", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="world.png", help="PNG file to write")
    parser.add_argument("--n", type=int, default=10, help="number of samples (rows)")
    parser.add_argument("--seed", type=int, default=0, help="world seed")
    parser.add_argument("--size", type=int, default=64, help="image size in pixels")
    parser.add_argument("--zoom", type=int, default=2, help="pixel zoom of each tile")
    args = parser.parse_args(argv)
    if args.n < 1 or args.zoom < 1:
        parser.error(f"--n and --zoom must be positive, got {args.n} and {args.zoom}")
    world_grid(args.n, args.seed, WorldConfig(size=args.size), args.zoom).save(args.out, optimize=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
