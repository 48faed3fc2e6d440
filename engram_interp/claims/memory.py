"""The memory inspector's finding against the untrained twin (``engram_interp.memory.twin``).

Learned content shows where the trained rows differ from their init: gradient updates reach only
the rows the training corpus hashed to, so the touched rows' mean L2 norm drifts from the
untouched rows'. The twin's rows are all drawn alike, so its gap is zero up to sampling; the hash
statistics (rows touched, collisions, Zipf) are the same for the twin by construction and carry no
finding.
"""

from __future__ import annotations

import math

from engram_interp.claims.sentences import TWIN, _record
from engram_interp.claims.verdict import Control, FindingRecord, spread_text

__all__ = ["norm_gap", "memory_findings"]


def norm_gap(layer) -> tuple[float | None, list[float] | None]:
    """One layer's (``analysis.memory.LayerStats`` or its dict) mean over hash heads of (touched rows'
    mean L2 norm - untouched rows' mean L2 norm), with a 95% normal interval from the heads' own
    intervals (half-widths combined in quadrature); (None, None) when a head has no norms."""
    heads = layer["heads"] if isinstance(layer, dict) else [vars(h) for h in layer.heads]
    gaps, var = [], 0.0
    for h in heads:
        if h["norm_touched"] is None or h["norm_untouched"] is None:
            return None, None
        gaps.append(h["norm_touched"] - h["norm_untouched"])
        for key in ("norm_touched_ci", "norm_untouched_ci"):
            ci = h.get(key)
            var += 0.0 if ci is None else ((ci[1] - ci[0]) / 3.92) ** 2
    if not gaps:
        return None, None
    m, se = sum(gaps) / len(gaps), math.sqrt(var) / len(gaps)
    return m, [m - 1.96 * se, m + 1.96 * se]


def memory_findings(res: dict, twin: dict | None) -> list[FindingRecord]:
    """One finding per Engram layer of ``res`` (``MemoryResult.to_dict()``): the touched-minus-untouched
    row norm gap (:func:`norm_gap`, norm units) against the twin's (``twin``: the twin's result dict)."""
    tw = {l["layer"]: l for l in (twin or {}).get("layers", [])}
    out = []
    for layer in res["layers"]:
        g, ci = norm_gap(layer)
        finding = f"memory touched-row norm gap: {res['name']} layer {layer['layer']}"
        if res.get("null_memory"):
            out.append(_record(finding, f"{res['name']} layer {layer['layer']}: Engram-null memory (every n-gram reads "
                               "row 0).", None, None, [], 1, testable=False, untestable="an Engram-null memory has no rows to compare"))
            continue
        text = (f"{res['name']} layer {layer['layer']}: touched minus untouched rows' mean L2 norm, mean over "
                f"{len(layer['heads'])} hash heads = {spread_text(g, ci, '.4f')}")
        controls = []
        if layer["layer"] in tw:
            tg, tci = norm_gap(tw[layer["layer"]])
            if tg is not None:
                controls.append(Control(TWIN, tg, tci))
                text += f"; {TWIN} {twin['name']}: {spread_text(tg, tci, '.4f')}"
        text += ("; rows touched, collisions and Zipf exponents are the twin's too (the hash is not learned)."
                 if controls else ".")
        out.append(_record(finding, text, g, ci, controls, 1 if (g or 0) >= 0 else -1))
    return out
