"""Where the memory helps (docs/ANALYSES.md, "Where the memory helps"): the per-token loss of an Engram
model minus its MoE baseline (and minus the Engram-null arm), bucketed by what the memory sees.

At a position t the model predicts token t+1 from, among others, the table rows of the suffix n-grams
ending at t (orders n = 2..N). Every real position that has a next token is counted once in each of:

- **frequency** (per order n): the count of its order-n n-gram in a counting corpus
  (:mod:`engram_interp.analysis.ngram_counts`): *cold* below ``cold`` occurrences, *hot* at ``hot`` or
  more, *warm* between;
- **collision** (per order n): of its order-n rows (Engram layers x K heads), how many another counted
  n-gram also reads: *none*, *some* or *all*;
- **gate** (per Engram layer): the Engram model's gate at t (mean over streams) in ``gate_bins`` equal bins
  of [0, 1];
- **all**.

Per bucket: the mean loss of every model (nats/token) and the differences Engram - baseline and Engram -
Engram-null, with 95% percentile intervals from a Poisson bootstrap over token batches.

**Capacity sweep** (Engram issue #24, "a capacity-1 table works as well"): the same losses with every table
folded to k rows per head at inference (``InterpModel.engram_capacity(k)``: row r -> r mod k), for each k
of ``capacities`` and the full table.

Pre-stated statistics (the findings, ``engram_interp.claims.memory_help``): ``hot_minus_cold``, the
Engram - baseline difference on hot minus that on cold n-grams of the highest order (negative: the memory
helps more where the n-gram is frequent), the same for the Engram-null arm, and ``capacity1_rise``, the
mean loss at k = 1 minus that of the full table (positive: the table's content matters).

Streaming: the accumulators hold sums per bucket (and per bootstrap replicate), so memory does not grow
with the tokens analysed; only the counting corpus's distinct n-grams are held.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
import torch

from engram_interp.analysis._dist import poisson_weights
from engram_interp.analysis.resample import percentile_ci
from engram_interp.analysis.common import check_texts, model_name, require_engram, same_tokenizer, token_batches
from engram_interp.analysis.progress import count_tokens, token_progress
from engram_interp.errors import EngramInterpError

__all__ = ["FREQUENCY", "COLLISION", "CAPACITIES", "LossBuckets", "MemoryHelpResult", "memory_help", "memory_help_set",
           "token_losses"]

FREQUENCY = ("cold", "warm", "hot")
COLLISION = ("none", "some", "all")
CAPACITIES = (1, 16, 256)  # rows per head of the sweep; the full table is always added


class LossBuckets:
    """Float64 sums of per-token losses ``[bucket, column]`` and token counts per bucket, with the same
    sums under Poisson(1) bootstrap weights per batch (``n_boot`` replicates keyed by ``seed``)."""

    def __init__(self, labels: Sequence[tuple], n_cols: int, n_boot: int = 200, seed: int = 0):
        self.labels, self.index = list(labels), {lab: i for i, lab in enumerate(labels)}
        nb = len(self.labels)
        self.sums = torch.zeros(nb, n_cols, dtype=torch.float64)
        self.n = torch.zeros(nb, dtype=torch.float64)
        self.boot = torch.zeros(n_boot, nb, n_cols, dtype=torch.float64)
        self.boot_n = torch.zeros(n_boot, nb, dtype=torch.float64)
        self.n_boot, self.seed = int(n_boot), int(seed)

    def update(self, buckets: Sequence[torch.Tensor], nll: torch.Tensor, batch_index: int) -> None:
        """``buckets``: per dimension a LongTensor ``[m]`` of bucket indices (-1: none); ``nll [m, n_cols]``."""
        w = poisson_weights(self.seed, batch_index, self.n_boot)
        nb, cols = self.sums.shape
        for ix in buckets:
            keep = ix >= 0
            s = torch.zeros(nb, cols, dtype=torch.float64).index_add_(0, ix[keep], nll[keep])
            c = torch.zeros(nb, dtype=torch.float64).index_add_(0, ix[keep], torch.ones(int(keep.sum()), dtype=torch.float64))
            self.sums += s
            self.n += c
            self.boot += w[:, None, None] * s
            self.boot_n += w[:, None] * c

    def mean(self, b: int, col: int) -> float | None:
        return None if self.n[b] == 0 else float(self.sums[b, col] / self.n[b])

    def diff(self, b: int, col: int, ref: int, b2: int | None = None) -> tuple[float | None, list[float] | None]:
        """Mean of ``col`` minus mean of ``ref`` in bucket ``b`` (minus the same in ``b2`` when given), and
        its 95% percentile bootstrap interval (None where a bucket is empty)."""
        def stat(sums, n):
            d = sums[..., b, col] / n[..., b] - sums[..., b, ref] / n[..., b]
            return d if b2 is None else d - (sums[..., b2, col] / n[..., b2] - sums[..., b2, ref] / n[..., b2])

        if self.n[b] == 0 or (b2 is not None and self.n[b2] == 0):
            return None, None
        value = float(stat(self.sums, self.n))
        reps = stat(self.boot, self.boot_n)
        reps = reps[torch.isfinite(reps)]
        if not self.n_boot or reps.numel() < 2:
            return value, None
        lo, hi = percentile_ci(reps)
        return value, [float(lo), float(hi)]


@dataclass
class MemoryHelpResult:
    """One Engram model against its baseline. ``buckets``: ``[{dim, key, bucket, n_tokens, share, loss:
    {column: nats/token}, delta_baseline, delta_baseline_ci, delta_null, delta_null_ci}]`` (``key``: the
    order for frequency / collision, the layer for gate, None for all); ``capacity``: ``[{k (None = full),
    loss, delta_baseline, delta_baseline_ci, rise, rise_ci, by_frequency: {bucket: delta_baseline}}]``;
    the pre-stated statistics ``hot_minus_cold`` / ``hot_minus_cold_null`` / ``capacity1_rise`` as
    ``{value, ci}`` (nats/token)."""

    name: str
    baseline: str
    null: str | None
    counts: dict
    n_tokens: int
    order: int
    orders: list[int]
    layers: list[int]
    columns: list[str]
    buckets: list[dict] = field(default_factory=list)
    capacity: list[dict] = field(default_factory=list)
    hot_minus_cold: dict = field(default_factory=dict)
    hot_minus_cold_null: dict | None = None
    capacity1_rise: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def token_losses(model, tokens: torch.Tensor, targets_at: torch.Tensor, gate_layers: Sequence[int] = ()
                 ) -> tuple[torch.Tensor, dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    """Next-token losses at the positions ``targets_at [b, p-1]`` (bool; position t predicts t+1), float64
    nats ``[m]`` (row-major), and, for ``gate_layers``, the gate (mean over streams) ``{layer: [m]}`` and
    the raw ``hook_hash_ids`` ``{layer: [m, H]}`` at those positions."""
    names = {f"blocks.{l}.engram.{h}" for l in gate_layers for h in ("hook_gate", "hook_hash_ids")}
    logits, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
    logp = torch.log_softmax(logits[:, :-1].double(), dim=-1)
    nll = -logp.gather(-1, tokens[:, 1:, None].to(logp.device)).squeeze(-1)[targets_at.to(logp.device)]
    gates, ids = {}, {}
    for l in gate_layers:
        g = cache[f"blocks.{l}.engram.hook_gate"][:, :-1]
        gates[l] = (g.double().mean(-1) if g.dim() == 3 else g.double())[targets_at.to(g.device)].cpu()
        ids[l] = cache[f"blocks.{l}.engram.hook_hash_ids"][:, :-1][targets_at.to(g.device)].cpu()
    return nll.cpu(), gates, ids


def _labels(orders, layers, gate_bins) -> list[tuple]:
    return ([("all", None, "all")] + [("frequency", n, b) for n in orders for b in FREQUENCY]
            + [("collision", n, b) for n in orders for b in COLLISION]
            + [("gate", l, f"{i / gate_bins:.2f}-{(i + 1) / gate_bins:.2f}") for l in layers for i in range(gate_bins)])


def _check_rows(model_ids: dict[int, torch.Tensor], rows: dict[int, np.ndarray], tables) -> None:
    for l, hid in model_ids.items():
        got = hid.long().numpy()
        if not (np.array_equal(got, rows[l]) or np.array_equal(got, rows[l] + tables.offsets(l))):
            raise EngramInterpError(f"{tables.source} hashes these tokens differently from the model at layer {l}; "
                                    "give the tables of the model itself")


@torch.no_grad()
def memory_help(model, baseline, texts: Sequence[str] | str, counts, tables, *, null=None,
                capacities: Sequence[int] = CAPACITIES, cold: int = 2, hot: int = 10, gate_bins: int = 5,
                batch_size: int = 8, max_tokens: int | None = 20000, n_boot: int = 200, seed: int = 0,
                names: tuple[str, str, str | None] | None = None, progress: bool = False) -> MemoryHelpResult:
    """Bucketed losses of ``model`` against ``baseline`` (and ``null``) on ``texts`` (see the module
    docstring). ``counts``: an :class:`~engram_interp.analysis.ngram_counts.NgramCounts` of the counting
    corpus; ``tables``: the ``TableSource`` of ``model`` (its hashing, checked against the model's
    ``hook_hash_ids``); ``names``: display names (model, baseline, null)."""
    texts = check_texts(texts)
    require_engram(model, "memory-help")
    for other in (baseline, null):
        if other is not None:
            same_tokenizer(model, other)
    if not 0 < cold <= hot:
        raise EngramInterpError(f"need 0 < cold <= hot occurrences, got cold={cold}, hot={hot}")
    caps = sorted({int(k) for k in capacities})
    if caps and caps[0] < 1:
        raise EngramInterpError(f"every capacity must be >= 1 row per head, got {caps[0]}")
    names = names or (model_name(model), model_name(baseline, "baseline"), None if null is None else model_name(null, "null"))
    layers, orders = list(model.engram_layers), list(counts.orders)
    columns = ["engram", "baseline"] + (["null"] if null is not None else []) + [f"k={k}" for k in caps]
    acc = LossBuckets(_labels(orders, layers, gate_bins), len(columns), n_boot, seed)
    lab = acc.index
    first_gate = {l: next(i for i, x in enumerate(acc.labels) if x[:2] == ("gate", l)) for l in layers}
    batches = token_batches(model, texts, batch_size=batch_size, max_tokens=max_tokens)
    total = count_tokens(model, texts, max_tokens) if progress else None
    n_tokens = 0
    for bi, batch in enumerate(token_progress(batches, total, f"memory-help {names[0]}", lambda b: int(b.mask.sum()), progress)):
        at = (batch.mask[:, :-1] & batch.mask[:, 1:]).cpu()  # real position t with a real next token
        m = int(at.sum())
        if m == 0:
            continue
        tok = batch.tokens
        nll_e, gates, hook_ids = token_losses(model, tok, at, layers)
        cols = [nll_e, token_losses(baseline, tok.to(baseline.device), at)[0]]
        if null is not None:
            cols.append(token_losses(null, tok.to(null.device), at)[0])
        for k in caps:
            with model.engram_capacity(k):
                cols.append(token_losses(model, tok, at)[0])
        nll = torch.stack(cols, dim=1)
        lens = batch.mask.sum(1).cpu() + (1 if model.info.bos_token_id is not None else 0)
        ctx = np.concatenate([tables.contexts(tok[r, : int(lens[r])].tolist())[: int(lens[r]) - 1][at[r, : int(lens[r]) - 1].numpy()]
                              for r in range(tok.shape[0])])
        rows = {l: tables.rows(l, ctx) for l in layers}
        if bi == 0:
            _check_rows(hook_ids, rows, tables)
        dims = [torch.full((m,), lab[("all", None, "all")], dtype=torch.long)]
        for n in orders:
            cnt, shared = counts.lookup(n, ctx, rows)
            f = np.where(cnt >= hot, 2, np.where(cnt < cold, 0, 1))
            c = np.where(shared == 0, 0, np.where(shared >= counts.n_rows, 2, 1))
            dims.append(torch.as_tensor(lab[("frequency", n, FREQUENCY[0])] + f))
            dims.append(torch.as_tensor(lab[("collision", n, COLLISION[0])] + c))
        for l in layers:
            dims.append(first_gate[l] + (gates[l] * gate_bins).long().clamp(0, gate_bins - 1))
        acc.update(dims, nll, bi)
        n_tokens += m
    if n_tokens == 0:
        raise EngramInterpError("no tokens with a next token to score: give more text")
    return _result(acc, columns, names, counts, n_tokens, orders, layers, caps, cold, hot)


def _result(acc: LossBuckets, columns, names, counts, n_tokens, orders, layers, caps, cold, hot) -> MemoryHelpResult:
    E, B = columns.index("engram"), columns.index("baseline")
    N = columns.index("null") if "null" in columns else None
    out = MemoryHelpResult(name=names[0], baseline=names[1], null=names[2], n_tokens=n_tokens, order=max(orders),
                           orders=orders, layers=layers, columns=columns,
                           counts={"corpus": counts.corpus, "positions": counts.n_positions, "texts": counts.n_texts,
                                   "cold": cold, "hot": hot})
    for i, (dim, key, bucket) in enumerate(acc.labels):
        d, dci = acc.diff(i, E, B)
        dn, dnci = acc.diff(i, E, N) if N is not None else (None, None)
        out.buckets.append({"dim": dim, "key": key, "bucket": bucket, "n_tokens": int(acc.n[i]),
                            "share": float(acc.n[i] / n_tokens), "loss": {c: acc.mean(i, j) for j, c in enumerate(columns)},
                            "delta_baseline": d, "delta_baseline_ci": dci, "delta_null": dn, "delta_null_ci": dnci})
    top = out.order
    hot_i, cold_i = acc.index[("frequency", top, "hot")], acc.index[("frequency", top, "cold")]
    v, ci = acc.diff(hot_i, E, B, cold_i)
    out.hot_minus_cold = {"value": v, "ci": ci}
    if N is not None:
        v, ci = acc.diff(hot_i, N, B, cold_i)
        out.hot_minus_cold_null = {"value": v, "ci": ci}
    everything = acc.index[("all", None, "all")]
    for k in caps + [None]:
        col = E if k is None else columns.index(f"k={k}")
        d, dci = acc.diff(everything, col, B)
        rise, rci = (0.0, None) if k is None else acc.diff(everything, col, E)
        by = {b: acc.diff(acc.index[("frequency", top, b)], col, B)[0] for b in FREQUENCY}
        out.capacity.append({"k": k, "loss": acc.mean(everything, col), "delta_baseline": d, "delta_baseline_ci": dci,
                             "rise": rise, "rise_ci": rci, "by_frequency": by})
        if k == 1:
            out.capacity1_rise = {"value": rise, "ci": rci}
    return out


def memory_help_set(pairs: Sequence[tuple], texts: Sequence[str] | str, *, count_texts: Sequence[str] | None = None,
                    count_label: str = "the analysed corpus", count_tokens: int | None = 1_000_000,
                    count_stream: str | None = None, twin: bool = False, twin_seed: int = 0, **kw) -> dict:
    """:func:`memory_help` for every seed ``pairs = [(model, baseline, null or None, (names))]`` (the first
    being the named models) and, with ``twin``, for the untrained twins of the first model and baseline
    (``twin_seed``; named ``NAME~twin``). Each model's tables are read from its own file (``info.source``);
    n-grams are counted on ``count_texts`` (default ``texts``) or on the training stream ``count_stream`` (a
    ``train.bin``: :func:`~engram_interp.analysis.ngram_counts.count_stream`), at most ``count_tokens`` positions. Returns
    ``{"models": [MemoryHelpResult dicts], "twin": dict or None}``; ``kw`` goes to :func:`memory_help`."""
    from engram_interp.analysis.ngram_counts import count_ngrams
    from engram_interp.analysis.ngram_counts import count_stream as _count_stream
    from engram_interp.backends.twin import TWIN_SUFFIX, untrained_twin
    from engram_interp.memory import open_tables

    texts = check_texts(texts)
    out, first = [], None
    for model, baseline, null, names in pairs:
        require_engram(model, "memory-help")
        names = names or (model_name(model), model_name(baseline, "baseline"), None if null is None else model_name(null, "null"))
        if not model.info.source:
            raise EngramInterpError("memory-help reads the Engram tables from the model's file; load the model from one")
        tables = open_tables(model.info.source)
        counts = (_count_stream(tables, count_stream, max_tokens=count_tokens) if count_stream else
                  count_ngrams(tables, count_texts if count_texts is not None else texts, max_tokens=count_tokens,
                               corpus=count_label, progress=kw.get("progress", False)))
        out.append(memory_help(model, baseline, texts, counts, tables, null=null, names=names, **kw).to_dict())
        first = first or (model, baseline, tables, counts, names)
    tw = None
    if twin:
        model, baseline, tables, counts, names = first
        tw = memory_help(untrained_twin(model, twin_seed), untrained_twin(baseline, twin_seed), texts, counts, tables,
                         names=(names[0] + TWIN_SUFFIX, names[1] + TWIN_SUFFIX, None), **kw).to_dict()
    return {"models": out, "twin": tw}
