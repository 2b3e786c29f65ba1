"""The few `torch.distributed` operations the recorder needs (no-ops without it).

    rank, world = rank_and_world()
    all_reduce([sums, counts])       # in place, SUM over ranks
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_world() -> tuple[int, int]:
    if is_distributed():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_reduce(tensors: Iterable[torch.Tensor]) -> None:
    """Sum every tensor in place over all ranks."""
    if not is_distributed():
        return
    for tensor in tensors:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)


def all_ranks_ok(ok: bool, device: torch.device | str = "cpu") -> bool:
    """True when `ok` holds on every rank (a collective: every rank must call it)."""
    if not is_distributed():
        return ok
    if dist.get_backend() == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    flag = torch.tensor([0 if ok else 1], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.SUM)
    return int(flag.item()) == 0
