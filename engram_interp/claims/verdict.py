"""The ONE verdict function every surface uses, the finding object it fills, and the statistics it
relies on (intervals that can fail, permutation p-values, Holm's correction).

A finding's effect counts only against its controls: the untrained twin (same architecture and config,
seeded random init: :func:`engram_interp.backends.twin.untrained_twin`), the Engram-null arm where one
is loaded, and across seeds where seeds are loaded. A within-seed interval (a bootstrap over tokens or
minibatches) is measurement precision: it is shown, but it is never the sole basis of a claim word, so
one seed gives at most "not established".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

__all__ = ["VERDICTS", "MIN_SEEDS", "ALPHA", "REL_WIDTH", "MIN_TOKENS", "MIN_ITEMS", "MIN_MINIBATCHES", "NO_SPREAD",
           "Control", "FindingRecord", "verdict", "degenerate", "spread_text", "too_few", "permutation_p",
           "min_permutations", "holm", "one_sided_p"]

VERDICTS = ("reproduced", "not reproduced", "not established", "not testable")
MIN_SEEDS = 2  # independent seeds per arm before a band can decide anything
ALPHA = 0.05  # family-wise level of every test a sentence states
REL_WIDTH = 1e-3  # a within-seed interval narrower than this share of |value| has measured no spread
# the least sample a sentence speaks from (below it the finding is "not testable", the count stated)
MIN_TOKENS = 500  # scored tokens of a per-token statistic (LogitLens KL, routing JS)
MIN_ITEMS = 30  # items of a task suite (ablation)
MIN_MINIBATCHES = 10  # minibatches behind a bootstrap over minibatches (CKA)
NO_SPREAD = "no spread measured"


def degenerate(interval: Sequence[float | None] | None, value: float | None = None, rel: float = REL_WIDTH) -> bool:
    """True when an interval cannot carry a claim: missing, non-finite, or of zero or near-zero
    relative width (``high - low <= rel * |value|``, plus float rounding), e.g. a percentile
    bootstrap of a top-k index whose replicates (almost) never vary. ``rel=0`` asks for exactly
    zero width (a band over seeds that all gave the same value)."""
    if interval is None or len(interval) != 2 or any(x is None for x in interval):
        return True
    lo, hi = float(interval[0]), float(interval[1])
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi < lo:
        return True
    mag = abs(value) if value is not None and math.isfinite(value) else max(abs(lo), abs(hi))
    return hi - lo <= rel * mag + 1e-12 * max(1.0, mag)


def spread_text(value: float | None, interval: Sequence[float | None] | None, spec: str = ".2f") -> str:
    """``value [low, high]`` for an interval that varies; ``value (a point: no spread measured)`` for
    one that :func:`degenerate` rejects, so a zero-width bootstrap is never printed as an interval."""
    if value is None or not math.isfinite(value):
        return "n/a"
    if interval is None or degenerate(interval, value):
        return f"{value:{spec}} (a point: {NO_SPREAD})"
    return f"{value:{spec}} [{float(interval[0]):{spec}}, {float(interval[1]):{spec}}]"


def too_few(n: int | None, need: int, unit: str) -> str | None:
    """The "not testable" reason when a sentence's sample ``n`` is below ``need`` (``"too few tokens
    (120; 500 needed)"``), else None."""
    if isinstance(n, (int, float)) and n >= need:
        return None
    return f"too few {unit} ({n}; {need} needed)"


def one_sided_p(diff: float, se: float) -> float:
    """One-sided normal p-value of ``diff > 0`` with standard error ``se``: ``P(Z >= diff / se)``.
    NaN when ``se`` is not positive (no spread measured: no test)."""
    if not (math.isfinite(diff) and math.isfinite(se)) or se <= 0:
        return math.nan
    return 0.5 * math.erfc(diff / se / math.sqrt(2.0))


def min_permutations(alpha: float = 0.05) -> int:
    """Smallest number of random permutations B for which ``p = (1 + #>=) / (1 + B)`` can reach
    ``alpha / 50`` (at least 999), so a stated alpha is not limited by the resolution of p."""
    return max(999, math.ceil(50 / alpha) - 1)


def permutation_p(observed: float, null: Sequence[float], exact: bool = False) -> float:
    """Permutation p-value of ``observed`` against the statistics of the shuffles ``null``:
    ``(1 + #{null >= observed}) / (1 + B)`` for B random shuffles (never below ``1 / (B + 1)``);
    ``#{null >= observed} / B`` when ``exact`` (``null`` then enumerates every permutation, the
    identity included). NaN when ``null`` is empty or ``observed`` is not finite."""
    vals = [float(x) for x in null]
    if not vals or observed is None or not math.isfinite(observed):
        return math.nan
    ge = sum(1 for x in vals if x >= observed - 1e-12 * max(1.0, abs(observed)))
    return ge / len(vals) if exact else (1 + ge) / (1 + len(vals))


def holm(pvalues: Sequence[float], alpha: float = 0.05) -> list[bool]:
    """Holm's step-down correction: for each p-value (in input order) whether it is rejected at
    family-wise level ``alpha``. NaN never rejects."""
    order = sorted(range(len(pvalues)), key=lambda i: (math.isnan(pvalues[i]), pvalues[i]))
    m, out = len(pvalues), [False] * len(pvalues)
    for rank, i in enumerate(order):
        p = pvalues[i]
        if math.isnan(p) or p > alpha / (m - rank):
            break
        out[i] = True
    return out


@dataclass
class Control:
    """One control a finding's effect must beat: ``name`` (e.g. "untrained twin", "Engram-null",
    "moe"), its ``value`` of the same statistic and ``interval`` (None: a point), and after
    :func:`verdict` whether the effect ``beaten`` it (interval clear of it, in the stated direction)
    and by how much (``margin``: effect - control value, in the statistic's units)."""

    name: str
    value: float | None
    interval: list[float] | None = None
    beaten: bool | None = None
    margin: float | None = None

    def bounds(self) -> tuple[float, float] | None:
        if self.value is None or not math.isfinite(self.value):
            return None
        if self.interval is None or degenerate(self.interval, self.value, rel=0):
            return self.value, self.value
        return float(self.interval[0]), float(self.interval[1])


@dataclass
class FindingRecord:
    """The object every surface prints and results.json / ``--json`` carry per finding:
    ``finding`` (what was measured, never the paper's claim as a heading), ``verdict`` (one of
    :data:`VERDICTS`), ``sentence`` (the measured sentence ending in the verdict and its reason),
    ``effect`` (the number), ``interval`` (its 95% interval or None), ``controls`` (list of
    :class:`Control` dicts), ``n_seeds`` and ``reason``."""

    finding: str
    verdict: str
    sentence: str
    effect: float | None
    interval: list[float] | None
    controls: list[dict] = field(default_factory=list)
    n_seeds: int = 1
    reason: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def verdict(effect: float | None, interval: Sequence[float] | None, controls: Sequence[Control], *,
            direction: int = 1, n_seeds: int = 1, min_seeds: int = MIN_SEEDS, required: Sequence[str] = (),
            testable: bool = True, untestable_reason: str = "", across_seeds: bool = False, p: float | None = None,
            alpha: float = ALPHA) -> tuple[str, str]:
    """The verdict of an ``effect`` with its 95% ``interval`` against ``controls`` (each updated in
    place: ``beaten`` and ``margin``). ``direction`` +1 when the claim is "higher than the controls",
    -1 "lower". Returns ``(verdict, reason)``:

    - "not testable": ``testable`` is False (e.g. the full model is not above chance);
    - "reproduced" / "not reproduced": the interval lies entirely beyond (or short of) every control's
      interval, every name in ``required`` is among the controls, and the interval is a band over at
      least ``min_seeds`` seeds (``across_seeds`` and ``n_seeds``);
    - "not established": everything else, with the reason (an interval of zero or near-zero relative
      width: :func:`degenerate`, with ``rel=0`` for a band over seeds; a test's ``p`` above ``alpha``; a
      control missing or covering the effect; one seed only)."""
    if not testable:
        return "not testable", untestable_reason or "the measurement cannot speak at this scale"
    if effect is None or not math.isfinite(effect):
        return "not established", "the effect is undefined"
    if interval is None:
        return "not established", f"{NO_SPREAD} (a single value, no interval), so it cannot carry a claim"
    if degenerate(interval, effect, rel=0.0 if across_seeds else REL_WIDTH):
        return "not established", f"{NO_SPREAD} (the interval has zero or near-zero width), so it cannot carry a claim"
    if p is not None and not (p <= alpha):
        return "not established", f"p = {p:.3g} is above alpha = {alpha:g}"
    lo, hi = float(interval[0]), float(interval[1])
    names = {c.name for c in controls}
    missing = [r for r in required if r not in names]
    sides = []
    for c in controls:
        b = c.bounds()
        if b is None:
            c.beaten, c.margin = None, None
            sides.append(0)
            continue
        c.margin = effect - c.value
        above, below = lo > b[1], hi < b[0]
        if (above if direction > 0 else below):
            c.beaten = True
            sides.append(1)
        elif (below if direction > 0 else above):
            c.beaten = False
            sides.append(-1)
        else:
            c.beaten = False
            sides.append(0)
    if not controls:
        return "not established", "no control was measured"
    if missing:
        return "not established", "no " + ", ".join(missing) + " was measured"
    covered = [c.name for c, s in zip(controls, sides) if s == 0]
    if not across_seeds or n_seeds < min_seeds:
        beat = [c.name for c, s in zip(controls, sides) if s == 1]
        seen = f"; within one seed the interval clears {', '.join(beat)}" if beat else ""
        return "not established", (f"fewer than {min_seeds} seeds: a within-seed interval is measurement precision, "
                                   f"not evidence{seen}")
    if all(s == 1 for s in sides):
        return "reproduced", "beyond every control: " + ", ".join(f"{c.name} by {c.margin:+.3g}" for c in controls)
    if all(s == -1 for s in sides):
        return "not reproduced", "on the wrong side of every control: " + ", ".join(c.name for c in controls)
    if covered:
        return "not established", "the interval overlaps " + ", ".join(covered)
    return "not established", "on the wrong side of " + ", ".join(c.name for c, s in zip(controls, sides) if s == -1)
