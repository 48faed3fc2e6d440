"""The findings of ``memory_help`` (``engram_interp.analysis.memory_help``), through the one verdict function.

Two pre-stated statistics, each reduced to one number per seed:

- **frequency**: ``hot_minus_cold``, (Engram - baseline loss) on hot n-grams of the highest order minus
  the same on cold ones, nats/token; the paper's side is negative (the memory helps more where the
  n-gram is frequent). Controls: the Engram-null arm's same statistic (null - baseline), the untrained
  twin's (twin of Engram - twin of baseline, required) and zero.
- **capacity**: ``capacity1_rise``, the mean loss with every table folded to one row per head minus that
  of the full table, nats/token; positive when the table's content matters (the answer to "a capacity-1
  table works as well" is then no). Controls: the untrained twin's rise (required) and zero.

With one seed the interval is the within-seed bootstrap interval and the verdict is at most "not
established"; with seeds (one result per seed) it is the band min..max over seeds.
"""

from __future__ import annotations

from collections.abc import Sequence

from engram_interp.claims.sentences import TWIN
from engram_interp.claims.verdict import Control, FindingRecord, verdict

__all__ = ["memory_help_findings"]


def _fmt(v, ci) -> str:
    return "n/a" if v is None else f"{v:+.4f}" + ("" if not ci else f" [{ci[0]:+.4f}, {ci[1]:+.4f}]")


def _over_seeds(stats: Sequence[dict | None]) -> tuple[float | None, list[float] | None, int]:
    """(effect, interval, seeds): the value and its bootstrap interval for one seed; the mean and the
    band min..max for several."""
    vals = [s["value"] for s in stats if s and s.get("value") is not None]
    if not vals:
        return None, None, 0
    if len(vals) == 1:
        return vals[0], next(s for s in stats if s and s.get("value") is not None).get("ci"), 1
    return sum(vals) / len(vals), [min(vals), max(vals)], len(vals)


def _record(finding: str, text: str, effect, interval, n: int, controls: list[Control], direction: int) -> FindingRecord:
    v, why = verdict(effect, interval, controls, direction=direction, n_seeds=n, required=(TWIN,), across_seeds=n > 1)
    if v == "not established" and not any(c.name == TWIN for c in controls):
        why += "; run with --twin"
    return FindingRecord(finding=finding, verdict=v, sentence=f"{text} Verdict: {v} ({why}).", effect=effect,
                         interval=None if interval is None else [float(x) for x in interval],
                         controls=[vars(c).copy() for c in controls], n_seeds=max(n, 1), reason=why)


def memory_help_findings(results: Sequence[dict], twin: dict | None = None) -> list[FindingRecord]:
    """The two findings from ``MemoryHelpResult.to_dict()`` of every seed of the Engram model
    (``results``, the first being the named one) and of its untrained twin pair (``twin``)."""
    first = results[0]
    seeds = f" over {len(results)} seeds (band min..max)" if len(results) > 1 else f" over {first['n_tokens']:,} tokens"
    where = (f"hot: >= {first['counts']['hot']}, cold: < {first['counts']['cold']} occurrences of the order-{first['order']} "
             f"n-gram in {first['counts']['corpus']} ({first['counts']['positions']:,} positions)")
    out = []
    e, ci, n = _over_seeds([r["hot_minus_cold"] for r in results])
    controls, parts = [], []
    if any(r.get("hot_minus_cold_null") for r in results):
        ne, nci, _ = _over_seeds([r.get("hot_minus_cold_null") for r in results])
        controls.append(Control("Engram-null", ne, nci))
        parts.append(f"Engram-null {first['null']} {_fmt(ne, nci)}")
    _twin_and_zero(twin, "hot_minus_cold", controls, parts)
    text = (f"{first['name']}: (loss - {first['baseline']} loss) on hot minus on cold n-grams = {_fmt(e, ci)} nats/token"
            f"{seeds} ({where})" + (f"; {'; '.join(parts)}." if parts else "."))
    out.append(_record("memory help by n-gram frequency", text, e, ci, n, controls, -1))

    e, ci, n = _over_seeds([r.get("capacity1_rise") for r in results])
    controls, parts = [], []
    _twin_and_zero(twin, "capacity1_rise", controls, parts)
    text = (f"{first['name']}: loss with every table folded to 1 row per head minus with the full table = {_fmt(e, ci)} "
            f"nats/token{seeds}" + (f"; {'; '.join(parts)}." if parts else "."))
    if e is not None:
        out.append(_record("capacity-1 tables", text, e, ci, n, controls, +1))
    return out


def _twin_and_zero(twin: dict | None, key: str, controls: list, parts: list[str]) -> None:
    """Append the untrained twin's ``key`` (where it was measured) and zero to a finding's controls."""
    t = (twin or {}).get(key) or {}
    if t.get("value") is not None:
        controls.append(Control(TWIN, t["value"], t.get("ci")))
        parts.append(f"{TWIN} {_fmt(t['value'], t.get('ci'))}")
    controls.append(Control("zero", 0.0, None))
