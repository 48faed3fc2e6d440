"""Shuffle units of the CKA pass: how selected tokens become minibatches, the same in any number of processes.

The text batches are grouped, in corpus order, into *units* of at least ``capacity`` selected tokens
(the last unit may hold fewer). Each unit's tokens are shuffled (across sequences) with a generator
keyed by (seed, unit index) and cut into ``n // batch_size`` minibatches of nearly equal size
(``batch_size`` to ``batch_size + batch_size // 16 + 1`` rows when ``capacity >= 16 * batch_size``;
a last unit with fewer than ``batch_size`` tokens is one minibatch if it has more than 3). Units are
independent: the number of selected tokens of a batch is known before any forward pass, so every
process walks the same units and, under ``torchrun``, runs the forward passes of every
world-size-th unit only; the global index of each minibatch (which keys its bootstrap weights) is
known without the others' activations. Memory is bounded by one unit, not the corpus.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

import torch


@dataclass
class Unit:
    index: int  # unit number in corpus order
    first_minibatch: int  # global index of its first minibatch
    n_tokens: int  # selected tokens in it
    batches: list  # its text batches, in corpus order


def minibatch_sizes(n: int, batch_size: int) -> list[int]:
    """Sizes of the minibatches ``n`` shuffled tokens are cut into (nearly equal, summing to ``n``;
    empty when ``n <= 3``: unbiased HSIC needs 4 examples)."""
    m = n // batch_size
    if m == 0:
        return [n] if n > 3 else []
    extra, r = divmod(n - m * batch_size, m)
    return [batch_size + extra + (1 if i < r else 0) for i in range(m)]


def units(batches: Iterable, count: Callable[[object], int], capacity: int, batch_size: int) -> Iterator[Unit]:
    """Group ``batches`` into units of at least ``capacity`` tokens (``count(batch)`` selected tokens each)."""
    pending: list = []
    n = index = first = 0
    for batch in batches:
        c = count(batch)
        if c == 0:
            continue
        pending.append(batch)
        n += c
        if n >= capacity:
            yield Unit(index, first, n, pending)
            first += len(minibatch_sizes(n, batch_size))
            index, pending, n = index + 1, [], 0
    if pending:
        yield Unit(index, first, n, pending)


def shuffled_minibatches(a: torch.Tensor, b: torch.Tensor, sizes: Sequence[int], seed: int, unit: int
                         ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``a`` ``[L_a, n, d]`` and ``b`` ``[L_b, n, d]`` (the same n tokens), shuffled together and cut
    into minibatches of ``sizes``."""
    g = torch.Generator().manual_seed((int(seed) * 1_000_003 + int(unit) * 7919 + 99991) % (2**63 - 1))
    perm = torch.randperm(a.shape[1], generator=g).to(a.device)
    a, b = a[:, perm], b[:, perm.to(b.device)]
    start = 0
    for s in sizes:
        yield a[:, start:start + s], b[:, start:start + s]
        start += s
