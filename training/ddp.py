"""DistributedDataParallel plumbing for the train loop (a no-op in a single process).

    with Distributed() as dist_env:          # init from torchrun's env when WORLD_SIZE > 1
        model = dist_env.wrap(model)         # DDP on > 1 rank
        local, rows = dist_env.shard(global_indices)

`torchrun --nproc_per_node=2 -m training train ...` sets `WORLD_SIZE`, `RANK`,
`LOCAL_RANK` and the rendezvous address; the process group uses NCCL on CUDA and
gloo on CPU. Each rank takes a contiguous, equal share of every global batch, so
the union of the ranks' shards is the single-process batch.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["Distributed", "evaluate"]


class Distributed:
    """Rank, world size and device of this process; the process group when WORLD_SIZE > 1."""

    def __init__(self, device: str = "auto"):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
        self.device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
        self._owns_group = False
        if self.world > 1 and not dist.is_initialized():
            if use_cuda:
                torch.cuda.set_device(self.device)
            dist.init_process_group("nccl" if use_cuda else "gloo")
            self._owns_group = True

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: nn.Module) -> nn.Module:
        if self.world == 1:
            return model
        device_ids = [self.device] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    def shard(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's contiguous share of a global batch and its row numbers in it."""
        n = len(indices)
        if n % self.world:
            raise ValueError(f"batch_size={n} is not divisible by the {self.world} DDP ranks")
        per = n // self.world
        rows = torch.arange(self.rank * per, (self.rank + 1) * per)
        return indices[rows], rows

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def broadcast_int(self, value: int) -> int:
        """Rank 0's `value` on every rank."""
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.int64, device=self.device)
        dist.broadcast(t, src=0)
        return int(t)

    def close(self) -> None:
        if self._owns_group and dist.is_initialized():
            dist.barrier()  # no rank tears gloo down while a peer still talks to it
            dist.destroy_process_group()
            self._owns_group = False

    def __enter__(self) -> Distributed:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def evaluate(model: nn.Module, split, dist_env: Distributed | None = None, batch_size: int = 500) -> float:
    """Accuracy on `split` (each rank its share, summed): in eval() under no_grad, flags restored."""
    model = getattr(model, "module", model)
    rank, world = (dist_env.rank, dist_env.world) if dist_env is not None else (0, 1)
    device = next(model.parameters()).device
    n = len(split)
    per = -(-n // world)
    lo, hi = rank * per, min(n, (rank + 1) * per)
    flags = [(m, m.training) for m in model.modules()]
    counts = torch.zeros(2, dtype=torch.int64, device=device)  # (correct, seen)
    try:
        model.eval()
        with torch.no_grad():
            for first in range(lo, hi, batch_size):
                x, y = split.batch(torch.arange(first, min(first + batch_size, hi)))
                pred = model(x.to(device)).argmax(1).cpu()
                counts[0] += int((pred == y).sum())
                counts[1] += len(y)
    finally:
        for module, training in flags:
            module.training = training
    if world > 1:
        dist.all_reduce(counts, op=dist.ReduceOp.SUM)
    return float(counts[0]) / max(1, int(counts[1]))
