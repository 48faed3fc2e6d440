"""The untrained twin of an Engram memory, and what the memory inspector may claim against it.

The twin of a table source has the same tokenizer, hashing, layers and head sizes (the hash is not
learned, so rows touched, collisions, Zipf exponents and heavy rows come out identical: they
describe the hash and the corpus, never what the model learned) and rows drawn afresh from the
architecture's init, Normal(0, init_std) (``init_std`` from the ``.ckpt`` config; for a folder
layout without one, the RMS of a sample of the trained rows: a random table of the same scale).
Rows are drawn per (seed, layer, row) on demand, so tables of any size keep memory flat.

What the memory inspector may claim against the twin is in ``engram_interp.claims.memory``.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["TwinTables", "twin_tables"]


class TwinTables:
    """A table source (``engram_interp.memory.sources.TableSource``'s interface) that delegates
    everything to ``source`` but ``read_rows``: Normal(0, ``std``) rows, seeded per (``seed``, layer,
    global row), float32 ``[m, d_head]``. Engram-null stays Engram-null (hashing is delegated)."""

    def __init__(self, source, std: float, seed: int = 0):
        self._source, self.std, self.seed = source, float(std), int(seed)
        self.name = source.name + "~twin"
        self.source = source.source + "~twin"

    def __getattr__(self, key):  # tokenizer, hashing, sizes, layout ... of the trained source
        return getattr(self._source, key)

    def read_rows(self, layer: int, rows) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        out = np.empty((rows.size, self._source.d_head), dtype=np.float32)
        for i, r in enumerate(rows.tolist()):
            out[i] = np.random.default_rng([self.seed, int(layer), int(r)]).standard_normal(self._source.d_head) * self.std
        return out


def _init_std(source, sample: int = 256) -> float:
    """The architecture's init std: the ``.ckpt`` config's ``init_std``, else the RMS of ``sample``
    evenly spaced rows of the first layer's table."""
    from engram_interp.memory.tables import CkptTables

    if isinstance(source, CkptTables):
        from engram_interp.checkpoint import read_info

        return float(read_info(source.source).config.init_std)
    l = source.layers[0]
    n = source.table_rows(l)
    rows = np.unique(np.linspace(0, n - 1, min(sample, n)).astype(np.int64))
    x = source.read_rows(l, rows).astype(np.float64)
    return float(math.sqrt(np.mean(x * x)))


def twin_tables(source, seed: int = 0) -> TwinTables:
    """The untrained twin of ``source`` (module doc) under ``seed``."""
    return TwinTables(source, _init_std(source), seed)
