"""A table source seen through a capacity of k rows per hash head, as ``InterpModel.engram_capacity(k)``
makes the model read it: row r of a head becomes r mod k, so only the first k rows of each head are
read. The memory inspector run on it shows the tables the truncated model uses (k = 1: every n-gram of
a head shares row 0)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from engram_interp.errors import EngramInterpError
from engram_interp.memory.sources import TableSource

__all__ = ["CapacityTables"]


class CapacityTables(TableSource):
    """``source`` with every head cut to ``min(k, rows)`` rows (row ids folded ``mod k``); global row ids
    keep the source's head offsets, so ``read_rows`` reads the source's own first k rows of each head."""

    def __init__(self, source: TableSource, k: int):
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise EngramInterpError(f"capacity must be a whole number of rows >= 1, got {k!r}")
        self.base, self.k = source, int(k)
        for attr in ("layers", "max_ngram_size", "n_head_per_ngram", "d_head", "null_memory", "bos_token_id", "layout"):
            setattr(self, attr, getattr(source, attr))
        self.name, self.source = f"{source.name}@k={k}", source.source

    def head_sizes(self, layer: int) -> list[int]:
        return [min(self.k, int(s)) for s in self.base.head_sizes(layer)]

    def offsets(self, layer: int) -> np.ndarray:
        return self.base.offsets(layer)

    def encode(self, text: str) -> list[int]:
        return self.base.encode(text)

    def decode_token(self, token_id: int) -> str:
        return self.base.decode_token(token_id)

    def contexts(self, raw_ids: Sequence[int]) -> np.ndarray:
        return self.base.contexts(raw_ids)

    def rows(self, layer: int, contexts: np.ndarray) -> np.ndarray:
        return np.remainder(self.base.rows(layer, contexts), self.k)

    def read_rows(self, layer: int, rows: np.ndarray) -> np.ndarray:
        return self.base.read_rows(layer, rows)
