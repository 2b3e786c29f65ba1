"""Shapes-world rendering speed on one core; prints images/s (median of `--repeats`).

    python bench/world_speed.py [--n 2000] [--repeats 5] [--size 64]

Times `render_batch` (image + label + five-layer segmentation per image), and the
`ShapesWorld` item path (image -> normalized float tensor) for comparison. The
target is >= 2000 images/s at 64x64.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import torch  # noqa: E402

from training.world import ShapesWorld, WorldConfig, render_batch  # noqa: E402


def rate(fn, n: int, repeats: int) -> float:
    """Median images/s of `repeats` timed calls of `fn()` producing `n` images."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return n / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="images per timed run")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs; the median is reported")
    parser.add_argument("--size", type=int, default=64, help="image size in pixels")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = WorldConfig(size=args.size)
    render_batch(50, seed=1, config=config)  # warm caches (grids, noise bank)

    batch = rate(lambda: render_batch(args.n, seed=0, config=config), args.n, args.repeats)
    ds = ShapesWorld(args.n, seed=0, config=config)
    items = rate(lambda: [ds[i] for i in range(args.n)], args.n, args.repeats)
    print(f"render_batch ({args.size}x{args.size}, image + seg): {batch:8.0f} images/s (median of {args.repeats})")
    print(f"ShapesWorld items (normalized tensors):  {items:8.0f} images/s (median of {args.repeats})")
    if args.size == 64:
        print(f"target >= 2000 images/s at 64x64: {'met' if batch >= 2000 else 'NOT met'}")


if __name__ == "__main__":
    main()
