"""`python -m training make-probe`: write a shapes-world probe set to HDF5.

    python -m training make-probe --out probe.h5 [--n 500] [--seed 1234] [--size 64]

The file holds pixels, labels, class names, five-layer concept segmentations and
the concept list; `recorder.ProbeSet.from_h5(path)` reads it back.
"""

from __future__ import annotations

import argparse
import time

from training.world import WorldConfig, make_probe


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training make-probe", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="probe.h5", help="HDF5 file to write (overwritten)")
    parser.add_argument("--n", type=int, default=500, help="number of probe images (classes are balanced)")
    parser.add_argument("--seed", type=int, default=1234, help="world seed; keep it apart from training seeds")
    parser.add_argument("--size", type=int, default=64, help="image size in pixels")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error(f"--n must be a positive int, got {args.n}")
    try:
        config = WorldConfig(size=args.size)
    except ValueError as e:
        parser.error(str(e))
    t0 = time.perf_counter()
    probe = make_probe(args.n, args.seed, config)
    probe.to_h5(args.out)
    print(f"wrote {args.out}: {probe!r} in {time.perf_counter() - t0:.1f}s")


if __name__ == "__main__":
    main()
