"""The few `torch.distributed` operations the recorder needs (no-ops without it).

    rank, world = rank_and_world()
    all_reduce([sums, counts])       # in place, SUM over ranks
    agree(error, "in the probe pass at step 200")   # raise on every rank if one failed

A rank that fails between two collectives must still take part in the next one, or
its peers wait for it until the process group's timeout. `agree` is that meeting
point: every rank calls it after local work that may fail and before the next
collective, and every rank raises `RankFailedError` naming the failed ranks.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist


class RankFailedError(RuntimeError):
    """A rank failed during work that every rank does together; raised on every rank."""


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_world() -> tuple[int, int]:
    if is_distributed():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _flag_device(device: torch.device | str) -> torch.device | str:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return device


def all_reduce(tensors: Iterable[torch.Tensor], op: str = "sum") -> None:
    """Sum (or, with `op="min"`, take the minimum of) every tensor in place over all ranks."""
    if not is_distributed():
        return
    reduce_op = {"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN}[op]
    for tensor in tensors:
        dist.all_reduce(tensor, op=reduce_op)


def failed_ranks(ok: bool, device: torch.device | str = "cpu") -> list[int]:
    """The ranks where `ok` is False (a collective: every rank must call it)."""
    rank, world = rank_and_world()
    if world == 1:
        return [] if ok else [0]
    flags = torch.zeros(world, dtype=torch.int64, device=_flag_device(device))
    flags[rank] = 0 if ok else 1
    dist.all_reduce(flags, op=dist.ReduceOp.SUM)
    return flags.nonzero().flatten().tolist()


def all_ranks_ok(ok: bool, device: torch.device | str = "cpu") -> bool:
    """True when `ok` holds on every rank (a collective: every rank must call it)."""
    return not failed_ranks(ok, device)


def agree(error: Exception | None, what: str, device: torch.device | str = "cpu") -> None:
    """Raise on every rank if `error` is set on any rank (a collective under DDP).

    Without torch.distributed, `error` itself is raised. Under it, the rank that
    failed raises `RankFailedError` with its error chained, and the other ranks raise
    `RankFailedError` naming the failed ranks, so that no rank waits for a peer that
    will never reach the next collective.
    """
    if not is_distributed():
        if error is not None:
            raise error
        return
    failed = failed_ranks(error is None, device)
    if not failed:
        return
    ranks = ", ".join(map(str, failed))
    noun = "rank" if len(failed) == 1 else "ranks"
    if error is not None:
        raise RankFailedError(f"{noun} {ranks} failed {what}: {type(error).__name__}: {error}") from error
    raise RankFailedError(f"{noun} {ranks} failed {what}; rank {dist.get_rank()} stops too "
                          f"(the error of rank {failed[0]} tells why)")
