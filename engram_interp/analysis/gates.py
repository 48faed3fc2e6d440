"""Gate-activation maps (docs/ANALYSES.md section 3): alpha_t per token, Engram layer and branch.

``gate_map(model, text)``: every token's gates (``blocks.{l}.engram.hook_gate``, ``[batch, pos, branch]``).
``GateNgramAccumulator``: over a corpus, per suffix n-gram (the 2- and 3-gram of raw token ids
ending at t, only n-grams that lie inside the text, BOS excluded): count, sum, sum of squares
and max of each (layer, branch) gate. Its memory grows with the number of distinct n-grams (not
with tokens); ``max_ngrams`` caps it by pruning the rarest entries (then ``pruned`` is True and
counts of pruned n-grams restart from 0 if they come back).
Branch selectivity: eta^2 of the gate explained by 3-gram identity among 3-grams seen at least
``min_count`` times (between-n-gram variance / total variance); higher = the branch's gate
depends more on which pattern just completed. With many distinct n-grams in few tokens eta^2 is
large by construction (a group of 3 explains much of its own variance), so it is reported with
(docs/ANALYSES.md section 3):

* a permutation baseline: the same statistic after the n-gram labels of the counted tokens are
  shuffled within each batch (``n_perm`` shuffles, default ``PERMUTATIONS`` = 999, drawn at the end
  from a log of the tokens' labels and gates, so the group sizes stay exactly the same), its mean and
  maximum, and ``p = (1 + #{shuffles >= observed}) / (1 + n_perm)``, never below ``1 / (1 + n_perm)``;
  when the batches allow no more than ``n_perm`` distinct relabellings, every one is enumerated and
  ``p = #{relabellings >= observed} / #relabellings`` (exact);
* omega^2, the bias-adjusted share ``(SS_b - (G - 1) MS_w) / (SS_t + MS_w)`` (about 0 under the
  null, where eta^2 is about ``(G - 1) / (N - 1)``).

A channel "tracks n-grams" only when ``p <= ALPHA`` and the statistic rests on at least
``MIN_GROUPS`` n-grams; with fewer the result says "too few n-grams (G)". The log costs 8 bytes per
token and channel of the permutation order (float64).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import torch

from engram_interp.analysis._dist import all_gather_objects, all_reduce_sum_, shard
from engram_interp.analysis.common import check_texts, model_name, require_engram, token_batches
from engram_interp.analysis.gate_map import GateMap, _gate_names, gate_map
from engram_interp.analysis.permutation import permutation_test
from engram_interp.defaults import DEFAULTS
from engram_interp.analysis.progress import count_tokens, token_progress

__all__ = ["GateMap", "gate_map", "GateNgramAccumulator", "NgramStat", "GateCorpusResult", "gate_corpus",
           "PERMUTATIONS", "ALPHA", "MIN_GROUPS"]

PERMUTATIONS = DEFAULTS.permutations  # label shuffles of the selectivity's permutation test
ALPHA = DEFAULTS.alpha  # level of the permutation test behind "tracks n-grams"
MIN_GROUPS = DEFAULTS.min_ngrams  # n-grams (seen >= min_count times) a selectivity statement needs


class GateNgramAccumulator:
    """Per suffix n-gram statistics of the gates. ``update(tokens, mask, gates)`` with ``tokens``
    ``[b, p]``, ``mask`` ``[b, p]`` (real, non-BOS), ``gates`` ``[b, p, C]`` with C = layers x branches."""

    def __init__(self, n_channels: int, vocab_size: int, orders: Sequence[int] = (2, 3), max_ngrams: int = 2_000_000,
                 n_perm: int = PERMUTATIONS, seed: int = 0):
        self.C = n_channels
        self.V = int(vocab_size)
        self.orders = tuple(orders)
        self.max_ngrams = max_ngrams
        self.n_perm = n_perm  # label shuffles of the permutation baseline (order max(orders) only)
        self.perm_order = max(self.orders)
        self.seed = seed
        self.pruned = False
        self.index: dict[tuple[int, int], int] = {}  # (order, key) -> row
        self.keys: list[tuple[int, int]] = []
        cap = 1024
        self.count = torch.zeros(cap, dtype=torch.float64)
        self.sum = torch.zeros(cap, self.C, dtype=torch.float64)
        self.sumsq = torch.zeros(cap, self.C, dtype=torch.float64)
        self.max = torch.full((cap, self.C), -1.0, dtype=torch.float64)
        self.log_rows: list[torch.Tensor] = []  # per update: row of each token's n-gram of perm_order [m]
        self.log_vals: list[torch.Tensor] = []  # its gates [m, C] float64; one entry per batch (a stratum)
        self.log_index: list[int] = []  # the batch's place in the corpus: strata are shuffled in this order
        self.tokens_seen = 0

    def _grow(self, need: int) -> None:
        cap = self.count.shape[0]
        if need <= cap:
            return
        new = max(need, 2 * cap)
        self.count = torch.cat([self.count, torch.zeros(new - cap, dtype=torch.float64)])
        self.sum = torch.cat([self.sum, torch.zeros(new - cap, self.C, dtype=torch.float64)])
        self.sumsq = torch.cat([self.sumsq, torch.zeros(new - cap, self.C, dtype=torch.float64)])
        self.max = torch.cat([self.max, torch.full((new - cap, self.C), -1.0, dtype=torch.float64)])

    def update(self, tokens: torch.Tensor, mask: torch.Tensor, gates: torch.Tensor, index: int | None = None) -> None:
        """Add one batch. ``index``: the batch's global position in the corpus (default: the order of
        the calls); the permutation test visits its strata in that order, so a run split across
        processes (``torchrun``) draws the same shuffles as one process."""
        tokens, mask = tokens.cpu(), mask.cpu()
        g = gates.detach().to("cpu", torch.float64)
        self.tokens_seen += int(mask.sum())
        for n in self.orders:
            if tokens.shape[1] < n:
                continue
            # key of the n-gram ending at t: sum_i id_{t-i} * V^i (int64: fine for V^3 < 9e18)
            valid = mask[:, n - 1:].clone()
            key = torch.zeros_like(tokens[:, n - 1:])
            for i in range(n):
                sl = slice(n - 1 - i, tokens.shape[1] - i)
                key += tokens[:, sl] * (self.V ** i)
                valid &= mask[:, sl]
            k = key[valid]
            if k.numel() == 0:
                continue
            vals = g[:, n - 1:][valid]  # [m, C]
            uniq, inv = torch.unique(k, return_inverse=True)
            rows = []
            for u in uniq.tolist():
                r = self.index.get((n, u))
                if r is None:
                    r = len(self.keys)
                    self.index[(n, u)] = r
                    self.keys.append((n, u))
                rows.append(r)
            self._grow(len(self.keys))
            rows_t = torch.tensor(rows, dtype=torch.long)[inv]
            self.count.index_add_(0, rows_t, torch.ones(len(rows_t), dtype=torch.float64))
            self.sum.index_add_(0, rows_t, vals)
            self.sumsq.index_add_(0, rows_t, vals * vals)
            self.max.scatter_reduce_(0, rows_t[:, None].expand(-1, self.C), vals, "amax")
            if n == self.perm_order and self.n_perm:
                self.log_rows.append(rows_t)
                self.log_vals.append(vals.clone())
                self.log_index.append(len(self.log_index) if index is None else int(index))
        if len(self.keys) > self.max_ngrams:
            self._prune()

    def _prune(self) -> None:
        n = len(self.keys)
        keep = torch.argsort(self.count[:n], descending=True)[: self.max_ngrams // 2].sort().values
        self.keys = [self.keys[i] for i in keep.tolist()]
        self.index = {k: i for i, k in enumerate(self.keys)}
        self.count, self.sum = self.count[keep].clone(), self.sum[keep].clone()
        self.sumsq, self.max = self.sumsq[keep].clone(), self.max[keep].clone()
        remap = torch.full((n,), -1, dtype=torch.long)
        remap[keep] = torch.arange(len(keep))
        for i, (r, v) in enumerate(zip(self.log_rows, self.log_vals)):
            r = remap[r]
            self.log_rows[i], self.log_vals[i] = r[r >= 0], v[r >= 0]  # pruned n-grams leave the test
        self.pruned = True

    def merge_state(self, state: dict) -> None:
        """Add another accumulator's ``state_dict()`` into this one."""
        keys = state["keys"]
        rows = []
        for k in keys:
            k = tuple(k)
            r = self.index.get(k)
            if r is None:
                r = len(self.keys)
                self.index[k] = r
                self.keys.append(k)
            rows.append(r)
        self._grow(len(self.keys))
        if rows:
            rt = torch.tensor(rows, dtype=torch.long)
            self.count.index_add_(0, rt, state["count"])
            self.sum.index_add_(0, rt, state["sum"])
            self.sumsq.index_add_(0, rt, state["sumsq"])
            self.max.scatter_reduce_(0, rt[:, None].expand(-1, self.C), state["max"], "amax")
        else:
            rt = torch.zeros(0, dtype=torch.long)
        for r, v, i in zip(state["log_rows"], state["log_vals"], state["log_index"]):
            self.log_rows.append(rt[r])
            self.log_vals.append(v)
            self.log_index.append(i)
        self.tokens_seen += state["tokens_seen"]
        self.pruned |= state["pruned"]

    def state_dict(self) -> dict:
        n = len(self.keys)
        return {"keys": list(self.keys), "count": self.count[:n].clone(), "sum": self.sum[:n].clone(),
                "sumsq": self.sumsq[:n].clone(), "max": self.max[:n].clone(), "log_rows": list(self.log_rows),
                "log_vals": list(self.log_vals), "log_index": list(self.log_index), "tokens_seen": self.tokens_seen,
                "pruned": self.pruned}

    def all_reduce(self, group=None) -> "GateNgramAccumulator":
        """Merge the n-gram tables of all ``torch.distributed`` processes into every process."""
        states = all_gather_objects(self.state_dict(), group)
        if len(states) > 1:
            fresh = GateNgramAccumulator(self.C, self.V, self.orders, self.max_ngrams, self.n_perm, self.seed)
            for s in states:
                fresh.merge_state(s)
            self.__dict__.update(fresh.__dict__)
        return self

    def sort_keys(self) -> "GateNgramAccumulator":
        """Put the n-gram rows in (order, key) order and the strata in corpus order: the same table and
        the same permutation test however the corpus was split."""
        n = len(self.keys)
        perm = sorted(range(n), key=lambda i: self.keys[i])
        keep = torch.tensor(perm, dtype=torch.long)
        remap = torch.empty(max(n, 1), dtype=torch.long)
        remap[keep] = torch.arange(n)
        self.keys = [self.keys[i] for i in perm]
        self.index = {k: i for i, k in enumerate(self.keys)}
        self.count, self.sum, self.sumsq, self.max = (x[:n][keep].clone() for x in (self.count, self.sum, self.sumsq, self.max))
        order = sorted(range(len(self.log_index)), key=lambda j: self.log_index[j])
        self.log_rows = [remap[self.log_rows[j]] for j in order]
        self.log_vals = [self.log_vals[j] for j in order]
        self.log_index = [self.log_index[j] for j in order]
        return self

    def decode_key(self, order: int, key: int) -> list[int]:
        """Token ids (oldest first) of an n-gram key."""
        ids = []
        for _ in range(order):
            ids.append(key % self.V)
            key //= self.V
        return ids[::-1]

    def _groups(self, min_count: int, order: int) -> torch.Tensor:
        n = len(self.keys)
        rows = torch.tensor([i for i, (o, _) in enumerate(self.keys) if o == order], dtype=torch.long)
        return rows[self.count[:n][rows] >= min_count] if rows.numel() else rows

    def selectivity_stats(self, min_count: int = 3, order: int = 3) -> dict[str, torch.Tensor]:
        """Per channel ``[C]`` float64, over the n-grams of ``order`` seen at least ``min_count`` times
        (NaN where there are none): ``eta2`` (between-n-gram / total sum of squares), ``omega2``
        (bias-adjusted), ``perm_mean``/``perm_max`` (eta^2 with shuffled labels; NaN unless ``order``
        is the permutation order), ``p`` (permutation p-value), ``groups``/``tokens`` (G and N)."""
        rows = self._groups(min_count, order)
        nan = torch.full((self.C,), float("nan"), dtype=torch.float64)
        if rows.numel() == 0:
            return {"eta2": nan, "omega2": nan, "perm_mean": nan, "perm_max": nan, "p": nan,
                    "groups": torch.zeros(()), "tokens": torch.zeros(())}
        c, s, sq = self.count[rows, None], self.sum[rows], self.sumsq[rows]
        total_n, g = c.sum(), float(rows.numel())
        grand = s.sum(0) / total_n
        ss_total = sq.sum(0) - total_n * grand**2
        ok = ss_total > 0
        ss_between = (s * s / c).sum(0) - total_n * grand**2
        eta2 = torch.where(ok, ss_between / ss_total.clamp_min(1e-300), nan)
        ms_within = (ss_total - ss_between).clamp_min(0) / max(float(total_n) - g, 1.0)
        omega2 = torch.where(ok, (ss_between - (g - 1) * ms_within) / (ss_total + ms_within).clamp_min(1e-300), nan)
        perm_mean = perm_max = p = nan
        exact, n_null = False, 0
        if order == self.perm_order and self.n_perm:
            perm_mean, perm_max, p, exact, n_null = permutation_test(self._log(rows), rows.numel(), self.n_perm, self.seed)
            p = torch.where(ok, p, nan)
        return {"eta2": eta2, "omega2": omega2, "perm_mean": perm_mean, "perm_max": perm_max, "p": p,
                "groups": torch.tensor(g), "tokens": total_n, "exact": exact, "n_null": n_null}

    def _log(self, rows: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per batch: (labels 0..G-1 of its tokens whose n-gram is one of ``rows``, their gates [m, C] float64)."""
        pos = torch.full((max(len(self.keys), 1),), -1, dtype=torch.long)
        pos[rows] = torch.arange(rows.numel())
        out = []
        for r, v in zip(self.log_rows, self.log_vals):
            lab = pos[r]
            if bool((lab >= 0).any()):
                out.append((lab[lab >= 0], v[lab >= 0]))
        return out

    def selectivity(self, min_count: int = 3, order: int = 3) -> torch.Tensor:
        """eta^2 per channel ``[C]``: share of gate variance explained by n-gram identity among the
        n-grams of ``order`` seen at least ``min_count`` times (NaN if none). Read it next to
        :meth:`selectivity_stats` (permutation baseline, omega^2): it is inflated by small groups."""
        return self.selectivity_stats(min_count, order)["eta2"]


def tracks_ngrams(stats: dict) -> list[bool]:
    """Per channel: ``p <= ALPHA`` on at least ``MIN_GROUPS`` n-grams (``selectivity_stats``' dict)."""
    enough = int(stats["groups"]) >= MIN_GROUPS
    return [enough and p <= ALPHA for p in torch.nan_to_num(stats["p"], nan=2.0).tolist()]


@dataclass
class NgramStat:
    """One suffix n-gram: its text, token ids, order, count, mean and max gate on the chosen channel."""

    text: str
    ids: list[int]
    order: int
    count: int
    mean: float
    max: float


@dataclass
class GateCorpusResult:
    """Gate statistics over a corpus. ``channels``: ``(layer, branch)`` pairs; ``mean_gate[c]``: mean
    alpha over tokens; ``selectivity[c]``: eta^2 (see module doc); ``selectivity_omega2[c]``: its
    bias-adjusted value; ``selectivity_perm_mean``/``selectivity_perm_max[c]``: eta^2 with shuffled
    n-gram labels (``n_perm`` shuffles); ``selectivity_p[c]``: permutation p-value;
    ``selectivity_groups``/``selectivity_tokens``: the G n-grams and N tokens it is computed over;
    ``branch_ranking``: channels sorted by omega^2, best first; ``n_perm``: relabellings the p-value
    compares (shuffles, or every relabelling when ``selectivity_exact``); ``tracks_ngrams[c]``:
    ``p <= ALPHA`` on at least ``MIN_GROUPS`` n-grams; ``too_few``: "too few n-grams (G; ...)" when the
    n-grams are fewer (nothing is stated then), else None; ``top``/``bottom[c]``: n-grams with the highest/lowest mean gate among those seen at
    least ``min_count`` times. Gate values are in (0, 1); eta^2 and omega^2 are shares of variance."""

    name: str
    channels: list[tuple[int, int]]
    n_tokens: int
    n_ngrams: int
    min_count: int
    mean_gate: list[float]
    selectivity: list[float | None]
    branch_ranking: list[tuple[int, int]]
    top: dict[str, list[NgramStat]] = field(default_factory=dict)
    bottom: dict[str, list[NgramStat]] = field(default_factory=dict)
    pruned: bool = False
    selectivity_omega2: list[float | None] = field(default_factory=list)
    selectivity_perm_mean: list[float | None] = field(default_factory=list)
    selectivity_perm_max: list[float | None] = field(default_factory=list)
    selectivity_p: list[float | None] = field(default_factory=list)
    selectivity_groups: int = 0
    selectivity_tokens: int = 0
    n_perm: int = 0
    tracks_ngrams: list[bool] = field(default_factory=list)
    selectivity_exact: bool = False
    too_few: str | None = None

    def to_dict(self) -> dict:
        from engram_interp.analysis.cka_models import _nan_to_none

        return _nan_to_none(asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


@torch.no_grad()
def gate_corpus(
    model,
    texts: Sequence[str] | str,
    *,
    batch_size: int = 8,
    max_tokens: int | None = 20000,
    min_count: int = 3,
    top_n: int = 20,
    orders: Sequence[int] = (2, 3),
    progress: bool = False,
    name: str | None = None,
    n_perm: int = PERMUTATIONS,
    seed: int = 0,
    on_progress: Callable[[int, int | None, str], None] | None = None,
) -> GateCorpusResult:
    """Aggregate gates per suffix n-gram over ``texts``: mean gate per channel, branch selectivity
    (eta^2, omega^2, permutation baseline of ``n_perm`` seeded label shuffles) and its ranking,
    top/bottom n-grams (by mean gate, count >= ``min_count``) per (layer, branch).
    ``on_progress(tokens done, max_tokens, name)`` is called after each batch (the app's progress bar)."""
    require_engram(model, "gate statistics")
    texts = check_texts(texts)
    names = _gate_names(model)
    M = model.info.n_branches
    channels = [(l, b) for l in model.engram_layers for b in range(M)]
    acc = GateNgramAccumulator(len(channels), model.info.vocab_size, orders, n_perm=n_perm, seed=seed)
    gate_sum = torch.zeros(len(channels), dtype=torch.float64)
    done = 0
    # under torchrun each process takes every world-size-th batch (its index orders the permutation strata)
    it = token_progress(shard(enumerate(token_batches(model, texts, batch_size, max_tokens))),
                        count_tokens(model, texts, max_tokens, batch_size) if progress else None,
                        f"gates {name or model_name(model)}", lambda ib: int(ib[1].mask.sum()), progress)
    for index, batch in it:
        _, cache = model.run_with_cache(batch.tokens, names_filter=lambda n: n in names, return_type=None)
        g = torch.cat([cache[n] for n in names], dim=-1)  # [b, p, layers*M], layer-major
        acc.update(batch.tokens, batch.mask, g, index=index)
        gate_sum += g[batch.mask].double().sum(0).cpu()
        done += int(batch.mask.sum())
        if on_progress is not None:
            on_progress(done, max_tokens, name or model_name(model))
    acc.all_reduce().sort_keys()
    all_reduce_sum_([gate_sum])
    stats = acc.selectivity_stats(min_count, order=max(orders))
    sel = stats["eta2"]
    ranking = [channels[i] for i in torch.argsort(torch.nan_to_num(stats["omega2"], nan=-2.0), descending=True).tolist()]
    enough = int(stats["groups"]) >= MIN_GROUPS
    tracks = tracks_ngrams(stats)
    n = len(acc.keys)
    eligible = [i for i in range(n) if acc.count[i] >= min_count]
    top, bottom = {}, {}
    if eligible:
        el = torch.tensor(eligible)
        means = acc.sum[el] / acc.count[el, None]
        for c, (l, b) in enumerate(channels):
            order = torch.argsort(means[:, c], descending=True, stable=True)
            def stat(j: int) -> NgramStat:
                row = eligible[j]
                o, key = acc.keys[row]
                ids = acc.decode_key(o, key)
                return NgramStat(text=model.decode(ids), ids=ids, order=o,
                                 count=int(acc.count[row]), mean=float(means[j, c]), max=float(acc.max[row, c]))
            top[f"{l}.{b}"] = [stat(j) for j in order[:top_n].tolist()]
            bottom[f"{l}.{b}"] = [stat(j) for j in order.flip(0)[:top_n].tolist()]
    n_tok = max(acc.tokens_seen, 1)
    return GateCorpusResult(
        name=name or model_name(model), channels=channels, n_tokens=acc.tokens_seen, n_ngrams=n, min_count=min_count,
        mean_gate=(gate_sum / n_tok).tolist(), selectivity=sel.tolist(), branch_ranking=ranking, top=top,
        bottom=bottom, pruned=acc.pruned, selectivity_omega2=stats["omega2"].tolist(),
        selectivity_perm_mean=stats["perm_mean"].tolist(), selectivity_perm_max=stats["perm_max"].tolist(),
        selectivity_p=stats["p"].tolist(), selectivity_groups=int(stats["groups"]), selectivity_tokens=int(stats["tokens"]),
        n_perm=int(stats.get("n_null", 0)), tracks_ngrams=tracks, selectivity_exact=bool(stats.get("exact", False)),
        too_few=None if enough else f"too few n-grams ({int(stats['groups'])}; {MIN_GROUPS} seen >= {min_count} times needed)",
    )
