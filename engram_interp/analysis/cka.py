"""Minibatch unbiased linear CKA (Song et al. 2012; Nguyen, Raghu & Kornblith 2021).

Per minibatch of ``n > 3`` examples and per layer: ``K = X X^T`` (features mean-centred first), its
U-centring ``U`` and ``HSIC1(K, L) = <U_K, U_L>_F / (n (n-3))``, computed from float32 Grams without
cancellation (``engram_interp.analysis.hsic``: float64 row sums, float64 rows for examples with
massive activations, float64 accumulation of the Frobenius products). Over minibatches we sum
``HSIC1`` for every layer pair and the self terms;
``CKA_ab = S_ab / sqrt(S_aa S_bb)``. Values may be negative (unbiased); only the denominator is guarded.

Bootstrap CIs resample minibatches with the Poisson bootstrap: each minibatch gets ``n_boot``
Poisson(1) weights keyed by its global index, and each replicate keeps its own weighted sums.
State is a fixed set of sums (independent of the number of tokens), so partial accumulators of
several processes combine with one ``all_reduce``.
"""

from __future__ import annotations

from typing import Sequence

import torch

from engram_interp.analysis._dist import all_reduce_sum_, poisson_weights
from engram_interp.analysis.resample import percentile_ci
from engram_interp.analysis.hsic import hsic_matrix, minibatch_u_grams, u_centred_grams

__all__ = ["CKAAccumulator", "u_centred_grams", "minibatch_cka", "soft_alignment", "default_k",
           "soft_alignment_range", "cka_argmax", "percentile_ci"]


class CKAAccumulator:
    """Streaming minibatch CKA between the layers of A and the layers of B (or A with itself).

    ``update(acts_a, acts_b)`` takes one minibatch: ``[L_a, n, d_a]`` (and ``[L_b, n, d_b]``, the
    same n examples in the same order; omit for A-vs-A). ``result()`` returns ``[L_a, L_b]`` float64.
    """

    def __init__(
        self,
        n_layers_a: int,
        n_layers_b: int | None = None,
        *,
        device: torch.device | str | None = None,
        n_boot: int = 200,
        seed: int = 0,
    ) -> None:
        self.self_mode = n_layers_b is None
        self.n_layers_a = n_layers_a
        self.n_layers_b = n_layers_a if n_layers_b is None else n_layers_b
        self.device = torch.device(device) if device is not None else None
        self.n_boot = n_boot
        self.seed = seed
        dev = self.device or torch.device("cpu")
        la, lb = self.n_layers_a, self.n_layers_b
        f64 = dict(dtype=torch.float64, device=dev)
        self.s_ab = torch.zeros(la, lb, **f64)  # sum of HSIC1(a, b) over minibatches
        self.s_aa = torch.zeros(la, **f64)
        self.s_bb = torch.zeros(lb, **f64)
        self.boot_ab = torch.zeros(n_boot, la, lb, **f64)  # Poisson-weighted sums, one per replicate
        self.boot_aa = torch.zeros(n_boot, la, **f64)
        self.boot_bb = torch.zeros(n_boot, lb, **f64)
        self.counts = torch.zeros(2, **f64)  # [minibatches, examples]
        self._next_index = 0

    @torch.no_grad()
    def update(self, acts_a: torch.Tensor | Sequence[torch.Tensor], acts_b: torch.Tensor | Sequence[torch.Tensor] | None = None, *, index: int | None = None) -> None:
        """Add one minibatch. ``index`` (global minibatch number) keys its bootstrap weights;
        by default the accumulator's own counter. Pass it when sharding minibatches over processes."""
        a = _as_layers(acts_a, self.device)
        dev = a.device if isinstance(a, torch.Tensor) else a[0].device
        if self.device is None:
            self._move(dev)
        la = a.shape[0] if isinstance(a, torch.Tensor) else len(a)
        n = a.shape[1] if isinstance(a, torch.Tensor) else a[0].shape[0]
        if la != self.n_layers_a:
            raise ValueError(f"expected {self.n_layers_a} layers for A, got {la}")
        if self.self_mode != (acts_b is None):
            raise ValueError("pass acts_b exactly when the accumulator compares two models")
        b = None if acts_b is None else _as_layers(acts_b, dev)
        lb = 0 if b is None else (b.shape[0] if isinstance(b, torch.Tensor) else len(b))
        if b is not None:
            nb = b.shape[1] if isinstance(b, torch.Tensor) else b[0].shape[0]
            if nb != n:
                raise ValueError(f"A and B minibatches differ in number of examples: {n} vs {nb}")
            if lb != self.n_layers_b:
                raise ValueError(f"expected {self.n_layers_b} layers for B, got {lb}")
        if n <= 3:
            raise ValueError(f"unbiased HSIC needs more than 3 examples per minibatch, got {n}")
        parts = [a] + ([] if b is None else [b])
        layers = [t for p in parts for t in (p if isinstance(p, list) else [p])]  # stacked [L, n, d] or [n, d]'s
        g = hsic_matrix(*minibatch_u_grams(layers, n))  # [La+Lb, La+Lb] float64
        h_ab = g[:la, la:] if b is not None else g
        h_aa = torch.diagonal(g)[:la]
        h_bb = torch.diagonal(g)[la:] if b is not None else h_aa
        idx = self._next_index if index is None else index
        self._next_index = max(self._next_index, idx + 1)
        w = poisson_weights(self.seed, idx, self.n_boot).to(h_ab.device)
        self.s_ab += h_ab
        self.s_aa += h_aa
        self.s_bb += h_bb
        self.boot_ab += w[:, None, None] * h_ab
        self.boot_aa += w[:, None] * h_aa
        self.boot_bb += w[:, None] * h_bb
        self.counts += torch.tensor([1.0, float(n)], dtype=torch.float64, device=h_ab.device)

    def _move(self, device: torch.device) -> None:
        self.device = device
        for name in ("s_ab", "s_aa", "s_bb", "boot_ab", "boot_aa", "boot_bb", "counts"):
            setattr(self, name, getattr(self, name).to(device))

    def state(self) -> list[torch.Tensor]:
        """The sums that make up the state (all of them add across processes)."""
        return [self.s_ab, self.s_aa, self.s_bb, self.boot_ab, self.boot_aa, self.boot_bb, self.counts]

    def all_reduce(self, group=None) -> "CKAAccumulator":
        """Sum the state over all ``torch.distributed`` processes (no-op in one process)."""
        all_reduce_sum_(self.state(), group)
        return self

    def merge(self, other: "CKAAccumulator") -> "CKAAccumulator":
        """Add another accumulator's sums into this one (the single-process all-reduce)."""
        for mine, theirs in zip(self.state(), other.state()):
            mine += theirs.to(mine.device)
        return self

    @property
    def n_batches(self) -> int:
        return int(self.counts[0].item())

    @property
    def n_examples(self) -> int:
        return int(self.counts[1].item())

    def result(self) -> torch.Tensor:
        """CKA matrix ``[L_a, L_b]`` float64 (CPU)."""
        return _ratio(self.s_ab, self.s_aa, self.s_bb).cpu()

    def bootstrap(self) -> torch.Tensor:
        """CKA matrices of the bootstrap replicates ``[n_boot, L_a, L_b]`` float64 (CPU)."""
        return _ratio(self.boot_ab, self.boot_aa, self.boot_bb).cpu()

    def ci(self, level: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
        """Percentile bootstrap interval over minibatches: ``(low, high)``, each ``[L_a, L_b]``."""
        return percentile_ci(self.bootstrap(), level)


def _ratio(s_ab: torch.Tensor, s_aa: torch.Tensor, s_bb: torch.Tensor) -> torch.Tensor:
    denom = torch.sqrt(torch.clamp(s_aa.unsqueeze(-1) * s_bb.unsqueeze(-2), min=0.0))
    tiny = torch.finfo(torch.float64).tiny
    return torch.where(denom > tiny, s_ab / denom.clamp_min(tiny), torch.full_like(s_ab, float("nan")))


def _as_layers(acts: torch.Tensor | Sequence[torch.Tensor], device: torch.device | None) -> list[torch.Tensor] | torch.Tensor:
    if isinstance(acts, torch.Tensor):
        return acts if device is None else acts.to(device)
    flat = [t.reshape(t.shape[0], -1) for t in acts]
    if device is not None:
        flat = [t.to(device) for t in flat]
    return torch.stack(flat) if len({t.shape[1] for t in flat}) == 1 else flat


def minibatch_cka(
    acts_a: Sequence[torch.Tensor],
    acts_b: Sequence[torch.Tensor] | None = None,
    batch_size: int = 1024,
    *,
    shuffle: bool = False,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Minibatch unbiased linear CKA of two lists of per-layer activations.

    ``acts_a``: L_a tensors ``[N, d_a]``; ``acts_b``: L_b tensors ``[N, d_b]`` with the same N
    examples in the same order (``None``: A against itself). Consecutive minibatches of
    ``batch_size`` rows (after a seeded permutation if ``shuffle``); a final minibatch of 3 rows
    or fewer is dropped. Returns ``[L_a, L_b]`` float64 CKA values (unitless, may be < 0).
    """
    n = acts_a[0].shape[0]
    if any(t.shape[0] != n for t in list(acts_a) + list(acts_b or [])):
        raise ValueError("every activation tensor needs the same number of rows")
    if n <= 3:
        raise ValueError(f"CKA needs more than 3 examples, got {n}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)) if shuffle else None
    acc = CKAAccumulator(len(acts_a), None if acts_b is None else len(acts_b), device=device, n_boot=1)
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        if stop - start <= 3:
            break
        rows = slice(start, stop) if order is None else order[start:stop]
        acc.update([t[rows] for t in acts_a], None if acts_b is None else [t[rows] for t in acts_b])
    return acc.result()


def default_k(n_points: int) -> int:
    """Default top-k of the soft alignment index for a baseline with ``n_points`` layer points:
    about one sixth of them, at least 1 (the paper uses k = 5 on a far deeper model). With a fixed k = 5 a
    9-point model can only show indices between 2 and 6 (see :func:`soft_alignment_range`)."""
    return max(1, min(n_points, round(n_points / 6)))


def soft_alignment_range(k: int, n_points: int) -> tuple[float, float]:
    """The range the soft alignment index can take when its top-k CKA values are about equal (as
    they are when CKA is high and flat): the mean of k distinct layer indices of ``0..n_points-1``,
    i.e. ``((k - 1) / 2, n_points - 1 - (k - 1) / 2)``, in B's layer units. Only a row whose top-k
    values differ a lot can leave it (hard bounds ``0`` and ``n_points - 1``)."""
    k = max(1, min(int(k), n_points))
    return (k - 1) / 2, n_points - 1 - (k - 1) / 2


def soft_alignment(cka: torch.Tensor, k: int | None = None) -> torch.Tensor:
    """Soft alignment index per row (paper eq. 9): ``a_j = sum_{i in top-k} S_ji * i / sum S_ji``.

    ``cka``: ``[L_a, L_b]`` (rows: the Engram model's layers; columns: the baseline's). ``k``
    defaults to :func:`default_k` of ``L_b``. Returns ``[L_a]`` float64, in units of B's layer
    index; NaN where the top-k values sum to <= 0.
    """
    cka = cka.to(torch.float64)
    k = default_k(cka.shape[-1]) if k is None else max(1, min(int(k), cka.shape[-1]))
    vals, idx = torch.topk(torch.nan_to_num(cka, nan=-torch.inf), k, dim=-1)
    vals = torch.nan_to_num(vals, neginf=0.0)
    total = vals.sum(dim=-1)
    num = (vals * idx.to(torch.float64)).sum(dim=-1)
    return torch.where(total > 0, num / total.clamp_min(1e-300), torch.full_like(total, float("nan")))


def cka_argmax(cka: torch.Tensor) -> torch.Tensor:
    """Index of B's most similar layer for each layer of A: ``[L_a]`` int64."""
    return torch.nan_to_num(cka, nan=-torch.inf).argmax(dim=-1)


