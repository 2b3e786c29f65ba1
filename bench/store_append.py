"""Run store append time per layer per checkpoint: a local folder and S3, side by side.

    python bench/store_append.py [--repeats 5] [--rows 12] [--layers 4]

Each repeat creates a run with `--layers` layers of 10 classes x 512 units and appends
`--rows` rows of the 10 per-layer arrays of a probe pass without dissection (as in
bench/record_overhead.py); the figure of a repeat is the median row time (the first row,
which creates the arrays, left out) / layers. Printed: the median over repeats for a
local folder (the system's temporary folder) and for S3 served by moto on 127.0.0.1,
and their ratio. Goal for the local store: <= 10 ms per layer per checkpoint.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import S3Server  # noqa: E402 - the moto server the tests use

from recorder.store import RunWriter  # noqa: E402

CLASSES, UNITS, TOPK = 10, 512, 8


def layer_row(rng: np.random.Generator) -> dict[str, np.ndarray]:
    c, k = CLASSES, UNITS
    return {
        "sum_true": rng.random((c, k), dtype=np.float32), "count_true": np.full(c, 50),
        "sum_pred": rng.random((c, k), dtype=np.float32), "count_pred": np.full(c, 50),
        "max_true": rng.random((c, k), dtype=np.float32), "train_sum": rng.random((c, k), dtype=np.float32),
        "train_count": np.full(c, 64), "precision": rng.random(k, dtype=np.float32),
        "topk_index": rng.integers(0, 500, (k, TOPK)).astype(np.int32),
        "topk_value": rng.random((k, TOPK), dtype=np.float32),
    }


def append_ms(where: str, n_layers: int, rows: int) -> float:
    """Median time of one row / layers, in ms, for a new run at `where`."""
    row = layer_row(np.random.default_rng(0))
    names = [f"layer{i}" for i in range(n_layers)]
    with RunWriter.open(where, classes=[f"c{i}" for i in range(CLASSES)], concepts=[],
                        layers={name: UNITS for name in names}, topk=TOPK,
                        probe={"source": "bench", "n_images": 500, "fingerprint": "x"}) as writer:
        times = []
        for step in range(rows):
            start = time.perf_counter()
            writer.append(step, layers={name: row for name in names})
            times.append(time.perf_counter() - start)
    return statistics.median(times[1:]) / n_layers * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rows", type=int, default=12)
    parser.add_argument("--layers", type=int, default=4)
    args = parser.parse_args()
    server = S3Server().start()
    os.environ.update(server.env)
    bucket = "tuneline-bench"
    server.create_bucket(bucket)
    local, s3 = [], []
    try:
        for _ in range(args.repeats):  # alternate, so that both see the same machine load
            with tempfile.TemporaryDirectory() as folder:
                local.append(append_ms(os.path.join(folder, "run"), args.layers, args.rows))
            s3.append(append_ms(f"s3://{bucket}/{uuid.uuid4().hex}", args.layers, args.rows))
    finally:
        server.stop()
    lm, sm = statistics.median(local), statistics.median(s3)
    print(f"append {args.layers} layers x 10 arrays of {CLASSES}x{UNITS}, {args.rows} rows, "
          f"median of {args.repeats}:")
    print(f"  local folder     {lm:7.1f} ms per layer per checkpoint  (goal <= 10 ms)")
    print(f"  S3 (moto, local) {sm:7.1f} ms per layer per checkpoint  ({sm / lm:.1f}x local)")


if __name__ == "__main__":
    main()
