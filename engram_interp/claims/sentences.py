"""Measured findings of one seed (Overview, report, every command's ``--json``, checkpoints/README.md),
each a :class:`~engram_interp.claims.verdict.FindingRecord` against its controls and with its interval.

The Overview page of the app and ``engram-interp report`` state the same findings from the result
dicts (``to_dict()`` of the analysis results). A record's ``sentence`` says what was measured, on how
much data, against which controls, and ends with the verdict of the one verdict function: with one
seed at most "not established", and "not established" whenever the untrained twin (required: a
model that learned nothing must not show the effect), the Engram-null control or the noise band
covers the difference (docs/ANALYSES.md, "Reading the findings"). Nothing here runs a model.

The untrained twin of a model named ``X`` is the result named ``X~twin``
(:data:`engram_interp.backends.twin.TWIN_SUFFIX`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from engram_interp.backends.twin import TWIN_SUFFIX
from engram_interp.claims.verdict import (ALPHA, MIN_ITEMS, MIN_MINIBATCHES, MIN_TOKENS, Control, FindingRecord, holm,
                                          one_sided_p, spread_text, too_few, verdict)

__all__ = ["wilson_interval", "chance_level", "lens_sentences", "layer_tests", "gate_sentence", "ablation_sentences", "alignment_sentence",
           "TWIN", "twin_name", "measured_chance"]

TWIN = "untrained twin"  # the control's name in every record


def twin_name(name: str) -> str:
    """The result name of ``name``'s untrained twin."""
    return name + TWIN_SUFFIX


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


def _record(finding: str, text: str, effect: float | None, interval, controls: list[Control], direction: int,
            testable: bool = True, untestable: str = "") -> FindingRecord:
    """A one-seed finding: ``text`` followed by the verdict clause of the one verdict function, which
    requires the untrained twin among the controls."""
    v, why = verdict(effect, interval, controls, direction=direction, testable=testable, untestable_reason=untestable,
                     required=(TWIN,))
    if v == "not established" and not any(c.name == TWIN for c in controls):
        why += "; run with --twin"
    sentence = (text.rstrip() + " " if text else "") + f"Verdict: {v} ({why})."
    return FindingRecord(finding=finding, verdict=v, sentence=sentence, effect=effect,
                         interval=None if interval is None else [float(x) for x in interval],
                         controls=[vars(c).copy() for c in controls], n_seeds=1, reason=why)


# ---- CKA -----------------------------------------------------------------------------------------
def _ci(value, low, high) -> str:
    """The index with its interval; a zero-width (or near-zero relative width) bootstrap interval, as a
    top-k index over few minibatches gives, is printed as a point with "no spread measured"."""
    return spread_text(value, None if low is None or high is None else [low, high])


def alignment_sentence(v, name_a: str, name_b: str, k: int, n_batches: int | None = None) -> FindingRecord:
    """The finding of one Engram layer (an ``analysis.alignment.AlignmentVerdict``): the index with its
    interval, each reference (Engram-null control, second baseline seed, untrained twin), the attainable
    range, the within-seed comparison, and the verdict of the one verdict function. The index is a
    top-k statistic: an interval without spread is shown as a point and never carries a claim; with
    ``n_batches`` (minibatches behind the bootstrap) below ``MIN_MINIBATCHES`` the finding is not testable."""
    parts = [f"layer {v.layer}: a_j = {_ci(v.a, *v.ci)} (k = {k}, in {name_b} layer units"
             + ("" if v.attainable is None else f"; attainable with flat CKA: {v.attainable[0]:.1f} to {v.attainable[1]:.1f}")
             + ")"]
    labels = {"control": "Engram-null", "noise": "second baseline seed", "twin": TWIN}
    controls = []
    for kind, (name, value, low, high) in v.references.items():
        parts.append(f"{labels.get(kind, kind)} {name}: {_ci(value, low, high)}")
        controls.append(Control(labels.get(kind, kind), value, None if low is None or high is None else [low, high]))
    within = {"above": "within this seed its interval lies above every reference's",
              "below": "within this seed its interval lies below every reference's"}.get(v.verdict, v.reason)
    ci = None if None in v.ci else list(v.ci)
    short = None if n_batches is None else too_few(n_batches, MIN_MINIBATCHES, "minibatches")
    return _record(f"cka soft alignment: {name_a} layer {v.layer} vs {name_b}", f"CKA {name_a} vs {name_b}: " + "; ".join(parts)
                   + f"; {within}.", v.a, ci, controls, -1 if v.verdict == "below" else 1, testable=short is None,
                   untestable=short or "")


# ---- LogitLens -----------------------------------------------------------------------------------
def _early(curve: dict, half: int) -> tuple[float, float]:
    """The pre-stated LogitLens statistic: mean KL over the first ``half`` layer points, and its SEM."""
    mean = sum(curve["kl"][:half]) / half
    sem = math.sqrt(sum(v * v for v in curve["kl_sem"][:half])) / half
    return mean, sem


def layer_tests(curves: dict[str, dict], engram: str, control: str, alpha: float = ALPHA) -> tuple[list, list, list]:
    """Per layer point (the last, the model's own output, excluded): the one-sided p-value of "Engram's
    KL is lower than the control's" (z = (KL_control - KL_engram) / sqrt(SEM_e^2 + SEM_c^2)), and the
    layers picked out of them uncorrected (p <= alpha) and with Holm's correction over all layers.
    Returns ``(p-values, uncorrected layers, Holm layers)``."""
    e, c = curves[engram], curves[control]
    layers = e["layers"][:-1]
    ps = [one_sided_p(c["kl"][j] - e["kl"][j], math.hypot(e["kl_sem"][j], c["kl_sem"][j])) for j in range(len(layers))]
    raw = [l for l, p in zip(layers, ps) if p == p and p <= alpha]
    kept = [l for l, r in zip(layers, holm(ps, alpha)) if r]
    return ps, raw, kept


def lens_sentences(curves: Sequence[dict[str, Any]], engram: str, control: str | None,
                   baseline: str | None) -> list[FindingRecord]:
    """The LogitLens finding of model ``engram`` (curve names) against its untrained twin (the curve
    named ``engram~twin``), the Engram-null ``control`` and the ``baseline``. The statistic is stated
    before looking: the mean KL over the early half of the layer points, with 1.96 SEM over tokens.
    The per-layer comparison with the control picks layers out of many, so it is a one-sided z-test
    per layer with Holm's correction over the layers (:func:`layer_tests`), said in the sentence, and
    within one seed it stays a description, never the claim. Fewer than ``MIN_TOKENS`` scored tokens:
    not testable."""
    by = {c["name"]: c for c in curves}
    if engram not in by:
        return []
    e = by[engram]
    layers = e["layers"][:-1]  # the last point is the model's own output (KL ~ 0 by construction)
    n_layers = len(layers)
    half = max(1, n_layers // 2)
    head = (f"{engram}: KL(p_final || q_l) at layers {layers[0]}..{layers[-1]} = "
            + ", ".join(f"{v:.2f}" for v in e["kl"][:-1]) + f" nats ({e['n_tokens']} tokens")
    controls = []
    for name, label in ((twin_name(engram), TWIN), (control, "Engram-null")):
        if name in by:
            m, se = _early(by[name], half)
            controls.append(Control(label, m, [m - 1.96 * se, m + 1.96 * se]))
            head += f"; {label} {name}: " + ", ".join(f"{v:.2f}" for v in by[name]["kl"][:-1])
    b = by.get(baseline)
    if b is not None:
        head += f"; {baseline}: " + ", ".join(f"{v:.2f}" for v in b["kl"][:-1])
    text = head + ")."
    c = by.get(control)
    if c is not None:
        _, raw, kept = layer_tests(by, engram, control)
        where = f"at layer(s) {', '.join(map(str, kept))}" if kept else "at no layer"
        text += (f" Per layer (one-sided z-test over tokens, Holm-corrected over the {n_layers} layers at family-wise "
                 f"alpha {ALPHA:g}), Engram's KL is lower than the control's {where}"
                 + (f" (uncorrected p <= {ALPHA:g}: {', '.join(map(str, raw))})" if raw != kept else "")
                 + "; within one seed, a description, not the claim.")
        if b is not None:
            noise = max(abs(c["kl"][j] - b["kl"][j]) for j in range(n_layers))
            text += f" The control and the baseline differ by up to {noise:.2f} nats: one seed per arm."
    else:
        text += " No Engram-null control loaded."
    eff, es = _early(e, half)
    interval = [eff - 1.96 * es, eff + 1.96 * es]
    text += (f" Pre-stated statistic, mean KL over layers {layers[0]}..{layers[half - 1]}: {spread_text(eff, interval, '.3f')}"
             + "".join(f"; {c.name} {c.value:.3f}" for c in controls) + ".")
    short = too_few(e.get("n_tokens"), MIN_TOKENS, "tokens")
    return [_record(f"logit-lens early-half mean KL: {engram}", text, eff, interval, controls, -1,
                    testable=short is None, untestable=short or "")]


# ---- Gates ---------------------------------------------------------------------------------------
def _best(res: dict) -> int:
    chans = [tuple(c) for c in res["channels"]]
    return chans.index(tuple(res["branch_ranking"][0]))


def _best_omega(res: dict) -> tuple[tuple[int, int], float | None]:
    j = _best(res)
    return tuple(res["channels"][j]), res.get("selectivity_omega2", [None] * len(res["channels"]))[j]


def gate_sentence(res: dict, name: str, control: dict | None = None, control_name: str | None = None,
                  twin: dict | None = None) -> FindingRecord:
    """The gate-selectivity finding of the channel with the highest omega^2 (the share of gate variance
    that n-gram identity explains, bias-corrected): against the untrained twin's best omega^2 (``twin``,
    the gate results of ``name~twin``) and the Engram-null control's. A gate computed from the n-gram's
    own embedding tracks n-gram identity by construction, trained or not, so the label-shuffle
    permutation baseline is printed as a description only: the twin is the null that can fail."""
    i = _best(res)
    l, b = res["channels"][i]
    f = lambda key: res.get(key, [None] * len(res["channels"]))[i]  # noqa: E731
    eta, om, pm, px, p = f("selectivity"), f("selectivity_omega2"), f("selectivity_perm_mean"), f("selectivity_perm_max"), f("selectivity_p")
    groups = res.get("selectivity_groups")
    finding = f"gate selectivity (omega^2): {name}"
    if eta is None or pm is None:
        return _record(finding, f"{name}: no 3-gram was seen often enough for a selectivity with a permutation baseline.",
                       None, None, [], 1, testable=False, untestable=f"too few n-grams ({groups}; 50 needed)")
    s = (f"{name}, layer {l} branch {b} (highest omega^2): eta^2 of the gate explained by 3-gram identity = {eta:.3f}; "
         f"with the n-gram labels shuffled {pm:.3f} on average (max {px:.3f} over {res.get('n_perm', '?')} shuffles, "
         f"p = {p:.3g}, a description: the gate reads the n-gram's own embedding); omega^2 = {om:.3f} "
         f"({groups} 3-grams, {res.get('selectivity_tokens', '?')} tokens).")
    ctl = []
    for label, other, other_name in ((TWIN, twin, twin_name(name)), ("Engram-null", control, control_name)):
        if other is None:
            continue
        (cl, cb), com = _best_omega(other)
        if com is None:
            continue
        s += f" {label} {other_name}, best layer {cl} branch {cb}: omega^2 = {com:.3f}."
        ctl.append(Control(label, com, None))
    enough = isinstance(groups, int) and groups >= 50
    return _record(finding, s, om, None, ctl, 1, testable=enough, untestable=f"too few n-grams ({groups}; 50 needed)")


# ---- Ablation ------------------------------------------------------------------------------------
def measured_chance(uniform: float, n: int, twin_full: float | None = None, prior: float | None = None) -> dict:
    """The chance line of one suite, measured: ``{"uniform guess", "untrained twin"?, "candidate prior"?,
    "floor", "floor_name", "prior_flagged"}`` (accuracies 0..1). ``floor`` is the highest of them (what a
    full model must beat); ``prior_flagged`` is True when the candidates can be ranked without the
    prompt: the candidate prior's 95% Wilson lower bound over the ``n`` items exceeds the uniform guess."""
    out: dict = {"uniform guess": uniform}
    if twin_full is not None:
        out[TWIN] = twin_full
    if prior is not None:
        out["candidate prior"] = prior
    known = [(k, v) for k, v in out.items() if v == v]
    out["floor_name"], out["floor"] = max(known, key=lambda kv: kv[1], default=("uniform guess", math.nan))
    out["prior_flagged"] = bool(prior is not None and uniform == uniform and wilson_interval(prior * n, n)[0] > uniform)
    return out


def _design_text(design: dict | None) -> str:
    if not design:
        return ""
    if design.get("balanced"):
        return (f"; balanced design: {design['groups']} groups of items sharing one candidate set, each candidate the "
                f"gold once ({design['dropped']} of {design['anchors']} anchors had no complete group)")
    return f"; no balanced design ({design.get('reason', 'not possible')}), scored as it is"


def ablation_sentences(tables: dict[str, dict[str, dict]], chance: dict[str, float], engram: Sequence[str],
                       control: str | None = None, prior: dict[str, dict[str, float]] | None = None,
                       design: dict[str, dict] | None = None) -> list[FindingRecord]:
    """One finding per Engram model and suite: full and ablated accuracy (n), retained % with its 95%
    paired-bootstrap interval, against "no change" (100%), the Engram-null ``control`` and the untrained
    twin (table ``name~twin``). Chance is measured, not assumed (:func:`measured_chance`): the suite is
    testable only when the full model's Wilson lower bound exceeds the uniform guess (``chance``), the
    untrained twin's full accuracy and the model's candidate-prior accuracy (``prior[name][suite]``:
    candidates ranked without the prompt), and it has at least ``MIN_ITEMS`` items; a suite whose
    candidates the model ranks above the uniform guess without the prompt is flagged. ``design[suite]``
    (``data.balanced.balanced_suites``) says whether the suite was scored as a balanced design."""
    out = []
    for name in engram:
        table = tables.get(name)
        if not table:
            continue
        twin = tables.get(twin_name(name)) or {}
        for suite, s in sorted(table.items()):
            n, full, abl = s["n"], s["full"], s["ablated"]
            lo_full, _ = wilson_interval(full * n, n)
            pr = ((prior or {}).get(name) or {}).get(suite)
            mc = measured_chance(chance.get(suite, math.nan), n, twin[suite]["full"] if suite in twin else None, pr)
            floor_name, floor = mc["floor_name"], mc["floor"]
            text = (f"{name} with Engram suppressed, {suite}: full {full:.2f} -> ablated {abl:.2f} (n = {n}; chance: "
                    + ", ".join(f"{k} {mc[k]:.2f}" for k in ("uniform guess", TWIN, "candidate prior") if k in mc)
                    + _design_text((design or {}).get(suite)) + ")")
            flag = ""
            if mc["prior_flagged"]:
                flag = ("; flagged: without the prompt the model ranks this suite's candidates above the uniform guess"
                        + (", about as well as with it" if pr >= lo_full else ""))
            finding = f"ablation retained %: {name} {suite}"
            if s.get("retained") is None:
                out.append(_record(finding, text + flag + ".", None, None, [], -1, testable=False,
                                   untestable="the full model scores 0"))
                continue
            ci = s.get("ci")
            text += f", retained % {spread_text(s['retained'], ci, '.0f')}"
            controls = [Control("no change", 100.0, None)]
            for label, other in ((TWIN, twin.get(suite)), ("Engram-null", (tables.get(control) or {}).get(suite) if control else None)):
                if other and other.get("retained") is not None:
                    controls.append(Control(label, other["retained"], other.get("ci")))
                    text += f"; {label} retained {other['retained']:.0f}%"
            testable = lo_full > floor if floor == floor else lo_full > 0
            short = too_few(n, MIN_ITEMS, "items")
            out.append(_record(finding, text + flag + ".", s["retained"], ci, controls, -1,
                               testable=testable and short is None,
                               untestable=short or f"the full model is not above chance (Wilson lower bound {lo_full:.2f} vs "
                                                   f"{floor_name} {floor:.2f})"))
    return out
