"""Memory inspector: what an Engram table holds, slot by slot, from tokenizer + hashing + rows alone.

No forward pass: addressing is deterministic, so a corpus is hashed through a ``TableSource``
(``engram_interp.memory``) and only the rows it touches (plus a seeded sample of untouched
rows) are read from disk.

Per Engram layer and hash head (order n, head k), over a corpus of ``n_positions`` token positions
(every real token; BOS excluded), where an *n-gram* is the order-n context the hash reads at a
position (canonical ids, pad before the sequence start):

* usage: rows touched (count, share of the head's table), the rank-frequency curve of row loads
  (positions per row) and its Zipf exponent s (least-squares slope of log load on log rank: load ~
  rank^-s), the share of positions served by the heaviest 1% of the touched rows (at least one row);
* collisions: distinct n-grams per touched row (mean, max); the share of positions whose row also
  serves a different corpus n-gram; the same figures expected for a uniform random hash of the same
  table size (D distinct n-grams, P rows: touched P(1-(1-1/P)^D), collision share 1-(1-1/P)^(D-1));
* reverse lookup: the heaviest rows with the n-grams (decoded text, counts) that land in them;
* rows: L2 norm of touched rows vs a seeded sample of untouched rows (mean, 95% CI) and the Spearman
  correlation of a touched row's norm with its load (95% CI, Fisher z);
* per layer: a 2-D PCA map (scikit-learn) of the memory vectors of the most frequent n-grams of every
  order (vector of an order-n n-gram: its K head rows concatenated, the order-n slice of e_t);
* ``ngram=TEXT``: its row in every head, the corpus n-grams sharing each row, and its nearest corpus
  n-grams by cosine of memory vectors (scikit-learn ``NearestNeighbors``), with the mean and 95th
  percentile cosine to all candidates as the control.

``NgramAccumulator`` holds the distinct n-grams, their counts and their rows (memory grows with the
number of distinct n-grams, never with tokens or table size).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Iterable, Sequence

import numpy as np

from engram_interp.analysis.memory_stats import (_norm_by_load, _rank_curve, _untouched_sample, mean_ci, row_loads,
                                                 spearman_ci, uniform_hash_expectation, zipf_exponent)
from engram_interp.errors import EngramInterpError

__all__ = ["NgramAccumulator", "MemoryResult", "memory_inspect", "memory_lookup", "zipf_exponent", "uniform_hash_expectation",
           "row_loads", "mean_ci", "spearman_ci", "START", "corpus_ngrams"]

START = "⟨start⟩"  # shown for positions before the sequence start


# ------------------------------------------------------------------------------------ accumulator
@dataclass
class NgramTable:
    """Distinct n-grams of one order: ``keys`` ``[u, n]`` (hashed ids, column j = t - j), ``raw``
    ``[u, n]`` (a raw-id representative, -1 before the start), ``counts`` ``[u]``, ``rows[layer]``
    ``[u, K]`` (row within each head of this order)."""

    order: int
    keys: np.ndarray
    raw: np.ndarray
    counts: np.ndarray
    rows: dict[int, np.ndarray]


class NgramAccumulator:
    """Distinct order-n contexts (n = 2..N) with their counts and rows in every layer and head.
    ``update(contexts, raw, rows)``: ``[m, N]`` hashed contexts, ``[m, N]`` raw ids, ``{layer: [m, H]}``."""

    def __init__(self, max_ngram_size: int, n_head_per_ngram: int, layers: Sequence[int], compact_every: int = 65536):
        self.N, self.K, self.layers = int(max_ngram_size), int(n_head_per_ngram), tuple(layers)
        self.compact_every = compact_every
        self.n_positions = 0
        self._tables: dict[int, NgramTable] = {}
        self._pending: dict[int, list[NgramTable]] = {n: [] for n in range(2, self.N + 1)}
        self._pending_size = {n: 0 for n in range(2, self.N + 1)}

    def update(self, contexts: np.ndarray, raw: np.ndarray, rows: dict[int, np.ndarray]) -> None:
        m = contexts.shape[0]
        self.n_positions += m
        for n in range(2, self.N + 1):
            hs = slice((n - 2) * self.K, (n - 1) * self.K)
            self._pending[n].append(NgramTable(n, contexts[:, :n].copy(), raw[:, :n].copy(), np.ones(m, dtype=np.int64),
                                               {l: rows[l][:, hs].copy() for l in self.layers}))
            self._pending_size[n] += m
            have = self._tables[n].counts.size if n in self._tables else 0
            if self._pending_size[n] >= max(self.compact_every, have):
                self._compact(n)

    def _compact(self, n: int) -> None:
        parts = ([self._tables[n]] if n in self._tables else []) + self._pending[n]
        if not parts:
            return
        keys = np.concatenate([p.keys for p in parts])
        uniq, first, inv = np.unique(keys, axis=0, return_index=True, return_inverse=True)
        counts = np.bincount(inv.reshape(-1), weights=np.concatenate([p.counts for p in parts]), minlength=len(uniq))
        raw = np.concatenate([p.raw for p in parts])[first]
        rows = {l: np.concatenate([p.rows[l] for p in parts])[first] for l in self.layers}
        self._tables[n] = NgramTable(n, uniq, raw, counts.astype(np.int64), rows)
        self._pending[n], self._pending_size[n] = [], 0

    def tables(self) -> dict[int, NgramTable]:
        """The distinct n-grams of every order (compacted)."""
        for n in range(2, self.N + 1):
            self._compact(n)
        return dict(self._tables)


# ---------------------------------------------------------------------------------------- results
@dataclass
class HeadStats:
    """One hash head (order, head) of one layer. Norms are L2 norms of table rows."""

    order: int
    head: int
    rows: int
    touched: int
    touched_share: float
    n_positions: int
    top1pct_share: float
    zipf_exponent: float | None
    distinct_ngrams: int
    ngrams_per_row_mean: float
    ngrams_per_row_max: int
    collision_share: float
    uniform_touched: float
    uniform_collision_share: float
    uniform_ngrams_per_row_mean: float
    norm_touched: float | None
    norm_touched_ci: list[float] | None
    norm_untouched: float | None
    norm_untouched_ci: list[float] | None
    n_untouched_sampled: int
    norm_load_spearman: float | None
    norm_load_spearman_ci: list[float] | None
    rank_curve: dict = field(default_factory=dict)  # {"rank": [...], "load": [...]}, log-spaced ranks
    heavy_rows: list[dict] = field(default_factory=list)  # [{row, load, n_ngrams, ngrams: [{text, count}]}]


@dataclass
class LayerStats:
    layer: int
    rows: int
    heads: list[HeadStats]
    norm_by_load: list[dict]  # [{load_min, load_max, mean_norm, n_rows}] over all heads, power-of-2 bins
    pca: dict | None  # {points: [{x, y, text, order, count}], explained_variance_ratio} or None


@dataclass
class MemoryResult:
    """The memory inspector's result; ``to_dict()`` is the ``memory --json`` output."""

    name: str
    source: str
    layout: str
    null_memory: bool
    n_positions: int
    n_texts: int
    max_ngram_size: int
    n_head_per_ngram: int
    layers: list[LayerStats]
    ngram: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict) -> "MemoryResult":
        d = dict(d)
        d["layers"] = [LayerStats(**{**l, "heads": [HeadStats(**h) for h in l["heads"]]}) for l in d["layers"]]
        return cls(**d)


# ------------------------------------------------------------------------------------- the pass
class _Texts:
    def __init__(self, source):
        self.source, self._cache = source, {}

    def token(self, i: int) -> str:
        if i < 0:
            return START
        if i not in self._cache:
            self._cache[i] = self.source.decode_token(i)
        return self._cache[i]

    def ngram(self, raw_row: np.ndarray) -> str:
        return "".join(self.token(int(i)) for i in raw_row[::-1])


def _positions(source, texts: Iterable[str], max_tokens: int | None, chunk: int, progress: bool, seen: dict):
    """Yield ``(contexts [m, N], raw [m, N])`` chunks over the corpus (BOS excluded from positions);
    counts the texts read in ``seen["texts"]``."""
    from engram_interp.analysis.common import encode_pieces
    from engram_interp.analysis.progress import progress_bar

    bar = progress_bar(total=max_tokens, unit="tok", desc="hashing", disable=not progress)
    n_max, used, ctx_buf, raw_buf = source.max_ngram_size, 0, [], []
    pending = 0
    for text in texts:
        # The text is tokenized piece by piece; each piece is hashed after the last n_max - 1 ids of
        # the one before (``tail``), so every position reads the same n-gram as in the whole text.
        tail = [source.bos_token_id] if source.bos_token_id is not None else []
        for n_piece, ids in enumerate(encode_pieces(source.encode, text)):
            seen["texts"] += n_piece == 0
            seq = tail + ids
            skip = len(tail)
            ctx = source.contexts(seq)[skip:]
            arr = np.asarray(seq, dtype=np.int64)
            padded = np.concatenate([np.full(n_max - 1, -1, dtype=np.int64), arr])
            raw = np.stack([padded[n_max - 1 - j: n_max - 1 - j + arr.size] for j in range(n_max)], axis=1)[skip:]
            tail = seq[-(n_max - 1):] if n_max > 1 else []
            if max_tokens is not None:
                ctx, raw = ctx[: max_tokens - used], raw[: max_tokens - used]
            ctx_buf.append(ctx)
            raw_buf.append(raw)
            used += len(ctx)
            pending += len(ctx)
            bar.update(len(ctx))
            if pending >= chunk:
                yield np.concatenate(ctx_buf), np.concatenate(raw_buf)
                ctx_buf, raw_buf, pending = [], [], 0
            if max_tokens is not None and used >= max_tokens:
                break
        if max_tokens is not None and used >= max_tokens:
            break
    if ctx_buf:
        yield np.concatenate(ctx_buf), np.concatenate(raw_buf)
    bar.close()


def _head_stats(source, layer: int, h: int, table: NgramTable, names: _Texts, *, top_rows: int, per_row: int,
                untouched: int, rng: np.random.Generator) -> tuple[HeadStats, np.ndarray, np.ndarray]:
    n, k = table.order, h % source.n_head_per_ngram
    size = source.head_sizes(layer)[h]
    offset = int(source.offsets(layer)[h])
    local = table.rows[layer][:, k]
    uniq, loads, per, inv = row_loads(local, table.counts)
    total = int(table.counts.sum())
    top = max(1, math.ceil(0.01 * uniq.size))
    shared = per[inv] > 1
    uni = uniform_hash_expectation(int(table.counts.size), size)
    touched_norms = np.linalg.norm(source.read_rows(layer, uniq + offset).astype(np.float64), axis=1)
    free = _untouched_sample(uniq, size, untouched, rng)
    free_norms = np.linalg.norm(source.read_rows(layer, free + offset).astype(np.float64), axis=1)
    nt, nt_ci = mean_ci(touched_norms)
    nu, nu_ci = mean_ci(free_norms)
    rho, rho_ci = spearman_ci(loads, touched_norms)
    heavy = []
    for i in np.argsort(-loads, kind="stable")[:top_rows]:
        members = np.flatnonzero(inv == i)
        members = members[np.argsort(-table.counts[members], kind="stable")]
        heavy.append({"row": int(uniq[i]), "load": int(loads[i]), "n_ngrams": int(members.size),
                      "ngrams": [{"text": names.ngram(table.raw[j]), "count": int(table.counts[j])} for j in members[:per_row]]})
    stats = HeadStats(
        order=n, head=k, rows=int(size), touched=int(uniq.size), touched_share=uniq.size / size, n_positions=total,
        top1pct_share=float(np.sort(loads)[::-1][:top].sum() / total), zipf_exponent=zipf_exponent(loads),
        distinct_ngrams=int(table.counts.size), ngrams_per_row_mean=float(per.mean()), ngrams_per_row_max=int(per.max()),
        collision_share=float(table.counts[shared].sum() / total), uniform_touched=uni["touched"],
        uniform_collision_share=uni["collision_share"], uniform_ngrams_per_row_mean=uni["ngrams_per_row_mean"],
        norm_touched=nt, norm_touched_ci=nt_ci, norm_untouched=nu, norm_untouched_ci=nu_ci, n_untouched_sampled=int(free.size),
        norm_load_spearman=rho, norm_load_spearman_ci=rho_ci, rank_curve=_rank_curve(loads), heavy_rows=heavy)
    return stats, loads, touched_norms


def _vectors(source, layer: int, table: NgramTable, idx: np.ndarray) -> np.ndarray:
    """Memory vectors ``[len(idx), K * d_head]`` (float64) of the order-n n-grams ``idx`` of ``table``."""
    K = source.n_head_per_ngram
    offs = source.offsets(layer)[(table.order - 2) * K: (table.order - 1) * K]
    glob = table.rows[layer][idx] + offs  # [m, K]
    return source.read_rows(layer, glob.reshape(-1)).astype(np.float64).reshape(len(idx), -1)


def _pca(source, layer: int, tables: dict[int, NgramTable], names: _Texts, n_points: int) -> dict | None:
    from sklearn.decomposition import PCA

    per_order = max(1, n_points // len(tables))
    vecs, meta = [], []
    for n, t in sorted(tables.items()):
        idx = np.argsort(-t.counts, kind="stable")[:per_order]
        vecs.append(_vectors(source, layer, t, idx))
        meta += [(names.ngram(t.raw[i]), n, int(t.counts[i])) for i in idx]
    x = np.concatenate(vecs)
    if x.shape[0] < 3 or np.allclose(x, x[0]):
        return None  # e.g. Engram-null: every n-gram reads the same rows
    pca = PCA(n_components=2, random_state=0).fit(x)
    xy = pca.transform(x)
    return {"points": [{"x": float(a), "y": float(b), "text": s, "order": o, "count": c} for (a, b), (s, o, c) in zip(xy, meta)],
            "explained_variance_ratio": [float(v) for v in pca.explained_variance_ratio_]}


def _lookup(source, tables: dict[int, NgramTable], names: _Texts, text: str, *, per_row: int, neighbours: int,
            pool: int) -> dict:
    """Rows, row-mates and memory-vector neighbours of the suffix n-grams of ``text`` ending at its last token."""
    from sklearn.neighbors import NearestNeighbors

    ids = source.encode(text)
    if len(ids) < 2:
        shown = "".join(names.token(i) for i in ids)
        raise EngramInterpError(f"--ngram {text!r} is {len(ids)} token ({shown!r}); an n-gram needs at least 2 tokens")
    ctx = source.contexts(ids)[-1:]
    raw = np.asarray(ids[::-1], dtype=np.int64)
    K, orders = source.n_head_per_ngram, []
    qrows = {l: source.rows(l, ctx)[0] for l in source.layers}
    for n in range(2, min(source.max_ngram_size, len(ids)) + 1):
        t = tables[n]
        key = ctx[0, :n]
        hit = np.flatnonzero(np.all(t.keys == key, axis=1))
        entry = {"order": n, "text": names.ngram(raw[:n]), "count": int(t.counts[hit].sum()), "layers": []}
        others = np.ones(t.counts.size, dtype=bool)
        others[hit] = False
        for l in source.layers:
            heads = []
            for k in range(K):
                row = int(qrows[l][(n - 2) * K + k])
                mates = np.flatnonzero((t.rows[l][:, k] == row) & others)
                mates = mates[np.argsort(-t.counts[mates], kind="stable")]
                heads.append({"head": k, "row": row, "load": int(t.counts[mates].sum() + t.counts[hit].sum()),
                              "n_shared": int(mates.size),
                              "shared_with": [{"text": names.ngram(t.raw[j]), "count": int(t.counts[j])} for j in mates[:per_row]]})
            cand = np.flatnonzero(others)
            cand = cand[np.argsort(-t.counts[cand], kind="stable")][:pool]
            near, base = [], None
            if cand.size:
                q = source.read_rows(l, qrows[l][(n - 2) * K:(n - 1) * K] + source.offsets(l)[(n - 2) * K:(n - 1) * K])
                q = q.astype(np.float64).reshape(1, -1)
                x = _vectors(source, l, t, cand)
                nn = NearestNeighbors(n_neighbors=min(neighbours, cand.size), metric="cosine").fit(x)
                dist, idx = nn.kneighbors(q)
                near = [{"text": names.ngram(t.raw[cand[j]]), "count": int(t.counts[cand[j]]), "cosine": float(1 - d)}
                        for d, j in zip(dist[0], idx[0])]
                qn, xn = np.linalg.norm(q), np.linalg.norm(x, axis=1)
                cos = (x @ q[0]) / np.where(qn * xn > 0, qn * xn, 1.0)
                base = {"mean": float(cos.mean()), "p95": float(np.quantile(cos, 0.95)), "n_candidates": int(cand.size)}
            entry["layers"].append({"layer": l, "heads": heads, "neighbours": near, "cosine_baseline": base})
        orders.append(entry)
    return {"text": text, "tokens": [names.token(i) for i in ids], "orders": orders}


def corpus_ngrams(source, texts: Iterable[str], max_tokens: int | None = 20000, chunk: int = 8192, progress: bool = False):
    """The corpus pass: ``({order: NgramTable}, n_positions, n_texts)`` (distinct n-grams with counts and
    their row in every layer and head); user error when the corpus is empty."""
    acc = NgramAccumulator(source.max_ngram_size, source.n_head_per_ngram, source.layers)
    seen = {"texts": 0}
    for ctx, raw in _positions(source, texts, max_tokens, chunk, progress, seen):
        acc.update(ctx, raw, {l: source.rows(l, ctx) for l in source.layers})
    if acc.n_positions == 0:
        raise EngramInterpError("the corpus has no tokens to hash")
    return acc.tables(), acc.n_positions, seen["texts"]


def memory_lookup(source, texts: Iterable[str], ngram: str, *, max_tokens: int | None = 20000, per_row: int = 8,
                  neighbours: int = 10, pool: int = 5000, chunk: int = 8192, progress: bool = False) -> dict:
    """Only the ``ngram`` part of :func:`memory_inspect` (its rows, row-mates and neighbours over the
    corpus): the dict found under ``MemoryResult.ngram``."""
    tables, _, _ = corpus_ngrams(source, texts, max_tokens, chunk, progress)
    return _lookup(source, tables, _Texts(source), ngram, per_row=per_row, neighbours=neighbours, pool=pool)


def memory_inspect(source, texts: Iterable[str], *, max_tokens: int | None = 20000, ngram: str | None = None,
                   top_rows: int = 10, per_row: int = 8, untouched: int = 2048, pca_points: int = 300,
                   neighbours: int = 10, pool: int = 5000, seed: int = 0, chunk: int = 8192,
                   progress: bool = True) -> MemoryResult:
    """Run the memory inspector over ``texts`` with ``source`` (a ``TableSource``; see the module
    docstring for every figure). ``max_tokens`` caps the corpus positions; ``untouched`` is the size
    of the seeded sample of untouched rows per head; ``pool`` caps the neighbour candidates (the most
    frequent corpus n-grams of the order). Returns a ``MemoryResult``; user error on an empty corpus."""
    tables, n_positions, n_texts = corpus_ngrams(source, texts, max_tokens, chunk, progress)
    names = _Texts(source)
    rng = np.random.default_rng(seed)
    layers = []
    for l in source.layers:
        heads, all_loads, all_norms = [], [], []
        for h in range(source.n_heads):
            stats, loads, norms = _head_stats(source, l, h, tables[2 + h // source.n_head_per_ngram], names,
                                              top_rows=top_rows, per_row=per_row, untouched=untouched, rng=rng)
            heads.append(stats)
            all_loads.append(loads)
            all_norms.append(norms)
        layers.append(LayerStats(layer=l, rows=source.table_rows(l), heads=heads,
                                 norm_by_load=_norm_by_load(np.concatenate(all_loads), np.concatenate(all_norms)),
                                 pca=_pca(source, l, tables, names, pca_points)))
    lookup = _lookup(source, tables, names, ngram, per_row=per_row, neighbours=neighbours, pool=pool) if ngram else None
    return MemoryResult(name=source.name, source=source.source, layout=source.layout, null_memory=source.null_memory,
                        n_positions=n_positions, n_texts=n_texts, max_ngram_size=source.max_ngram_size,
                        n_head_per_ngram=source.n_head_per_ngram, layers=layers, ngram=lookup)
