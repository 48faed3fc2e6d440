"""Collisions of the rows ``locate`` found: which other corpus n-grams hash to the same table row.

The corpus is hashed by the memory inspector (``engram_interp.analysis.memory.corpus_ngrams``) through
a ``TableSource`` (``engram_interp.memory``) of the same model; the prompt's own contexts are hashed by
that source too and must give the rows the model read (a source of another model is refused).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch

from engram_interp.errors import EngramInterpError

__all__ = ["add_collisions"]


def _text(source, raw_row: np.ndarray) -> str:
    from engram_interp.analysis.memory import START

    return "".join(START if int(i) < 0 else source.decode_token(int(i)) for i in raw_row[::-1])


def add_collisions(model, raw: list[int], ids: dict[int, torch.Tensor], layers: list, corpus: Iterable[str], *,
                   tables=None, max_tokens: int | None = 20000, per_row: int = 5) -> dict:
    """Fill ``corpus_count``, ``n_shared`` and ``shared_with`` of every ``RowRead`` in ``layers`` (the
    ``LayerLocate`` list of :func:`engram_interp.analysis.locate.locate`); ``raw``: the prompt's token ids
    (BOS included), ``ids[layer]``: the within-head rows the model read ``[pos, H]``. Returns
    ``{"positions", "texts"}`` of the corpus hashed."""
    from engram_interp.analysis.memory import corpus_ngrams

    if tables is None:
        if not model.info.source:
            raise EngramInterpError("collisions need the model's tables: pass tables= (engram_interp.memory.open_tables)")
        from engram_interp.memory import open_tables

        tables = open_tables(model.info.source)
    ctx = tables.contexts(raw)  # [pos, N]
    for l, hid in ids.items():
        if l not in tables.layers or not np.array_equal(tables.rows(l, ctx), hid.cpu().numpy()):
            raise EngramInterpError(f"{tables.source} hashes this prompt differently from the model at layer {l}; "
                                    "give the tables of the model itself")
    ngrams, n_positions, n_texts = corpus_ngrams(tables, corpus, max_tokens)
    for lay in layers:
        for r in lay.rows:
            t = ngrams[r.order]
            own = np.all(t.keys == ctx[r.position, : r.order], axis=1)
            mates = np.flatnonzero((t.rows[lay.layer][:, r.head] == r.row) & ~own)
            mates = mates[np.argsort(-t.counts[mates], kind="stable")]
            r.corpus_count = int(t.counts[own].sum())
            r.n_shared = int(mates.size)
            r.shared_with = [{"text": _text(tables, t.raw[j]), "count": int(t.counts[j])} for j in mates[:per_row]]
    return {"positions": int(n_positions), "texts": int(n_texts)}
