"""Summing accumulators across processes: every accumulator's state is a set of sums."""

from __future__ import annotations

from typing import Any, Iterable

import torch


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
