"""A full disk during a row: the row is not committed, earlier rows stay, the error names
the path, and the next row after space is freed is written.

`FullDisk` replaces `open` in recorder.store.location (the one place the writer opens
local files): after `budget` more bytes a write stores what fits and raises
OSError(ENOSPC), as a full disk does.
"""

from __future__ import annotations

import builtins
import errno
import os
import threading

import numpy as np
import pytest
from helpers import TinyNet, batches, tiny_probe
from test_reliability_crash import committed_rows, one_thread  # noqa: F401 (autouse fixture)
from test_store import make_run, open_writer, row_layers

from recorder import Recorder, RunStore
from recorder.store import location as store_location
from recorder.store import StoreWriteError

LAYERS = ["conv1", "fc"]
NO_SPACE = r"OSError: \[Errno 28\] No space left on device: '.*\.partial'"


class FullDisk:
    """An `open` whose written files may take `budget` more bytes (None: no limit)."""

    def __init__(self):
        self.written = 0
        self.budget: int | None = None
        self.failures = 0
        self._lock = threading.Lock()  # the writer writes a row's files from a few threads

    def fill_after(self, n_bytes: int | None) -> None:
        self.budget = None if n_bytes is None else self.written + n_bytes

    def __call__(self, path, mode="r", *args, **kwargs):
        f = builtins.open(path, mode, *args, **kwargs)
        return _LimitedFile(f, self, path) if "w" in mode else f

    def take(self, n: int) -> int:
        with self._lock:
            room = n if self.budget is None else max(0, min(n, self.budget - self.written))
            self.written += room
            self.failures += room < n
            return room


class _LimitedFile:
    def __init__(self, f, disk: FullDisk, path):
        self.f, self.disk, self.path = f, disk, path

    def write(self, data) -> int:
        data = memoryview(data).cast("B")
        room = self.disk.take(data.nbytes)
        self.f.write(data[:room])
        if room < data.nbytes:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
        return room

    def close(self) -> None:
        self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.f.close()


@pytest.fixture
def disk(monkeypatch) -> FullDisk:
    disk = FullDisk()
    monkeypatch.setattr(store_location, "open", disk, raising=False)
    return disk


def no_partial_files(path) -> bool:
    return not list(path.rglob("*.partial"))


def test_full_disk_anywhere_in_a_row_keeps_earlier_rows(tmp_path, disk):
    """RunWriter: the disk fills at 20 points spread over a row's bytes, each on a fresh try."""
    rows = make_run(tmp_path / "run", n_rows=2, dissection=True)
    w = open_writer(tmp_path / "run")
    start = disk.written
    w.append(20, layers=row_layers(3, dissection=True))  # the bytes of the row below, but for digits
    row_bytes = disk.written - start
    _, before = committed_rows(tmp_path / "run")
    step = 30
    for point in np.linspace(0, row_bytes - 1, 20).astype(int):
        disk.fill_after(None)
        w = open_writer(tmp_path / "run")  # trims the failed row before: each try starts clean
        disk.fill_after(int(point))
        with pytest.raises(StoreWriteError, match=rf"could not write row 3 \(step {step}\) to the run store "
                                                  rf"at '.*run/record.zarr'; the row was not committed: {NO_SPACE}"):
            w.append(step, layers=row_layers(3, dissection=True))
        assert w.n_committed == 3 and no_partial_files(tmp_path / "run")
        n, now = committed_rows(tmp_path / "run")
        assert n == 3
        for key, values in before.items():
            np.testing.assert_array_equal(now[key], values, err_msg=f"{key}, disk full after {point} bytes")
        step += 1
    assert disk.failures >= 20
    disk.fill_after(None)
    w.append(step, layers=row_layers(3, dissection=True))
    run = RunStore.open(tmp_path / "run")
    assert run.steps.tolist() == [0, 10, 20, step]
    np.testing.assert_array_equal(run.layer("fc").sum_true[:2], [r["layers"]["fc"]["sum_true"] for r in rows])
    np.testing.assert_array_equal(run.layer("fc").iou[3], row_layers(3, dissection=True)["fc"]["iou"])


@pytest.mark.parametrize("fraction", [0.0, 0.5, 0.9], ids=["at its start", "halfway", "near its end"])
def test_recorder_reports_a_full_disk_and_writes_the_next_row_when_space_is_back(tmp_path, disk, fraction):
    """Through the Recorder: the error names the store, training responses of the lost row
    are kept for the next one, and the next due row after space is freed is written."""
    model = TinyNet()
    rec = Recorder(model, LAYERS, probe=tiny_probe(), store=tmp_path / "run", every=5, progress=False)
    steps = iter(enumerate(batches(13)))

    def train_until(last: int) -> None:
        for step, (x, y) in steps:
            model(x)
            rec.step(step, labels=y)
            if step == last:
                return

    train_until(4)  # row at step 0
    start = disk.written
    train_until(5)  # row at step 5
    row_bytes = disk.written - start
    _, before = committed_rows(tmp_path / "run")

    disk.fill_after(int(fraction * row_bytes))
    train_until(9)
    with pytest.raises(StoreWriteError, match=rf"row 2 \(step 10\) to the run store at '.*run/record.zarr'; "
                                              rf"the row was not committed: {NO_SPACE}"):
        train_until(10)
    with pytest.raises(StoreWriteError, match=r"row 2 \(step 11\)"):  # still full: the next due row fails too
        train_until(11)
    for _ in range(2):
        n, now = committed_rows(tmp_path / "run")
        assert n == 2 and no_partial_files(tmp_path / "run")
        for key, values in before.items():
            np.testing.assert_array_equal(now[key], values, err_msg=key)

    disk.fill_after(None)  # space is back
    train_until(12)
    rec.close()
    run = RunStore.open(tmp_path / "run")
    assert run.steps.tolist() == [0, 5, 12]
    for name in LAYERS:  # steps 6..12: no training batch of the failed rows is lost or counted twice
        assert run.layer(name).train_count[2].sum() == 7 * 8
    assert np.isfinite(run.layer("conv1").threshold).all()
    assert run.layer("fc").train_count.sum() == 13 * 8
