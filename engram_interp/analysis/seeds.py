"""Across-seed bands: one number measured on several seeds of the same arm.

A *seed* of an arm is a checkpoint trained by the same recipe with another ``KIND-seedN`` (its own
initialisation and its own data order). A :class:`Band` summarises the per-seed values of one
quantity: the mean, the across-seed band ``[low, high]`` (min and max over seeds), the sample
standard deviation and a two-sided 95% Student-t interval of the mean (``None`` with one seed).
With 2-3 seeds the t interval is wide on purpose: that is the uncertainty a reader should see.

Arm names come from checkpoint stems: ``moe-seed2`` belongs to arm ``moe`` (:func:`arm_of`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

__all__ = ["Band", "band", "bands", "arm_of", "group_by_arm", "separated"]

_SEED_SUFFIX = re.compile(r"-seed\d+$")
# two-sided 95% Student-t quantiles by degrees of freedom (1..30); larger df use 1.96
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


@dataclass(frozen=True)
class Band:
    """One quantity over seeds: ``mean``, band ``[low, high]`` (min/max over seeds), ``sd`` (sample
    standard deviation, 0 with one seed), ``ci`` (95% t interval of the mean, None with one seed),
    ``n`` seeds and the per-seed ``values`` (in the units of the quantity)."""

    mean: float
    low: float
    high: float
    sd: float
    ci: tuple[float, float] | None
    n: int
    values: tuple[float, ...]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ci"] = None if self.ci is None else list(self.ci)
        d["values"] = list(self.values)
        return d


def band(values: Iterable[float | None]) -> Band | None:
    """The :class:`Band` of the finite values (None and NaN are dropped); None when none is left."""
    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    if not v:
        return None
    n = len(v)
    mean = sum(v) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in v) / (n - 1)) if n > 1 else 0.0
    ci = None
    if n > 1:
        half = (_T95[n - 2] if n - 1 <= len(_T95) else 1.96) * sd / math.sqrt(n)
        ci = (mean - half, mean + half)
    return Band(mean=mean, low=min(v), high=max(v), sd=sd, ci=ci, n=n, values=tuple(v))


def bands(rows: Sequence[Sequence[float | None]]) -> list[Band | None]:
    """Position-wise bands of equal-length per-seed rows (e.g. a KL curve per seed -> a band per layer)."""
    if not rows:
        return []
    length = min(len(r) for r in rows)
    return [band(r[i] for r in rows) for i in range(length)]


def arm_of(name: str) -> str:
    """The arm a checkpoint name belongs to: ``"moe-seed2"`` -> ``"moe"``, ``"engram"`` -> ``"engram"``."""
    return _SEED_SUFFIX.sub("", name)


def group_by_arm(names: Sequence[str]) -> dict[str, list[str]]:
    """``{arm: [checkpoint names]}`` in first-seen order (see :func:`arm_of`)."""
    out: dict[str, list[str]] = {}
    for n in names:
        out.setdefault(arm_of(n), []).append(n)
    return out


def separated(a: Band | None, b: Band | None) -> int:
    """+1 if every seed of ``a`` lies above every seed of ``b`` (a.low > b.high), -1 if below
    (a.high < b.low), 0 if the bands overlap or either is missing."""
    if a is None or b is None:
        return 0
    if a.low > b.high:
        return 1
    if a.high < b.low:
        return -1
    return 0


def _dicts(bs: Sequence[Band | None]) -> list[dict | None]:
    return [None if b is None else b.to_dict() for b in bs]


def lens_bands(result, groups: dict[str, Sequence[str]]) -> dict[str, dict]:
    """LogitLens across seeds: ``{arm: {"seeds": [names], "layers": [...], "kl": [Band dict per layer]}}``
    from a ``LogitLensResult`` holding every seed (``groups``: arm -> its curves' names). KL in nats."""
    curves = {m.name: m for m in result.models}
    out = {}
    for arm, names in groups.items():
        rows = [curves[n].kl for n in names]
        out[arm] = {"seeds": list(names), "layers": curves[names[0]].layers[: min(map(len, rows))],
                    "kl": _dicts(bands(rows))}
    return out


def early_mean(values: Sequence[float], first: int, last: int) -> float:
    """Mean of ``values[first:last + 1]`` (e.g. the early-layer KL of one seed), same units as values."""
    window = list(values[first:last + 1])
    return sum(window) / len(window)


def ablation_bands(result, groups: dict[str, Sequence[str]]) -> dict[str, dict]:
    """Ablation across seeds: ``{arm: {"seeds": [...], "suites": {suite: {"full": Band, "retained": Band}}}}``
    (Band dicts; full accuracy 0..1, retained %) from an ``AblationResult`` holding every seed."""
    by_name = {m["name"]: m for m in result.models}
    out = {}
    for arm, names in groups.items():
        suites = by_name[names[0]]["suites"]
        table = {}
        for suite in suites:
            rows = [by_name[n]["suites"][suite] for n in names]
            full, ret = band(r.full for r in rows), band(r.retained for r in rows)
            table[suite] = {"full": full and full.to_dict(), "retained": ret and ret.to_dict()}
        out[arm] = {"seeds": list(names), "suites": table}
    return out
