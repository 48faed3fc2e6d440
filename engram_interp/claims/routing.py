"""The routing finding (``engram_interp.analysis.routing``): are the tokens the Engram gate opens on
routed to other experts than the rest? One pre-stated statistic, the mean over the MoE layers at or
after the gate's layer of the Jensen-Shannon divergence between gate-weighted and (1 - gate)-weighted
expert shares, against the untrained twin (required) and the MoE baseline split by the same gate."""

from __future__ import annotations

from engram_interp.claims.sentences import TWIN, _record
from engram_interp.claims.verdict import MIN_TOKENS, Control, FindingRecord, spread_text, too_few

__all__ = ["routing_finding"]


def _fmt(v, ci) -> str:
    return spread_text(v, ci, ".4f")


def routing_finding(models: list[dict], engram: str, baseline: str | None = None, twin: str | None = None) -> FindingRecord:
    """The finding from ``RoutingResult.to_dict()["models"]``: ``engram`` names the Engram model's entry,
    ``baseline`` the MoE baseline split by the Engram model's gate, ``twin`` the untrained twin's entry."""
    by = {m["name"]: m for m in models}
    e = by.get(engram)
    finding = "routing of gate-open vs other tokens"
    if e is None or e.get("mean_gate_js") is None:
        return _record(finding, f"{engram}: no Engram gate to split tokens by.", None, None, [], 1,
                       testable=False, untestable="the model has no Engram gate")
    controls, parts = [], []
    for label, key in ((TWIN, twin), ("moe", baseline)):
        c = by.get(key) if key else None
        if c is not None and c.get("mean_gate_js") is not None:
            controls.append(Control(label, c["mean_gate_js"], c.get("mean_gate_js_ci")))
            parts.append(f"{label}{'' if key == label else f' ({key})'} {_fmt(c['mean_gate_js'], c.get('mean_gate_js_ci'))}")
    text = (f"{engram}: JS divergence between the expert shares of gate-weighted and (1 - gate)-weighted tokens, "
            f"mean over MoE layers >= {e['gate_layer']}: {_fmt(e['mean_gate_js'], e.get('mean_gate_js_ci'))} nats "
            f"over {e['n_tokens']:,} tokens" + (f"; {'; '.join(parts)}." if parts else "."))
    short = too_few(e.get("n_tokens"), MIN_TOKENS, "tokens")
    return _record(finding, text, e["mean_gate_js"], e.get("mean_gate_js_ci"), controls, 1, testable=short is None,
                   untestable=short or "")
