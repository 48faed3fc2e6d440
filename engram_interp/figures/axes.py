"""Axis settings shared by the figures: log axes with ticks only at powers of 10 (1-2-5 over short
ranges, labelled as plain numbers, no minor labels), integer axes (layer indices), and one value
range for charts that are compared side by side."""

from __future__ import annotations

import math
from collections.abc import Iterable

__all__ = ["log_ticks", "log_axis", "int_axis", "shared_range"]


def _finite(values: Iterable[float | None], positive: bool = False) -> list[float]:
    out = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return [v for v in out if v > 0] if positive else out


def _tick_text(v: float) -> str:
    """``0.001``, ``0.5``, ``20``, ``5,000``; ``1e-05`` / ``1e+06`` style only outside 1e-4 .. 1e6."""
    if 1e-4 <= v < 1e6:
        return f"{v:,.0f}" if v >= 1 else f"{v:g}"
    mant, exp = f"{v:.0e}".split("e")
    return f"{mant}e{int(exp)}"


def log_ticks(values: Iterable[float | None]) -> list[float]:
    """Tick values of a log axis showing ``values`` (non-positive ones ignored): powers of 10, and also
    2 x and 5 x each power when the data span under two decades; from the last tick at or below the
    smallest value to the first at or above the largest. Always at least two ticks."""
    pos = _finite(values, positive=True)
    if not pos:
        return [1.0, 10.0]
    lo, hi = min(pos), max(pos)
    e_lo, e_hi = math.floor(math.log10(lo) + 1e-9), math.ceil(math.log10(hi) - 1e-9)
    mantissas = (1, 2, 5) if math.log10(hi / lo) < 2 else (1,)
    ticks = [float(f"{m}e{e}") for e in range(e_lo, e_hi + 1) for m in mantissas]
    first = max(i for i, t in enumerate(ticks) if t <= lo * (1 + 1e-9))
    last = min((i for i, t in enumerate(ticks) if t >= hi * (1 - 1e-9)), default=len(ticks) - 1)
    return ticks[first: max(last, first + 1) + 1]


def log_axis(values: Iterable[float | None], title: str | None = None) -> dict:
    """A plotly axis dict: log type, ticks from :func:`log_ticks` labelled as plain numbers, the range
    the ticks span (log10 units, 3% wider), no minor tick labels."""
    ticks = log_ticks(values)
    lo, hi = math.log10(ticks[0]), math.log10(ticks[-1])
    pad = 0.03 * (hi - lo)  # a marker on the first or last tick is drawn whole
    out = dict(type="log", tickmode="array", tickvals=ticks, ticktext=[_tick_text(t) for t in ticks],
               range=[lo - pad, hi + pad], minor=dict(showgrid=False, ticks=""))
    if title is not None:
        out["title"] = title
    return out


def int_axis(title: str | None = None, n: int | None = None) -> dict:
    """A plotly axis dict for integer values (layer indices): ticks every 1 while there are at most 30
    of them, integer labels, never "1.5"."""
    out: dict = dict(tickformat="d")
    if n is None or n <= 30:
        out.update(tick0=0, dtick=1)
    if title is not None:
        out["title"] = title
    return out


def shared_range(*value_lists: Iterable[float | None], pad: float = 0.08) -> list[float]:
    """One ``[low, high]`` that holds every value of every list and 0 (bars start at 0), widened by
    ``pad`` of the span on both sides: the x range of charts compared side by side."""
    vals = [v for values in value_lists for v in _finite(values)] + [0.0]
    lo, hi = min(vals), max(vals)
    span = (hi - lo) or 1.0
    return [lo - pad * span if lo < 0 else 0.0, hi + pad * span if hi > 0 else 0.0]
