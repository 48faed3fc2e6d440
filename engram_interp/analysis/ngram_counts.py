"""How often each suffix n-gram occurs in a counting corpus, and whether its table rows are shared:
the lookups ``memory_help`` buckets tokens by.

The counting corpus (texts, or a tokenized training stream: :func:`count_stream`) is hashed by the memory
inspector's hashing through a ``TableSource`` of the model (no forward pass). For an n-gram of order n at a position (its
context: canonical ids, pad before the sequence start) this module gives:

* ``count``: its occurrences in the counting corpus (0 when it never occurs there);
* ``shared``: how many of its rows (over every Engram layer and the K heads of order n) also serve
  another distinct n-gram of the counting corpus, out of ``n_rows = layers x K``.

Memory grows with the distinct n-grams of the counting corpus, never with the tokens looked up.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

__all__ = ["NgramCounts", "count_ngrams", "count_stream"]


@dataclass
class NgramCounts:
    """Counts and row users of the counting corpus. ``corpus``: what was counted (a path or a label),
    ``n_positions`` / ``n_texts``: how much of it; ``orders``: 2..N."""

    corpus: str
    n_positions: int
    n_texts: int
    orders: list[int]
    layers: tuple[int, ...]
    n_head_per_ngram: int
    _index: dict[int, dict[tuple, int]]
    _counts: dict[int, np.ndarray]
    _users: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]  # (layer, column) -> (sorted rows, n-grams per row)

    @property
    def n_rows(self) -> int:
        """Rows an n-gram of one order occupies: Engram layers x heads per order."""
        return len(self.layers) * self.n_head_per_ngram

    def lookup(self, order: int, contexts: np.ndarray, rows: dict[int, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """For ``m`` positions with ``contexts [m, N]`` and within-head ``rows {layer: [m, H]}``: the
        counting-corpus ``count [m]`` of their order-``order`` n-gram and ``shared [m]`` (0..n_rows),
        the number of its rows that another counted n-gram also reads."""
        index, counts = self._index[order], self._counts[order]
        idx = np.fromiter((index.get(k, -1) for k in map(tuple, contexts[:, :order].tolist())), dtype=np.int64,
                          count=contexts.shape[0])
        seen = idx >= 0
        count = np.where(seen, counts[np.maximum(idx, 0)], 0)
        shared = np.zeros(contexts.shape[0], dtype=np.int64)
        K = self.n_head_per_ngram
        for l in self.layers:
            for k in range(K):
                col = (order - 2) * K + k
                uniq, users = self._users[(l, col)]
                r = rows[l][:, col]
                pos = np.minimum(np.searchsorted(uniq, r), max(uniq.size - 1, 0))
                n_users = np.where((uniq.size > 0) & (uniq[pos] == r), users[pos], 0)
                shared += (n_users - seen) > 0  # a counted n-gram is one of its own row's users
        return count, shared


def count_ngrams(tables, texts: Iterable[str], *, max_tokens: int | None = 1_000_000, corpus: str = "corpus",
                 progress: bool = False) -> NgramCounts:
    """Count the suffix n-grams of ``texts`` (at most ``max_tokens`` positions) hashed by ``tables`` (a
    ``TableSource``); ``corpus`` names what was counted in the results. User error on an empty corpus."""
    from engram_interp.analysis.memory import corpus_ngrams

    ngrams, n_positions, n_texts = corpus_ngrams(tables, texts, max_tokens, progress=progress)
    return _counts(tables, ngrams, n_positions, n_texts, corpus)


def count_stream(tables, path: str | Path, *, max_tokens: int | None = 1_000_000, chunk: int = 65536) -> NgramCounts:
    """Count the suffix n-grams of a training stream (``train.bin`` of ``engram-interp data tokenize``: uint16
    ids, every document starting with BOS), its first ``max_tokens`` tokens, read as training reads it: one
    flat sequence, so an n-gram may reach back across a document boundary (pad only before the first token).
    BOS positions are not counted (as in the memory inspector)."""
    from engram_interp.analysis.memory import NgramAccumulator
    from engram_interp.errors import EngramInterpError
    from engram_interp.train.data import open_tokens

    tokens = open_tokens(Path(path))
    N, bos = tables.max_ngram_size, tables.bos_token_id
    acc = NgramAccumulator(N, tables.n_head_per_ngram, tables.layers)
    total, docs = len(tokens) if max_tokens is None else min(len(tokens), max_tokens), 0
    for start in range(0, total, chunk):
        lo = max(0, start - (N - 1))  # the previous chunk's last N-1 ids: the contexts continue across chunks
        seq = np.asarray(tokens[lo: min(start + chunk, total)], dtype=np.int64)
        skip = start - lo
        ctx = tables.contexts(seq)[skip:]
        padded = np.concatenate([np.full(N - 1, -1, dtype=np.int64), seq])
        raw = np.stack([padded[N - 1 - j: N - 1 - j + seq.size] for j in range(N)], axis=1)[skip:]
        keep = seq[skip:] != (-1 if bos is None else bos)
        docs += int((~keep).sum())
        acc.update(ctx[keep], raw[keep], {l: tables.rows(l, ctx[keep]) for l in tables.layers})
    if acc.n_positions == 0:
        raise EngramInterpError(f"{path} holds no tokens to count")
    return _counts(tables, acc.tables(), acc.n_positions, docs, str(path))


def _counts(tables, ngrams: dict, n_positions: int, n_texts: int, corpus: str) -> NgramCounts:
    K = tables.n_head_per_ngram
    index, counts, users = {}, {}, {}
    for n, t in ngrams.items():
        index[n] = {key: i for i, key in enumerate(map(tuple, t.keys.tolist()))}
        counts[n] = t.counts
        for l in tables.layers:
            for k in range(K):
                uniq, per = np.unique(t.rows[l][:, k], return_counts=True)
                users[(l, (n - 2) * K + k)] = (uniq, per)
    return NgramCounts(corpus=corpus, n_positions=int(n_positions), n_texts=int(n_texts), orders=sorted(ngrams),
                       layers=tuple(tables.layers), n_head_per_ngram=K, _index=index, _counts=counts, _users=users)
