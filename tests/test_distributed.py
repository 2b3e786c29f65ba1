"""Real two-process DDP (gloo on CPU) against a single-process run of the same work."""

import os
import sys

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers import TinyNet, batches, sgd_steps, tiny_probe
from torch.nn.parallel import DistributedDataParallel

from recorder import Recorder, RunStore

LAYERS = ["conv1", "block.conv", "fc"]


def train_and_record(model, store, rank=0, world=1):
    rec = Recorder(model, LAYERS, probe=tiny_probe(n=23), store=store, every=2, progress=False, batch_size=4)
    sgd_steps(model, batches(4, batch=8), rec, rank=rank, world=world)
    rec.close()


def _worker(rank, world, init_file, store):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        model = DistributedDataParallel(TinyNet(batchnorm=False, dropout=0.0))
        train_and_record(model, store, rank, world)
        dist.barrier()  # no rank tears gloo down while a peer still talks to it
    finally:
        dist.destroy_process_group()
    # the work is done and checked by the parent; the interpreter's own teardown is skipped: it has
    # now and then aborted a finished rank ("terminate called without an active exception", SIGABRT)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def assert_same_run(ddp, single):
    assert ddp.steps.tolist() == single.steps.tolist() == [0, 2, 3]
    for name in LAYERS:
        a, b = ddp.layer(name), single.layer(name)
        for array in ["sum_true", "sum_pred", "max_true", "train_sum", "topk_value"]:
            np.testing.assert_allclose(getattr(a, array), getattr(b, array), rtol=1e-4, atol=1e-5,
                                       err_msg=f"{name}/{array}")
        for array in ["count_true", "count_pred", "train_count"]:
            np.testing.assert_array_equal(getattr(a, array), getattr(b, array), err_msg=f"{name}/{array}")
    np.testing.assert_allclose(ddp.metrics["probe_accuracy"], single.metrics["probe_accuracy"])
    np.testing.assert_allclose(ddp.metrics["train_accuracy"], single.metrics["train_accuracy"])


def test_two_gloo_ranks_write_what_one_process_writes(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "ddp")), nprocs=2, join=True)
    torch.manual_seed(0)
    train_and_record(TinyNet(batchnorm=False, dropout=0.0), tmp_path / "single")
    assert_same_run(RunStore.open(tmp_path / "ddp"), RunStore.open(tmp_path / "single"))


def test_four_gloo_ranks_recording_to_s3_write_what_one_process_writes(tmp_path, s3_url):
    """The cluster setup of the README: every rank trains, rank 0 writes to the object store."""
    url = f"{s3_url}/cluster"
    mp.spawn(_worker, args=(4, str(tmp_path / "init"), url), nprocs=4, join=True)
    torch.manual_seed(0)
    train_and_record(TinyNet(batchnorm=False, dropout=0.0), tmp_path / "single")
    assert_same_run(RunStore.open(url), RunStore.open(tmp_path / "single"))
