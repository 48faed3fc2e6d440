"""The CKA soft-alignment finding stated against its references (docs/ANALYSES.md, section 2).

The paper reads ``a_j > j`` at an Engram layer j as "layer j of the Engram model looks like a
deeper layer of the baseline". With few layer points the index is squeezed into a narrow range by
construction (:func:`engram_interp.analysis.cka.soft_alignment_range`), so ``a_j > j`` alone says
little: layer 0 of any model reads above 0. Here the index of the Engram model is compared with
the same index of reference models against the same baseline B:

* ``control``: the Engram-null arm (same architecture, memory without content) vs B;
* ``noise``: a second seed of the baseline vs B (the seed-to-seed scatter of the index).

``verdict`` here is the within-seed comparison ("above", "below" or "not established"); the claim word a
surface prints comes from the one verdict function (engram_interp.claims.verdict), through
:func:`engram_interp.claims.sentences.alignment_sentence`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engram_interp.analysis.cka_models import CKAResult

__all__ = ["AlignmentVerdict", "reference_entry", "alignment_verdicts"]


def reference_entry(res: CKAResult | dict) -> dict:
    """The part of a reference model's CKA result that :func:`alignment_verdicts` reads:
    ``{"name", "soft_alignment", "soft_alignment_ci", "k"}`` (index values in B's layer units)."""
    d = res.to_dict() if isinstance(res, CKAResult) else res
    return {"name": d["name_a"], "soft_alignment": d["soft_alignment"], "soft_alignment_ci": d["soft_alignment_ci"],
            "k": d["k"]}


@dataclass
class AlignmentVerdict:
    """One Engram layer j: its index ``a`` with 95% interval ``ci``, each reference's index and
    interval (``references[kind] = (name, value, low, high)``), the attainable range for this k,
    and ``verdict``: ``"above"``, ``"below"`` or ``"not established"`` (with ``reason``)."""

    layer: int
    a: float | None
    ci: tuple[float | None, float | None]
    attainable: tuple[float, float] | None
    references: dict[str, tuple[str, float | None, float | None, float | None]] = field(default_factory=dict)
    verdict: str = "not established"
    reason: str = ""


def _at(values, j):
    return values[j] if values is not None and j < len(values) else None


def alignment_verdicts(res: CKAResult | dict) -> list[AlignmentVerdict]:
    """One :class:`AlignmentVerdict` per Engram layer of model A (``engram_layers_a``), comparing
    ``soft_alignment`` with every entry of ``references`` computed with the same k. Returns [] when
    A has no Engram layers."""
    d = res.to_dict() if isinstance(res, CKAResult) else res
    rng = d.get("soft_alignment_range")
    refs = {kind: r for kind, r in (d.get("references") or {}).items() if r and r.get("k", d["k"]) == d["k"]}
    out = []
    for j in d.get("engram_layers_a") or []:
        a = _at(d["soft_alignment"], j)
        lo, hi = _at(d["soft_alignment_ci"][0], j), _at(d["soft_alignment_ci"][1], j)
        v = AlignmentVerdict(layer=j, a=a, ci=(lo, hi), attainable=None if rng is None else (rng[0], rng[1]))
        for kind, r in sorted(refs.items()):
            ci = r["soft_alignment_ci"]
            v.references[kind] = (r["name"], _at(r["soft_alignment"], j), _at(ci[0], j), _at(ci[1], j))
        known = [x for x in v.references.values() if None not in x[1:]]
        if a is None or lo is None or hi is None:
            v.reason = "the index is undefined at this layer"
        elif not v.references:
            v.reason = "no reference model (Engram-null control or second baseline seed) was given"
        elif len(known) < len(v.references):
            v.reason = "a reference index is undefined at this layer"
        elif lo > max(x[3] for x in known):
            v.verdict, v.reason = "above", "its interval lies above every reference's interval"
        elif hi < min(x[2] for x in known):
            v.verdict, v.reason = "below", "its interval lies below every reference's interval"
        else:
            v.reason = "its interval overlaps a reference's interval"
        out.append(v)
    return out
