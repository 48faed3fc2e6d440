"""Summing accumulators across processes: every accumulator's state is a set of sums."""

from __future__ import annotations

from typing import Any, Iterable

import torch


def init_from_env() -> bool:
    """Join the process group ``torchrun`` describes (``WORLD_SIZE`` > 1 in the environment): NCCL when
    CUDA is present (each rank on ``cuda:LOCAL_RANK``), gloo on CPU. Returns whether several processes
    run; a single process (no torchrun) does nothing."""
    import os

    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:
        return False
    if not dist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo")
    return dist_active()


def rank() -> int:
    """This process's rank (0 in a single process)."""
    import torch.distributed as dist

    return dist.get_rank() if dist_active() else 0


def world_size() -> int:
    """Number of processes (1 in a single process)."""
    import torch.distributed as dist

    return dist.get_world_size() if dist_active() else 1


def is_main() -> bool:
    """True on the process that prints, writes and shows progress (rank 0; always in one process)."""
    return rank() == 0


def shard(items: Iterable[Any]) -> Iterable[Any]:
    """The items of ``items`` this process handles: every ``world_size()``-th, from ``rank()``. Every
    rank walks the same sequence (so cuts such as ``max_tokens`` fall at the same place) and keeps
    its share; in one process, everything."""
    r, n = rank(), world_size()
    for i, item in enumerate(items):
        if i % n == r:
            yield item


def dist_active() -> bool:
    """True when ``torch.distributed`` is initialised with more than one process."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum_(tensors: Iterable[torch.Tensor], group: Any = None) -> None:
    """Sum each tensor in place over all processes (no-op in a single process)."""
    if not dist_active():
        return
    import torch.distributed as dist

    for t in tensors:
        dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)


def all_reduce_max_(tensors: Iterable[torch.Tensor], group: Any = None) -> None:
    """Elementwise max of each tensor in place over all processes (no-op in a single process)."""
    if not dist_active():
        return
    import torch.distributed as dist

    for t in tensors:
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group)


def all_gather_objects(obj: Any, group: Any = None) -> list[Any]:
    """Every process's ``obj`` in rank order (``[obj]`` in a single process)."""
    if not dist_active():
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(out, obj, group=group)
    return out


def poisson_weights(seed: int, index: int, n_boot: int) -> torch.Tensor:
    """Poisson(1) bootstrap weights ``[n_boot]`` (float64, CPU) for the item with global ``index``.

    Keyed by (seed, index) only, so a sharded run (any number of processes, any order) draws the
    same weights as a single process: partial sums add up to the same bootstrap replicates.
    """
    g = torch.Generator().manual_seed((int(seed) * 1_000_003 + int(index) * 7919 + 12345) % (2**63 - 1))
    return torch.poisson(torch.ones(n_boot, dtype=torch.float64), generator=g)
