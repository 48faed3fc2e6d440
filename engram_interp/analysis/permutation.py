"""Permutation test of a one-way grouping (which n-gram a token ends) on per-token values (its gates).

The statistic is eta^2 = SS_between / SS_total. Relabelling the tokens leaves the group sizes, the
grand mean and SS_total unchanged, so eta^2 of a relabelling orders like ``Q = sum_g S_g^2 / c_g``
(``S_g``: the group's sum). Labels are shuffled within each stratum (a batch of the corpus), so a
batch-level difference is never mistaken for an n-gram one.

``p = (1 + #{shuffles with Q >= observed}) / (1 + B)`` over B seeded random shuffles (never below
``1 / (1 + B)``); when the strata allow at most B distinct relabellings, all of them are enumerated
(the identity included) and ``p = #{relabellings with Q >= observed} / #relabellings`` (exact).
"""

from __future__ import annotations

import itertools
import math

import torch

__all__ = ["permutation_test", "n_relabellings"]


def n_relabellings(strata: list[torch.Tensor]) -> int:
    """Number of distinct relabellings of the labels ``strata`` (one 1-d tensor per stratum): the
    product of the strata's multinomial coefficients ``m! / prod_g c_g!``."""
    total = 1
    for lab in strata:
        counts = torch.bincount(lab).tolist() if lab.numel() else []
        left = int(lab.numel())
        for c in counts:
            total *= math.comb(left, c)
            left -= c
    return total


def _multiset_permutations(items: list[int]):
    """Distinct orderings of a multiset ``items`` (sorted ascending), lexicographic (Knuth's algorithm L)."""
    a = sorted(items)
    while True:
        yield list(a)
        j = len(a) - 2
        while j >= 0 and a[j] >= a[j + 1]:
            j -= 1
        if j < 0:
            return
        k = len(a) - 1
        while a[j] >= a[k]:
            k -= 1
        a[j], a[k] = a[k], a[j]
        a[j + 1:] = reversed(a[j + 1:])


def _q(labels: torch.Tensor, vals: torch.Tensor, counts: torch.Tensor, groups: int) -> torch.Tensor:
    """``Q`` ``[P, C]`` of relabellings ``labels`` ``[P, N]`` of values ``vals`` ``[N, C]``."""
    P, N = labels.shape
    idx = (labels + groups * torch.arange(P)[:, None]).flatten()
    s = torch.zeros(P * groups, vals.shape[1], dtype=torch.float64).index_add_(0, idx, vals.repeat(P, 1))
    return (s.view(P, groups, -1) ** 2 / counts[None, :, None]).sum(1)


def permutation_test(log: list[tuple[torch.Tensor, torch.Tensor]], groups: int, n_perm: int, seed: int = 0
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool, int]:
    """Permutation test of eta^2 per channel. ``log``: per stratum ``(labels [m] in 0..groups-1, values
    [m, C] float64)``. Returns ``(null mean [C], null max [C], p [C], exact, number of relabellings
    compared)``; an exact null holds every relabelling, the identity included. NaN where the values do
    not vary."""
    labels = torch.cat([lab for lab, _ in log])
    vals = torch.cat([v for _, v in log])
    N, C = vals.shape
    nan = torch.full((C,), float("nan"), dtype=torch.float64)
    counts = torch.bincount(labels, minlength=groups).to(torch.float64)
    grand = vals.mean(0)
    ss_total = ((vals - grand) ** 2).sum(0)
    observed = _q(labels[None], vals, counts, groups)[0]  # [C]
    exact = n_relabellings([lab for lab, _ in log]) <= n_perm
    if exact:
        per = [list(_multiset_permutations(lab.tolist())) for lab, _ in log]
        null = torch.cat([_q(torch.tensor([sum(combo, []) for combo in chunk]), vals, counts, groups)
                          for chunk in _chunks(itertools.product(*per), max(1, 4_000_000 // max(N * C, 1)))])
    else:
        gen = torch.Generator().manual_seed(seed)
        stratum = torch.cat([torch.full((lab.numel(),), float(i), dtype=torch.float64) for i, (lab, _) in enumerate(log)])
        step = max(1, 4_000_000 // max(N * C, 1))
        parts = []
        for start in range(0, n_perm, step):
            P = min(step, n_perm - start)
            order = torch.argsort(stratum[None] + torch.rand(P, N, generator=gen, dtype=torch.float64), dim=1)
            parts.append(_q(labels[order], vals, counts, groups))  # within-stratum shuffles
        null = torch.cat(parts)  # [B, C]
    tol = 1e-9 * observed.abs().clamp_min(1.0)
    ge = (null >= observed - tol).sum(0).to(torch.float64)
    p = ge / null.shape[0] if exact else (1 + ge) / (1 + null.shape[0])
    base = N * grand**2
    eta = (null - base) / ss_total.clamp_min(1e-300)
    varies = ss_total > 0
    mean = torch.where(varies, eta.mean(0), nan)
    top = torch.where(varies, eta.max(0).values, nan)
    return mean, top, torch.where(varies, p, nan), exact, int(null.shape[0])


def _chunks(it, size: int):
    chunk = []
    for x in it:
        chunk.append(x)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
