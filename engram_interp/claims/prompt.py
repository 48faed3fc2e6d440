"""Findings from one prompt (``attribute``, ``patch``), stated beside the untrained twin's numbers.

One prompt (or one clean/corrupted pair) gives one number per component and no interval, so these
findings are points: "no spread measured", never more than "not established". What they can say
is whether the untrained twin (same architecture, random init) shows as much: a component that
writes as much of the logit, or restores as much of the answer, in a model that learned nothing
explains nothing about the trained one.
"""

from __future__ import annotations

from engram_interp.claims.sentences import TWIN, _record
from engram_interp.claims.verdict import Control, FindingRecord

__all__ = ["engram_logit", "engram_restored", "attribution_finding", "patch_finding"]


def engram_logit(d: dict) -> float | None:
    """Sum of the Engram components' direct contributions (logits) in an attribution dict
    (``analysis.attribution`` ``to_dict()``); None without Engram components."""
    vals = [c["contribution"] for c in d["components"] if c["kind"] == "engram"]
    return sum(vals) if vals else None


def engram_restored(d: dict) -> tuple[int, float] | None:
    """``(layer, restored fraction)`` of the Engram output patched at all positions that restores the
    most, from a patching dict (``analysis.patching`` ``to_dict()``); None without Engram layers."""
    bars = next((b for b in d.get("components", []) if b["kind"] == "engram" and b["layers"]), None)
    if bars is None:
        return None
    i = max(range(len(bars["layers"])), key=lambda j: bars["restored"][j])
    return bars["layers"][i], bars["restored"][i]


def _point(finding: str, text: str, effect: float | None, twin_effect: float | None, twin: dict | None,
           untestable: str) -> FindingRecord:
    if effect is None:
        return _record(finding, text, None, None, [], 1, testable=False, untestable=untestable)
    controls = []
    if twin_effect is not None:
        controls.append(Control(TWIN, twin_effect, None))
        same = abs(twin_effect) >= abs(effect)
        text += f"; {TWIN} {twin.get('model', '')}: {twin_effect:+.3f}" + (" (the twin shows as much)" if same else "")
    return _record(finding, text + "; one prompt: a point.", effect, None, controls, 1 if effect >= 0 else -1)


def attribution_finding(d: dict, twin: dict | None = None) -> FindingRecord:
    """Engram's direct contribution to the explained logit (difference) of one prompt, beside the twin's."""
    what = f"logit({d['target']!r})" + (f" - logit({d['contrast']!r})" if d.get("contrast") is not None else "")
    e = engram_logit(d)
    text = (f"{d['model']}: the Engram layers wrote {e:+.3f} of {what} = {d['logit']:+.3f} after {d['text']!r}"
            if e is not None else f"{d['model']} has no Engram layers.")
    t = None if twin is None else engram_logit(twin)
    return _point(f"attribution Engram logit: {d['model']}", text, e, t, twin, "the model has no Engram layers")


def patch_finding(d: dict, twin: dict | None = None, twin_note: str = "") -> FindingRecord:
    """The Engram output's best restored fraction of one clean/corrupted pair, beside the twin's."""
    e = engram_restored(d)
    text = (f"{d['model']}: patching the Engram output of layer {e[0]} restores {e[1]:.3f} of the clean metric"
            if e is not None else f"{d['model']}: no Engram output to patch.")
    t = None if twin is None else engram_restored(twin)
    if twin_note:
        text += f"; {TWIN}: {twin_note}"
    return _point(f"patching Engram output: {d['model']}", text, None if e is None else e[1],
                  None if t is None else t[1], twin, "the model has no Engram layers")
