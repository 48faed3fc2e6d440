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

from engram_interp.claims.verdict import Control, verdict

__all__ = ["wilson_interval", "chance_level", "lens_sentences", "gate_sentence", "ablation_sentences", "alignment_sentence"]


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


def _word(effect: float | None, interval, controls: list[Control], direction: int, testable: bool = True,
          untestable: str = "") -> str:
    """The verdict clause of a one-seed sentence, from the one verdict function."""
    v, why = verdict(effect, interval, controls, direction=direction, testable=testable, untestable_reason=untestable,
                     required=("untrained twin",) if any(c.name == "untrained twin" for c in controls) else ())
    return f"Verdict: {v} ({why})."


# ---- CKA -----------------------------------------------------------------------------------------
def _ci(value, low, high) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2f}" + ("" if low is None or high is None else f" [{low:.2f}, {high:.2f}]")


def alignment_sentence(v, name_a: str, name_b: str, k: int) -> str:
    """One measured sentence for one Engram layer (an ``analysis.alignment.AlignmentVerdict``): the index
    with its interval, each reference (Engram-null control, second baseline seed, untrained twin), the
    attainable range, the within-seed comparison, and the verdict of the one verdict function."""
    parts = [f"layer {v.layer}: a_j = {_ci(v.a, *v.ci)} (k = {k}, in {name_b} layer units"
             + ("" if v.attainable is None else f"; attainable with flat CKA: {v.attainable[0]:.1f} to {v.attainable[1]:.1f}")
             + ")"]
    labels = {"control": "Engram-null control", "noise": "second baseline seed", "twin": "untrained twin"}
    controls = []
    for kind, (name, value, low, high) in v.references.items():
        parts.append(f"{labels.get(kind, kind)} {name}: {_ci(value, low, high)}")
        controls.append(Control(labels.get(kind, kind), value, None if low is None or high is None else [low, high]))
    within = {"above": "within this seed its interval lies above every reference's",
              "below": "within this seed its interval lies below every reference's"}.get(v.verdict, v.reason)
    ci = None if None in v.ci else list(v.ci)
    return "; ".join(parts) + f"; {within}. " + _word(v.a, ci, controls, -1 if v.verdict == "below" else 1)


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
    n_layers = len(layers)
    within = (f"Within this seed Engram's 95% interval lies below the control's at layer(s) {', '.join(map(str, lower))} "
              f"of {n_layers} (no multiple-comparison correction: a description, not a test)" if lower
              else "Within this seed Engram's interval is below the control's at no layer")
    tail = f" The control and the baseline differ by up to {noise:.2f} nats: one seed per arm." if b is not None else ""
    # the pre-stated statistic: mean KL over the early half of the layer points (as in FINDINGS.md)
    half = max(1, n_layers // 2)
    mean = lambda x: sum(x[:half]) / half  # noqa: E731
    sem = lambda x: math.sqrt(sum(v * v for v in x[:half])) / half  # noqa: E731
    eff, es = mean(e["kl"]), sem(e["kl_sem"])
    ctl = [Control("Engram-null", mean(c["kl"]), [mean(c["kl"]) - 1.96 * sem(c["kl_sem"]), mean(c["kl"]) + 1.96 * sem(c["kl_sem"])])]
    if "untrained twin" in by:
        t = by["untrained twin"]
        ctl.append(Control("untrained twin", mean(t["kl"]), [mean(t["kl"]) - 1.96 * sem(t["kl_sem"]), mean(t["kl"]) + 1.96 * sem(t["kl_sem"])]))
    return [head + "). " + within + "." + tail + f" Mean KL over layers {layers[0]}..{layers[half - 1]}: {eff:.3f} "
            f"[{eff - 1.96 * es:.3f}, {eff + 1.96 * es:.3f}]. " + _word(eff, [eff - 1.96 * es, eff + 1.96 * es], ctl, -1)]


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
    s += ("Within this model eta^2 exceeds every shuffle." if tracks else "eta^2 does not exceed every shuffle.")
    groups = res.get("selectivity_groups")
    enough = isinstance(groups, int) and groups >= 50
    ctl = [Control("shuffled labels", px, None)]
    if control is not None:
        j = _best(control)
        com = control.get("selectivity_omega2", [None] * len(control["channels"]))[j]
        if com is not None and om is not None:
            cl, cb = control["channels"][j]
            s += (f" Engram-null control {control_name} (memory without content), best layer {cl} branch {cb}: "
                  f"omega^2 = {com:.3f}; ")
            s += "its omega^2 is at least the real memory's. " if om <= com else "lower than the real memory's. "
            ctl.append(Control("Engram-null", com, None))
    s += " " + _word(om, None, ctl, 1, testable=enough, untestable=f"too few n-grams ({groups}; 50 needed)")
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
            controls = [Control("no change", 100.0, None)]
            if ctl and ctl.get("retained") is not None:
                controls.append(Control("Engram-null", ctl["retained"], ctl.get("ci")))
            word = _word(s["retained"], ci, controls, -1, testable=lo_full > ch,
                         untestable=f"the full model is not above chance (Wilson lower bound {lo_full:.2f} vs {ch:.2f})")
            parts.append(f"{base}. {word}")
        out.append(f"{name} with Engram suppressed: " + "; ".join(parts) + ".")
    if control and tables.get(control):
        kept = [f"{suite} {s['retained']:.0f}%" for suite, s in sorted(tables[control].items()) if s.get("retained") is not None]
        out.append(f"Engram-null control {control} (its memory has one row per head): retained " + (", ".join(kept) or "n/a") + ".")
    return out
