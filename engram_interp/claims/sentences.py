"""Measured sentences for the four findings (Overview, report, checkpoints/README.md), each against its control and with its interval.

The Overview page of the app and ``engram-interp report`` state the same sentences from the
result dicts (``to_dict()`` of the analysis results). A sentence says what was measured, on how
much data, against which control, and ends with a verdict that is "not established" whenever the
control's interval or the noise band covers the difference (docs/ANALYSES.md, "Reading the
findings"). Nothing here runs a model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["wilson_interval", "chance_level", "lens_sentences", "gate_sentence", "ablation_sentences"]


def wilson_interval(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (accuracy in [0, 1]); ``(nan, nan)`` for n = 0."""
    if n <= 0:
        return math.nan, math.nan
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def chance_level(items: Sequence[dict]) -> float:
    """Expected accuracy of a uniform guess over a suite (0..1): ``1 / len(candidates)`` for a
    multiple-choice item (the answer is one of the candidates), 0 for an exact-match item."""
    if not items:
        return math.nan
    return sum(1.0 / len(it["candidates"]) if it.get("candidates") else 0.0 for it in items) / len(items)


# ---- LogitLens -----------------------------------------------------------------------------------
def _band(kl: float, sem: float) -> tuple[float, float]:
    return kl - 1.96 * sem, kl + 1.96 * sem


def lens_sentences(curves: Sequence[dict[str, Any]], engram: str, control: str | None, baseline: str | None) -> list[str]:
    """Sentences on the LogitLens KL of model ``engram`` (curve names) against the Engram-null
    ``control`` and the ``baseline``: per layer, Engram's KL counts as lower only where its 95%
    interval (1.96 SEM over tokens) lies below the control's and the gap exceeds the control-vs-
    baseline difference at that layer (the arm-to-arm noise band one seed can show)."""
    by = {c["name"]: c for c in curves}
    if engram not in by:
        return []
    e = by[engram]
    layers = e["layers"][:-1]  # the last point is the model's own output (KL ~ 0 by construction)
    head = (f"{engram}: KL(p_final || q_l) at layers {layers[0]}..{layers[-1]} = "
            + ", ".join(f"{v:.2f}" for v in e["kl"][:-1]) + f" nats ({e['n_tokens']} tokens")
    if control not in by:
        return [head + "); no Engram-null control loaded, so no difference can be established."]
    c = by[control]
    b = by.get(baseline)
    head += f"; {control}: " + ", ".join(f"{v:.2f}" for v in c["kl"][:-1])
    if b is not None:
        head += f"; {baseline}: " + ", ".join(f"{v:.2f}" for v in b["kl"][:-1])
    lower, noise = [], 0.0
    for j, _ in enumerate(layers):
        lo_c = _band(c["kl"][j], c["kl_sem"][j])[0]
        hi_e = _band(e["kl"][j], e["kl_sem"][j])[1]
        band = abs(c["kl"][j] - b["kl"][j]) if b is not None else 0.0
        noise = max(noise, band)
        if hi_e < lo_c and (c["kl"][j] - e["kl"][j]) > band:
            lower.append(layers[j])
    verdict = (f"Engram's KL is lower than the control's at layer(s) {', '.join(map(str, lower))} (95% intervals apart and "
               f"the gap larger than the control-vs-baseline difference there)" if lower
               else "A lower KL than the control's is not established at any layer")
    tail = f" The control and the baseline differ by up to {noise:.2f} nats: one seed per arm." if b is not None else ""
    return [head + "). " + verdict + "." + tail]


# ---- Gates ---------------------------------------------------------------------------------------
def _best(res: dict) -> int:
    chans = [tuple(c) for c in res["channels"]]
    return chans.index(tuple(res["branch_ranking"][0]))


def gate_sentence(res: dict, name: str, control: dict | None = None, control_name: str | None = None) -> str:
    """The gate-selectivity sentence of the channel with the highest omega^2: eta^2 against the
    permutation baseline (shuffled n-gram labels), omega^2, and the Engram-null control's best omega^2."""
    i = _best(res)
    l, b = res["channels"][i]
    f = lambda key: res.get(key, [None] * len(res["channels"]))[i]  # noqa: E731
    eta, om, pm, px, p = f("selectivity"), f("selectivity_omega2"), f("selectivity_perm_mean"), f("selectivity_perm_max"), f("selectivity_p")
    if eta is None or pm is None:
        return (f"{name}: no 3-gram was seen often enough for a selectivity with a permutation baseline "
                "(recompute it on the Gates page); not established.")
    s = (f"{name}, layer {l} branch {b} (highest omega^2): eta^2 of the gate explained by 3-gram identity = {eta:.3f}; "
         f"with the n-gram labels shuffled {pm:.3f} on average (max {px:.3f} over {res.get('n_perm', '?')} shuffles, "
         f"p = {p:.2f}); omega^2 = {om:.3f} ({res.get('selectivity_groups', '?')} 3-grams, {res.get('selectivity_tokens', '?')} tokens). ")
    tracks = res.get("tracks_ngrams", [False] * len(res["channels"]))[i]
    s += ("n-gram identity explains more of the gate than shuffled labels do." if tracks
          else "Selectivity above the permutation baseline is not established.")
    if control is not None:
        j = _best(control)
        com = control.get("selectivity_omega2", [None] * len(control["channels"]))[j]
        if com is not None and om is not None:
            cl, cb = control["channels"][j]
            s += (f" Engram-null control {control_name} (memory without content), best layer {cl} branch {cb}: "
                  f"omega^2 = {com:.3f}; ")
            s += ("the memory adds no selectivity beyond what the hidden state gives." if om <= com
                  else "higher for the real memory, but the difference has no interval yet: not established.")
    return s


# ---- Ablation ------------------------------------------------------------------------------------
def ablation_sentences(tables: dict[str, dict[str, dict]], chance: dict[str, float], engram: Sequence[str],
                       control: str | None = None) -> list[str]:
    """One sentence per Engram model: per suite full and ablated accuracy (n, chance level),
    retained % with its 95% paired-bootstrap interval, and a verdict: "drop" only when the full
    model is above chance (Wilson interval) and the retained interval lies below 100% and below the
    control's; "not testable" when the full model is not above chance."""
    out = []
    for name in engram:
        table = tables.get(name)
        if not table:
            continue
        parts = []
        for suite, s in sorted(table.items()):
            n, full, abl = s["n"], s["full"], s["ablated"]
            ch = chance.get(suite, math.nan)
            lo_full, _ = wilson_interval(full * n, n)
            base = f"{suite}: full {full:.2f} -> ablated {abl:.2f} (n = {n}, chance {ch:.2f})"
            if s.get("retained") is None:
                parts.append(base + ", full model scores 0: not testable")
                continue
            ci = s.get("ci")
            base += f", retained {s['retained']:.0f}%" + (f" [{ci[0]:.0f}, {ci[1]:.0f}]" if ci else "")
            ctl = (tables.get(control) or {}).get(suite) if control else None
            if not (lo_full > ch):
                verdict = "full model not above chance: not testable"
            elif ci and ci[1] < 100 and (ctl is None or not ctl.get("ci") or ci[1] < ctl["ci"][0]):
                verdict = "drop established" + ("" if ctl else " (no Engram-null control loaded)")
            elif ci and ci[0] > 100:
                verdict = "gain without Engram established"
            else:
                verdict = "change not established"
            parts.append(f"{base}: {verdict}")
        out.append(f"{name} with Engram suppressed: " + "; ".join(parts) + ".")
    if control and tables.get(control):
        kept = [f"{suite} {s['retained']:.0f}%" for suite, s in sorted(tables[control].items()) if s.get("retained") is not None]
        out.append(f"Engram-null control {control} (its memory has one row per head): retained " + (", ".join(kept) or "n/a") + ".")
    return out
