"""Figures of ``routing`` (``engram_interp.analysis.routing``): per MoE layer, the load balance and the
router entropy of each model, and the gate / routing divergence with its interval."""

from __future__ import annotations

import html

import plotly.graph_objects as go
from plotly.subplots import make_subplots

__all__ = ["routing_figure", "routing_section"]

_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#7f7f7f")


def routing_figure(d: dict) -> go.Figure:
    """``d`` = ``RoutingResult.to_dict()``. Left: balance (solid) and router entropy (dotted) per MoE
    layer, both over log(experts), one colour per model; right: JS divergence between gate-weighted and
    (1 - gate)-weighted expert shares with its 95% interval (models with a gate split only)."""
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.08,
                        subplot_titles=("load balance (solid) and router entropy (dotted), / log experts",
                                        "gate-open vs other tokens: JS of expert shares (nats)"))
    for i, m in enumerate(d["models"]):
        c = _COLOURS[i % len(_COLOURS)]
        layers = [x["layer"] for x in m["layers"]]
        fig.add_trace(go.Scatter(x=layers, y=[x["balance"] for x in m["layers"]], name=f"{m['name']} balance",
                                 mode="lines+markers", line=dict(color=c)), row=1, col=1)
        fig.add_trace(go.Scatter(x=layers, y=[x["router_entropy"] for x in m["layers"]], name=f"{m['name']} router H",
                                 mode="lines+markers", line=dict(color=c, dash="dot")), row=1, col=1)
        js = [x for x in m["layers"] if x["gate_js"] is not None]
        if js:
            fig.add_trace(go.Scatter(
                x=[x["layer"] for x in js], y=[x["gate_js"] for x in js], name=f"{m['name']} gate JS",
                mode="markers+lines", line=dict(color=c),
                error_y=dict(type="data", symmetric=False,
                             array=[(x["gate_js_ci"][1] - x["gate_js"]) if x["gate_js_ci"] else 0 for x in js],
                             arrayminus=[(x["gate_js"] - x["gate_js_ci"][0]) if x["gate_js_ci"] else 0 for x in js])),
                row=1, col=2)
    fig.update_xaxes(title_text="layer", dtick=1, tickformat="d")
    fig.update_yaxes(range=[0, 1.02], row=1, col=1)
    fig.update_yaxes(rangemode="tozero", row=1, col=2)
    fig.update_layout(height=420, margin=dict(l=10, r=10, t=60, b=40), legend=dict(orientation="h", y=-0.2))
    return fig


def routing_section(d: dict, include_plotlyjs: bool = False) -> str:
    """HTML of the report's Routing section: the figure and the per-model table (tokens, experts,
    mean gate JS with its interval)."""
    rows = []
    for m in d["models"]:
        js = "-" if m["mean_gate_js"] is None else f"{m['mean_gate_js']:.4f}" + (
            "" if not m["mean_gate_js_ci"] else f" [{m['mean_gate_js_ci'][0]:.4f}, {m['mean_gate_js_ci'][1]:.4f}]")
        split = "-" if m["gate_from"] is None else f"{m['gate_from']} layer {m['gate_layer']}"
        rows.append(f"<tr><td>{html.escape(m['name'])}</td><td>{m['n_experts']}</td><td>{m['n_tokens']:,}</td>"
                    f"<td>{html.escape(split)}</td><td>{js}</td></tr>")
    return ("<h2>Routing</h2><p>Per MoE layer: load balance and router entropy (1 = uniform), and whether the "
            "tokens the Engram gate opens on are routed to other experts (JS divergence of expert shares).</p>"
            + routing_figure(d).to_html(full_html=False, include_plotlyjs=include_plotlyjs, div_id="fig-routing")
            + "<table><tr><th>model</th><th>experts</th><th>tokens</th><th>gate split</th><th>mean gate JS [95%]</th></tr>"
            + "".join(rows) + "</table>")
