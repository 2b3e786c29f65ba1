"""Concurrent readers: a writer process appends 200 full rows while this process reads the
newest committed row in a loop, at least 1000 times; no read fails or sees a fill value.

The writer waits for 6 reads before each row (one byte per read on its stdin), so the
1000 reads are spread over the writing whatever the speed of the machine. Each row holds
every layer array (dissection included) of two layers, every value equal to the row
number + 1, which no fill value (0, -1, NaN) is. A quicker version of this test, without
the read count, runs by default in test_store.py.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from recorder.store import RunStore

N_ROWS = 200
READS_PER_ROW = 6
LAYERS = {"conv": 4, "fc": 6}

# The layer arrays the writer below fills (the others of LAYER_ARRAYS are optional).
WRITTEN = ("sum_true", "count_true", "sum_pred", "count_pred", "max_true", "train_sum", "train_count",
           "precision", "threshold", "iou", "topk_index", "topk_value", "topk_map")
WRITER = textwrap.dedent(f"""
    import sys
    import numpy as np
    from recorder.store import RunWriter

    path = sys.argv[1]
    layers, classes, topk = {LAYERS!r}, 3, 2
    w = RunWriter.open(path, classes=["a", "b", "c"], concepts=[("sky", "scene"), ("red", "color")],
                       layers=layers, probe={{"source": "s", "n_images": 10, "fingerprint": "f"}}, topk=topk)
    for t in range({N_ROWS}):
        if t:
            assert len(sys.stdin.buffer.read({READS_PER_ROW})) == {READS_PER_ROW}, "the reader stopped"
        v = t + 1
        row = {{}}
        for name, k in layers.items():
            row[name] = {{
                "sum_true": np.full((classes, k), v), "count_true": np.full(classes, v),
                "sum_pred": np.full((classes, k), v), "count_pred": np.full(classes, v),
                "max_true": np.full((classes, k), v), "train_sum": np.full((classes, k), v),
                "train_count": np.full(classes, v), "precision": np.full(k, v), "threshold": np.full(k, v),
                "iou": np.full((k, 2), v), "topk_index": np.full((k, topk), v),
                "topk_value": np.full((k, topk), v), "topk_map": np.full((k, topk, 3, 3), v)}}
        w.append(10 * v, epoch=float(v), metrics={{"loss": float(v)}}, layers=row)
    w.close()
""")


@pytest.mark.slow
def test_1000_reads_of_the_newest_row_while_200_rows_are_written(tmp_path):
    path = tmp_path / "live"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdin=subprocess.PIPE)
    reads = fill_rows = full_reads = 0
    errors, seen = [], set()
    try:
        deadline = time.monotonic() + 300
        run = None
        while run is None:
            assert time.monotonic() < deadline and proc.poll() is None, "the writer did not start"
            try:
                run = RunStore.open(path)
            except (FileNotFoundError, ValueError):
                time.sleep(0.005)
        while True:
            writing = proc.poll() is None
            run.refresh()
            n = run.n_committed
            if n:
                t, v = n - 1, n
                seen.add(n)
                try:
                    newest = {"step": run.read_row("step", t), "epoch": run.read_row("epoch", t),
                              "metrics/loss": run.metric("loss")[t]}  # the scalar logged with row t
                    for name in LAYERS:
                        layer = run.layer(name)
                        newest.update({f"{name}/{a}": layer.row(a, t) for a in WRITTEN})
                    expected = {"step": 10 * v}
                    fill_rows += any(np.any(row != expected.get(key, v)) for key, row in newest.items())
                    if reads % 50 == 0:  # whole arrays too: every committed row complete
                        full = run.layer("conv").topk_map
                        assert full.shape == (n, 4, 2, 3, 3)
                        fill_rows += int(np.sum(full[:, 0, 0, 0, 0] != np.arange(1, n + 1)))
                        full_reads += 1
                except Exception as exc:  # noqa: BLE001 - counted, then reported
                    errors.append(repr(exc))
                reads += writing
                if writing:
                    try:
                        proc.stdin.write(b"r")
                        proc.stdin.flush()
                    except BrokenPipeError:  # the writer just finished
                        pass
            if not writing and (n == N_ROWS or proc.returncode != 0):
                break
            assert time.monotonic() < deadline, f"timed out at n_committed={n}"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == 0, "the writer failed"
    print(f"reliability/readers: {reads} reads while writing ({full_reads} of whole arrays), "
          f"{len(seen)} distinct n_committed, {len(errors)} errors, {fill_rows} rows with fill values")
    assert errors == [] and fill_rows == 0
    assert reads >= 1000  # >= 6 per row after the first
    np.testing.assert_array_equal(RunStore.open(path).steps, 10 * np.arange(1, N_ROWS + 1))
