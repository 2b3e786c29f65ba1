"""Crash safety: a process training with a Recorder is killed with SIGKILL at random moments.

After every kill the store opens, every committed row is complete (no fill value, no
NaN, every chunk decodes), at most the row in flight is lost, and the same training
restarted on the same store appends rows with increasing steps. The quick test runs on a
local folder and on S3 (moto's server, see conftest).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import StoredFiles, join
from helpers import TinyNet, batches, seg_probe

from recorder import Recorder, RunStore

TESTS = Path(__file__).resolve().parent
LAYERS = ["conv1", "block.conv", "fc"]
BATCH = 8
N_PROBE = len(seg_probe())

# One process imports torch and the recorder once, then forks a child per trial (importing
# torch takes seconds; a fork takes milliseconds, and nothing has started a thread yet).
# Each child trains with a Recorder writing one row per step (every=1), so that rows are
# written back to back and a kill often lands inside a row, and appends each step to its
# log file once step() has returned, i.e. once that step's row is committed.
ZYGOTE = textwrap.dedent(f"""
    import os, signal, sys, traceback
    sys.path.insert(0, {str(TESTS)!r})
    import torch
    import torch.nn.functional as F
    from helpers import TinyNet, batches, seg_probe
    from recorder import Recorder

    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the killed children

    def train(store, log):
        torch.set_num_threads(1)
        torch.manual_seed(0)
        model = TinyNet()
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        with Recorder(model, {LAYERS!r}, probe=seg_probe(), store=store, every=1, progress=False) as rec:
            for step, (x, y) in enumerate(batches(100000, batch={BATCH})):
                logits = model(x)
                loss = F.cross_entropy(logits, y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                rec.step(step, labels=y, logits=logits, epoch=step / 10, metrics={{"loss": loss.item()}})
                os.write(log, b"%d\\n" % step)

    for line in iter(sys.stdin.readline, ""):
        store, log = line.split()
        log = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        pid = os.fork()
        if pid == 0:
            try:
                train(store, log)
            except BaseException:
                traceback.print_exc()
            os._exit(1)
        os.close(log)
        print(pid, flush=True)
""")


class Zygote:
    """The forking process: `start(store, log)` -> pid of a child training into `store`."""

    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", ZYGOTE], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, "OMP_NUM_THREADS": "1"})
        self.children: set[int] = set()  # forked and not yet seen dead

    def start(self, store: Path | str, log: Path) -> int:
        self.proc.stdin.write(f"{store} {log}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"the forking process died: {self.proc.communicate()[1][-3000:]}"
        self.children.add(int(line))
        return int(line)

    def wait_dead(self, pid: int, deadline: float) -> None:
        while alive(pid):
            assert time.monotonic() < deadline, f"child {pid} outlived SIGKILL"
            time.sleep(0.002)
        self.children.discard(pid)  # dead: its pid may now be another process's

    def close(self) -> str:
        """Kill any child still training (a failed test leaves some), stop, return stderr."""
        for pid in self.children:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        return self.proc.stderr.read()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: tiny models run much faster on a few shared cores (also imported by
    the other test_reliability modules)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def array_keys(zarr_path: Path | str) -> dict[str, int]:
    """Every array of a run store (probe arrays left out) -> its row count in the store."""
    out = {}
    files = StoredFiles(zarr_path)
    for meta in files.keys():
        if meta.rsplit("/", 1)[-1] != "zarr.json" or "/" not in meta:
            continue
        node = json.loads(files.read(meta))
        key = meta.rsplit("/", 1)[0]
        if node["node_type"] == "array" and not key.startswith("probe/"):
            out[key] = node["shape"][0]
    return out


def committed_rows(path: Path | str) -> tuple[int, dict[str, np.ndarray]]:
    """n_committed and every array's committed rows, read through the public reader."""
    run = RunStore.open(path)
    n = run.n_committed
    keys = [k for k in array_keys(join(path, "record.zarr")) if not k.startswith(("scalars/", "occlusion/"))]
    data = {key: run.read(key).copy() for key in keys}
    for key, rows in data.items():
        assert rows.shape[0] == n, (key, rows.shape)
    for name in run.scalar_names:  # metrics: their own committed length, each value at its step
        steps, values = run.scalar(name)
        data[f"scalars/{name}"] = np.stack([steps.astype(np.float64), values], axis=1)  # (M, 2)
    return n, data


def check_complete(path: Path, n: int, data: dict[str, np.ndarray]) -> None:
    """Every committed row holds real values: none is a fill value (NaN, -1, 0 counts)."""
    steps = data.get("step", np.zeros(0, np.int64))  # a kill while the store is created: no arrays yet
    np.testing.assert_array_equal(steps, np.arange(n))  # every=1: one row per step
    for key, rows in data.items():
        name = key.rsplit("/", 1)[-1]
        if rows.dtype.kind == "f":
            assert np.isfinite(rows).all(), f"{key}: NaN (a fill value) in a committed row"
        elif name == "topk_index":
            assert (rows >= 0).all() and (rows < N_PROBE).all(), key
        elif name in ("count_true", "count_pred"):  # every probe image has a class and a prediction
            np.testing.assert_array_equal(rows.sum(1), N_PROBE, err_msg=key)
        elif name == "train_count":  # one training batch per row
            np.testing.assert_array_equal(rows.sum(1), BATCH, err_msg=key)
    layer_arrays = {key.rsplit("/", 1)[-1] for key in data if key.startswith("layers/block.conv/")}
    if n:
        assert {"sum_true", "train_sum", "threshold", "iou", "topk_map"} <= layer_arrays
        run = RunStore.open(path)
        assert run.thumbs is not None and run.thumbs.shape[0] == N_PROBE


def resume_and_append(path: Path, n: int, before: dict[str, np.ndarray]) -> None:
    """The same training restarted after the last committed step appends two rows."""
    torch.manual_seed(1)
    model = TinyNet()
    with Recorder(model, LAYERS, probe=seg_probe(), store=path, every=1, progress=False) as rec:
        assert rec.last_recorded_step == (n - 1 if n else None)
        for step, (x, y) in zip(range(n, n + 2), batches(2, batch=BATCH, seed=n)):
            logits = model(x)
            F.cross_entropy(logits, y).backward()
            rec.step(step, labels=y, logits=logits, epoch=step / 10, metrics={"loss": 1.0})
    m, after = committed_rows(path)
    assert m == n + 2
    check_complete(path, m, after)  # steps 0..n+1: increasing, no gap
    for key, rows in before.items():
        kept = len(rows) if key.startswith("scalars/") else n  # metrics: their own committed length
        np.testing.assert_array_equal(after[key][:kept], rows, err_msg=f"{key}: a committed row changed")


def run_trials(tmp_path: Path, seeds: list[int], *, wave: int = 3, early_every: int = 0, root=None) -> dict:
    """Fork children `wave` at a time, kill each at a random moment, check and resume each store
    (below `root`, a local folder or a URL; default `tmp_path`).

    A trial's delay is drawn from its seed: uniform in [0, 1) s after the child's first
    committed row, or (every `early_every`-th trial) in [0, 0.2) s after its store folder
    appears, which lands while the store is created or its first row written.
    """
    stats = {"trials": 0, "rows": [], "in_flight": 0, "partial_files": 0, "early": 0, "no_store": 0}
    zygote = Zygote()
    try:
        for first in range(0, len(seeds), wave):
            children = []
            for seed in seeds[first:first + wave]:
                early = bool(early_every) and seed % early_every == 0
                store, log = join(root or tmp_path, f"trial{seed}"), tmp_path / f"trial{seed}.log"
                children.append({"seed": seed, "store": store, "log": log, "early": early,
                                 "delay": random.Random(seed).uniform(0, 0.2 if early else 1.0),
                                 "pid": zygote.start(store, log), "since": None})
            kill_all(children, zygote)
            for child in children:
                printed = [int(line) for line in child["log"].read_text().split()]
                check_trial(child["store"], printed[-1] if printed else None, stats)
                stats["early"] += child["early"]
    except BaseException:
        print(zygote.close()[-3000:])  # the children's tracebacks, if any
        raise
    errors = zygote.close()
    assert "Traceback" not in errors, errors[-3000:]
    return stats


def kill_all(children: list[dict], zygote: Zygote) -> None:
    """SIGKILL each child `delay` s after its first committed row (early: after its store appears)."""
    deadline = time.monotonic() + 120
    pending = list(children)
    while pending:
        assert time.monotonic() < deadline, "a child neither committed a row nor was killed in 120 s"
        now = time.monotonic()
        for child in list(pending):
            assert alive(child["pid"]), f"child {child['seed']} died by itself"  # see the stderr below
            if child["since"] is None:
                started = StoredFiles(child["store"]).exists() if child["early"] else child["log"].stat().st_size > 0
                child["since"] = now if started else None
            elif now >= child["since"] + child["delay"]:
                os.kill(child["pid"], signal.SIGKILL)
                pending.remove(child)
        time.sleep(0.002)
    for child in children:
        zygote.wait_dead(child["pid"], deadline)


def check_trial(path: Path | str, last_printed: int | None, stats: dict) -> None:
    stats["trials"] += 1
    known = 0 if last_printed is None else last_printed + 1  # rows committed before the kill for sure
    files = StoredFiles(path)
    if not files.exists("record.zarr/zarr.json"):
        assert known == 0, f"{path}: {known} rows were committed but the store is gone"
        n, before = 0, {}
        stats["no_store"] += 1
    else:
        on_disk = array_keys(join(path, "record.zarr"))
        n, before = committed_rows(path)
        stats["in_flight"] += any(rows > n for rows in on_disk.values())
        stats["partial_files"] += sum(key.endswith(".partial") for key in files.keys())
        assert known <= n <= known + 1, f"{path}: {n} committed rows, {known} known before the kill"
        check_complete(path, n, before)
    stats["rows"].append(n)
    resume_and_append(path, n, before)


def test_kill_during_training_keeps_every_committed_row(tmp_path, store_root):
    """3 trials (more in the slow test below): SIGKILL at a random moment while rows are written."""
    stats = run_trials(tmp_path, seeds=[1, 2, 3], root=store_root)
    print(f"reliability/crash: {stats}")
    assert stats["trials"] == 3 and min(stats["rows"]) >= 1


@pytest.mark.slow
def test_kill_at_random_moments_many_trials(tmp_path):
    """24 trials; every 4th is killed within 0.2 s of its store folder appearing (creation, first row)."""
    stats = run_trials(tmp_path, seeds=list(range(100, 124)), early_every=4)
    print(f"reliability/crash: {stats}")
    assert stats["trials"] == 24 and stats["early"] == 6
    assert len(set(stats["rows"])) >= 4  # the kills landed at many moments


def test_store_left_by_a_kill_during_creation_is_started_again(tmp_path):
    """A kill before the root metadata was written leaves only folders and temporary files."""
    zarr_path = tmp_path / "run" / "record.zarr"
    (zarr_path / "layers").mkdir(parents=True)
    (zarr_path / "zarr.json.0123abcd.partial").write_bytes(b'{"zarr_for')
    torch.manual_seed(0)
    with Recorder(TinyNet(), LAYERS, probe=seg_probe(), store=tmp_path / "run", progress=False) as rec:
        rec.record(0)
    assert RunStore.open(tmp_path / "run").steps.tolist() == [0]


def test_a_record_zarr_with_data_but_no_root_metadata_is_not_deleted(tmp_path):
    zarr_path = tmp_path / "run" / "record.zarr"
    (zarr_path / "step").mkdir(parents=True)
    (zarr_path / "step" / "zarr.json").write_text("{}")
    with pytest.raises(ValueError, match="record.zarr' is not a tuneline run: it has no zarr.json"):
        Recorder(TinyNet(), LAYERS, probe=seg_probe(), store=tmp_path / "run", progress=False)
    assert (zarr_path / "step" / "zarr.json").read_text() == "{}"
