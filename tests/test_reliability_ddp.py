"""DDP failure: when one rank fails, every rank raises instead of hanging, and the store
keeps its earlier rows. Two gloo processes on CPU; the test joins them with a timeout and
kills what is left, so that a hang fails the test instead of stalling it.
"""

from __future__ import annotations

import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers import TinyNet, batches, sgd_steps, tiny_probe
from torch.nn.parallel import DistributedDataParallel

from recorder import Recorder, RunStore
from recorder.store import location as store_location

LAYERS = ["conv1", "block.conv", "fc"]
GROUP_TIMEOUT = 300  # s: longer than JOIN_TIMEOUT, so that only the recorder's agreement can end the test
JOIN_TIMEOUT = 120  # s: both ranks must have exited by then (they take seconds)


class Fails(TinyNet):
    """TinyNet whose probe-pass forward (eval mode) raises on `rank` once `armed`."""

    def __init__(self, rank: int, fail_rank: int, armed: bool = False):
        super().__init__(batchnorm=False, dropout=0.0)
        self.fail = rank == fail_rank
        self.armed = armed

    def forward(self, x):
        if self.fail and self.armed and not self.training:
            raise RuntimeError("simulated failure in forward")
        return super().forward(x)


def _worker(rank: int, world: int, init_file: str, store: str, out: str, mode: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=GROUP_TIMEOUT))
    torch.set_num_threads(1)
    start = time.monotonic()
    outcome = "finished without an error"
    try:
        torch.manual_seed(0)
        net = Fails(rank, fail_rank=1, armed=mode == "construction")
        model = DistributedDataParallel(net)
        if mode == "write" and rank == 0:  # the chunks of rank 0's second row fail to be written
            def put(path, data, exclusive=False):
                if path.name.split(".")[:2] == ["c", "1"]:
                    raise OSError(28, "No space left on device (simulated)")
                return original(path, data, exclusive)

            original, store_location._put_atomic = store_location._put_atomic, put
        rec = Recorder(model, LAYERS, probe=tiny_probe(n=23), store=store, every=2, progress=False, batch_size=4)

        def arm(step):  # after the first row: the second probe pass fails
            net.armed = mode == "probe pass"

        sgd_steps(model, batches(6, batch=8), rec, rank=rank, world=world, after_step=arm)
        rec.close()
    except Exception as exc:  # noqa: BLE001 - reported to the test
        outcome = f"{type(exc).__name__}: {exc}"
    Path(out, f"rank{rank}").write_text(f"{time.monotonic() - start:.1f}\n{outcome}")
    dist.destroy_process_group()
    sys.exit(1 if outcome != "finished without an error" else 0)


def run_ranks(tmp_path: Path, mode: str) -> list[tuple[int, float, str]]:
    """(exit code, seconds, outcome) of each rank; kills the ranks still running after JOIN_TIMEOUT."""
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(rank, 2, str(tmp_path / "init"), str(tmp_path / "run"),
                                               str(tmp_path), mode)) for rank in range(2)]
    for proc in procs:
        proc.start()
    deadline = time.monotonic() + JOIN_TIMEOUT
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
    hung = [rank for rank, proc in enumerate(procs) if proc.is_alive()]
    for proc in procs:
        if proc.is_alive():
            proc.kill()
            proc.join()
    assert not hung, f"ranks {hung} still ran after {JOIN_TIMEOUT} s: a rank waits for a failed peer"
    results = []
    for rank, proc in enumerate(procs):
        seconds, outcome = (tmp_path / f"rank{rank}").read_text().split("\n", 1)
        results.append((proc.exitcode, float(seconds), outcome))
    return results


def test_a_rank_failing_in_the_probe_pass_stops_every_rank(tmp_path):
    """Rank 1's model raises in forward during the second probe pass (step 2)."""
    (code0, _, rank0), (code1, _, rank1) = run_ranks(tmp_path, "probe pass")
    assert code0 != 0 and code1 != 0  # 1, or SIGABRT when gloo is torn down under a failed peer
    assert rank0.startswith("RankFailedError: rank 1 failed in the probe pass @ step 2; rank 0 stops too"), rank0
    assert rank1 == ("RankFailedError: rank 1 failed in the probe pass @ step 2: "
                     "RuntimeError: simulated failure in forward"), rank1
    assert RunStore.open(tmp_path / "run").steps.tolist() == [0]


@pytest.mark.slow
def test_a_rank_failing_while_the_recorder_is_made_stops_every_rank(tmp_path):
    (code0, _, rank0), (code1, _, rank1) = run_ranks(tmp_path, "construction")
    assert code0 != 0 and code1 != 0  # 1, or SIGABRT when gloo is torn down under a failed peer
    assert rank0.startswith("RankFailedError: rank 1 failed finding the recorded layers' output shapes"), rank0
    assert "RuntimeError: simulated failure in forward" in rank1, rank1
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_rank0_failing_to_write_a_row_stops_every_rank(tmp_path):
    (code0, _, rank0), (code1, _, rank1) = run_ranks(tmp_path, "write")
    assert code0 != 0 and code1 != 0  # 1, or SIGABRT when gloo is torn down under a failed peer
    assert "could not write row 1 (step 2)" in rank0 and "No space left on device" in rank0, rank0
    assert rank1.startswith("RuntimeError: rank 0 failed to write the row at step 2"), rank1
    assert RunStore.open(tmp_path / "run").steps.tolist() == [0]
