"""Small statistics of the memory inspector: the Zipf exponent of row loads, the uniform-hash
expectation of collisions, row loads from (row, count) pairs, mean and Spearman intervals."""

from __future__ import annotations

import math

import numpy as np


def zipf_exponent(loads: np.ndarray) -> float | None:
    """Zipf exponent s of a rank-frequency curve: minus the least-squares slope of log(load) on
    log(rank), ranks 1.. by decreasing load. None for fewer than 2 loaded rows."""
    y = np.sort(np.asarray(loads, dtype=np.float64))[::-1]
    y = y[y > 0]
    if y.size < 2:
        return None
    x = np.log(np.arange(1, y.size + 1))
    slope = np.polyfit(x, np.log(y), 1)[0]
    return float(-slope)


def uniform_hash_expectation(n_distinct: int, table_rows: int) -> dict:
    """Expected figures for ``n_distinct`` n-grams hashed uniformly into ``table_rows`` rows:
    ``touched`` rows, ``collision_share`` (chance that an n-gram's row holds another n-gram: the share
    of positions in collision, whatever the counts) and ``ngrams_per_row_mean`` (per touched row)."""
    p, d = float(table_rows), int(n_distinct)
    miss = math.exp(d * math.log1p(-1.0 / p)) if p > 1 else 0.0
    touched = p * (1.0 - miss)
    alone = math.exp((d - 1) * math.log1p(-1.0 / p)) if p > 1 and d > 0 else (1.0 if d <= 1 else 0.0)
    return {"touched": touched, "collision_share": 1.0 - alone if d > 0 else 0.0,
            "ngrams_per_row_mean": d / touched if touched > 0 else 0.0}


def row_loads(rows: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Distinct n-grams -> rows: ``(unique rows, load per row (positions), n-grams per row,
    index of each n-gram's row in the unique rows)``."""
    uniq, inv = np.unique(np.asarray(rows), return_inverse=True)
    inv = inv.reshape(-1)
    loads = np.bincount(inv, weights=counts, minlength=uniq.size).astype(np.int64)
    per_row = np.bincount(inv, minlength=uniq.size).astype(np.int64)
    return uniq, loads, per_row, inv


def mean_ci(x: np.ndarray) -> tuple[float | None, list[float] | None]:
    """Mean and its 95% normal-approximation interval (mean +- 1.96 sd / sqrt(n)); None when empty."""
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return None, None
    m = float(x.mean())
    if x.size < 2:
        return m, None
    h = 1.96 * float(x.std(ddof=1)) / math.sqrt(x.size)
    return m, [m - h, m + h]


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    r = np.empty(x.size, dtype=np.float64)
    r[order] = np.arange(1, x.size + 1)
    _, inv, cnt = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inv.reshape(-1), weights=r)
    return (sums / cnt)[inv.reshape(-1)]  # average ranks for ties


def spearman_ci(a: np.ndarray, b: np.ndarray) -> tuple[float | None, list[float] | None]:
    """Spearman rank correlation and its 95% interval (Fisher z, se 1/sqrt(n-3)); None for n < 4 or
    a constant input."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size < 4 or np.all(a == a[0]) or np.all(b == b[0]):
        return None, None
    r = float(np.corrcoef(_ranks(a), _ranks(b))[0, 1])
    z, h = math.atanh(max(min(r, 1 - 1e-12), -1 + 1e-12)), 1.96 / math.sqrt(a.size - 3)
    return r, [math.tanh(z - h), math.tanh(z + h)]


def _untouched_sample(touched: np.ndarray, size: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``n`` distinct rows of ``0 .. size-1`` not in ``touched`` (sorted), drawn uniformly."""
    free = size - touched.size
    if free <= 0 or n <= 0:
        return np.zeros(0, dtype=np.int64)
    if free <= 4 * n:
        return np.setdiff1d(np.arange(size, dtype=np.int64), touched)[np.sort(rng.permutation(free)[: min(n, free)])]
    got = np.zeros(0, dtype=np.int64)
    while got.size < n:
        draw = rng.integers(0, size, size=2 * n, dtype=np.int64)
        got = np.unique(np.concatenate([got, draw[~np.isin(draw, touched)]]))
    return np.sort(rng.permutation(got)[:n])


def _rank_curve(loads: np.ndarray, points: int = 200) -> dict:
    y = np.sort(loads)[::-1]
    if y.size == 0:
        return {"rank": [], "load": []}
    idx = np.unique(np.round(np.geomspace(1, y.size, num=min(points, y.size))).astype(np.int64)) - 1
    return {"rank": (idx + 1).tolist(), "load": y[idx].tolist()}


def _norm_by_load(loads: np.ndarray, norms: np.ndarray) -> list[dict]:
    if loads.size == 0:
        return []
    bins = np.floor(np.log2(loads)).astype(np.int64)
    out = []
    for b in np.unique(bins):
        sel = bins == b
        out.append({"load_min": int(2**b), "load_max": int(2 ** (b + 1) - 1), "mean_norm": float(norms[sel].mean()),
                    "n_rows": int(sel.sum())})
    return out
