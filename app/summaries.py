"""Headline sentences of the Overview, read from the on-disk result cache only (never computed here):
one list per analysis, each sentence with its controls and intervals."""

from __future__ import annotations

import math
from collections.abc import Sequence

from app import state
from app.inputs import corpus_id, probe_suites
from app.results import (ABLATION_DEFAULTS, CKA_DEFAULTS, GATES_DEFAULTS, LENS_DEFAULTS, _roles, _suites_key,
                         cka_with_references, is_control, twins)
from app.state import Entry
from app.twins import twin_entry


def _pairs(entries: Sequence[Entry]) -> list[tuple[Entry, Entry]]:
    """(Engram model, baseline) pairs; the Engram-null control only where no real Engram arm is loaded."""
    engram = [e for e in entries if e.has_engram and not is_control(e)] or [e for e in entries if e.has_engram]
    other = [e for e in entries if not e.has_engram]
    return [(a, b) for a in engram for b in other]


def cka_summary(entries: Sequence[Entry]) -> list[str]:
    from engram_interp.analysis.alignment import alignment_verdicts
    from engram_interp.claims.sentences import alignment_sentence

    lines = []
    for a, b in _pairs(entries):
        res = cka_with_references(a, b, entries, CKA_DEFAULTS, compute=False)
        if res is None:
            continue
        what = {"entities": "named-entity final tokens", "all": "tokens"}.get(res["tokens"], "tokens")
        head = (f"{a.label} vs {b.label}, CKA soft alignment of the Engram layers on {res['n_examples']} {what} "
                f"({res.get('source', '?')}; 95% bootstrap intervals over {res['n_batches']} minibatches, "
                "which do not cover seed-to-seed variation unless a second baseline seed is loaded): ")
        verdicts = alignment_verdicts(res)
        lines.append(head + (" ".join(alignment_sentence(v, a.label, b.label, res["k"], res.get("n_batches")).sentence for v in verdicts) or "-"))
    return lines


def summaries(entries: Sequence[Entry]) -> list[tuple[str, list[str]]]:
    out = []
    for title, page, fn in (
        ("1 · LogitLens: KL(final || lens) per layer", "LogitLens", lens_summary),
        ("2 · CKA: soft alignment of the Engram layers against the Engram-null control", "CKA", cka_summary),
        ("3 · Gates: gate selectivity against a permutation baseline", "Gates", gates_summary),
        ("4 · Ablation: accuracy retained with Engram suppressed", "Ablation", ablation_summary),
    ):
        try:
            lines = fn(entries) if fn else []
        except ImportError:
            lines = [f"the {page} analysis is not in this build of engram_interp yet"]
        except Exception as exc:  # noqa: BLE001 - a stale cache entry must not break the Overview
            lines = [f"cached result unreadable ({type(exc).__name__}); recompute it on the {page} page"]
        out.append((title, lines or [f"not computed yet: open the {page} page"]))
    return out


def fmt_ci(value: float, low: float, high: float, digits: int = 2) -> str:
    if any(math.isnan(x) for x in (value, low, high)):
        return "n/a"
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def lens_summary(entries: Sequence[Entry]) -> list[str]:
    from engram_interp.claims.sentences import lens_sentences

    curves = [dict(c, name=e.label) for e in [*entries, *twins(entries)]
              if (c := state.cached_result("logit_lens", [e.sha], dict(LENS_DEFAULTS, data=corpus_id())))]
    engram, control, baseline = _roles(entries)
    lines = []
    for e in engram or [e for e in entries if e.has_engram]:
        lines += [f.sentence for f in lens_sentences(curves, e.label, control.label if control else None,
                                                     baseline.label if baseline else None)]
    if curves and not lines:
        lines = [f"{c['name']}: mean KL over layers {sum(c['kl'][:-1]) / max(1, len(c['kl']) - 1):.3f} nats "
                 f"({c['n_tokens']} tokens); no Engram model loaded" for c in curves]
    return lines


def gates_summary(entries: Sequence[Entry]) -> list[str]:
    from engram_interp.claims.sentences import gate_sentence

    engram, control, _ = _roles(entries)
    ctl = state.cached_result("gates", [control.sha], dict(GATES_DEFAULTS, data=corpus_id())) if control else None
    lines = []
    key = dict(GATES_DEFAULTS, data=corpus_id())
    for e in engram or ([control] if control else []):
        res = state.cached_result("gates", [e.sha], key)
        if res:
            other = ctl if e is not control else None
            twin = state.cached_result("gates", [twin_entry(e).sha], key)
            lines.append(gate_sentence(res, e.label, other, control.label if other else None, twin=twin).sentence
                         + f" Data: {res.get('source', '?')}.")
    return lines


def ablation_summary(entries: Sequence[Entry]) -> list[str]:
    from engram_interp.claims.sentences import ablation_sentences, chance_level

    scored, _ = probe_suites()
    if not scored:
        return []
    engram, control, _ = _roles(entries)
    key = dict(ABLATION_DEFAULTS, suites=_suites_key(scored))
    tables = {e.label: t for e in engram + ([control] if control else []) + twins(entries)
              if (t := state.cached_result("ablation", [e.sha], key))}
    chance = {name: chance_level(items) for name, items in scored.items()}
    lines = [f.sentence for f in ablation_sentences(tables, chance, [e.label for e in engram], control.label if control else None)]
    without = [e.label for e in entries if not e.has_engram]
    if lines and without:
        lines.append(f"{', '.join(without)}: no Engram layers, so it retains 100% by construction.")
    return lines
