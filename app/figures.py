"""APP-LOCAL plotly figures, used only until ``engram_interp.report`` provides them (then delete)."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go
import torch


def cka_heatmap(cka: torch.Tensor, low: torch.Tensor, high: torch.Tensor, label_a: str, label_b: str,
                align: torch.Tensor, argmax: torch.Tensor, engram_layers: Sequence[int]) -> go.Figure:
    """CKA [L_a, L_b] with the diagonal, the soft alignment index and the argmax of every row of A."""
    la, lb = cka.shape
    hover = [[f"{label_a} L{i} vs {label_b} L{j}<br>CKA {cka[i, j]:.3f} [{low[i, j]:.3f}, {high[i, j]:.3f}]"
              for j in range(lb)] for i in range(la)]
    fig = go.Figure(go.Heatmap(z=cka.numpy(), x=list(range(lb)), y=list(range(la)), colorscale="Viridis",
                               zmin=min(0.0, float(torch.nan_to_num(cka).min())), zmax=1.0, text=hover,
                               hoverinfo="text", colorbar=dict(title="CKA")))
    n = min(la, lb)
    fig.add_trace(go.Scatter(x=[-0.5, n - 0.5], y=[-0.5, n - 0.5], mode="lines", name="diagonal",
                             line=dict(color="white", dash="dash")))
    fig.add_trace(go.Scatter(x=argmax.tolist(), y=list(range(la)), mode="markers", name="argmax",
                             marker=dict(symbol="x", color="orange", size=9)))
    fig.add_trace(go.Scatter(x=align.tolist(), y=list(range(la)), mode="lines+markers", name="soft alignment a_j",
                             line=dict(color="red"), marker=dict(size=8)))
    for j in engram_layers:
        fig.add_hline(y=j, line=dict(color="red", width=1, dash="dot"))
    fig.update_layout(xaxis_title=f"{label_b} layer (stream entering block)", yaxis_title=f"{label_a} layer",
                      height=520, legend=dict(orientation="h", y=1.08), margin=dict(t=60))
    return fig


def kl_curves(curves: Sequence[dict]) -> go.Figure:
    """Mean KL(p_final || q_l) per layer point with +-1.96 SEM bands, one line per model."""
    fig = go.Figure()
    for c in curves:
        x, y, sem = c["layers"], c["kl"], c["kl_sem"]
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=f"{c['name']} ({c['n_tokens']} tokens)",
                                 error_y=dict(type="data", array=[1.96 * s for s in sem], visible=True)))
    fig.update_layout(xaxis=dict(dtick=1), xaxis_title="layer point (stream entering block l; last = output)",
                      yaxis_title="KL(p_final || q_l), nats", height=420, legend=dict(orientation="h", y=1.1))
    return fig


def token_heatmap(z: Sequence[Sequence[float]], tokens: Sequence[str], rows: Sequence[str], hover: Sequence[Sequence[str]],
                  title: str, colorbar: str, zmin: float | None = None, zmax: float | None = None,
                  colorscale: str = "Viridis", cell_text: Sequence[Sequence[str]] | None = None) -> go.Figure:
    """A rows x tokens heatmap with per-cell hover text (and optional text drawn in the cells)."""
    x = [f"{i}:{t}" for i, t in enumerate(tokens)]
    fig = go.Figure(go.Heatmap(z=z, x=x, y=list(rows), text=hover, hoverinfo="text", colorscale=colorscale,
                               zmin=zmin, zmax=zmax, colorbar=dict(title=colorbar),
                               texttemplate="%{customdata}" if cell_text is not None else None,
                               customdata=cell_text))
    fig.update_layout(title=title, height=120 + 28 * len(rows), xaxis=dict(tickangle=-60, type="category"),
                      yaxis=dict(type="category", autorange="reversed"), margin=dict(t=40, b=10))
    return fig


def retained_bars(bars: Sequence[tuple[str, str, float | None, Sequence[float] | None]]) -> go.Figure:
    """Retained % per suite (x) and model (colour); ``bars``: (model, suite, retained %, (low, high) or None)."""
    fig = go.Figure()
    for model in dict.fromkeys(b[0] for b in bars):
        rs = [b for b in bars if b[0] == model]
        hi = [0.0 if v is None or ci is None else ci[1] - v for _, _, v, ci in rs]
        lo = [0.0 if v is None or ci is None else v - ci[0] for _, _, v, ci in rs]
        fig.add_trace(go.Bar(x=[b[1] for b in rs], y=[b[2] for b in rs], name=model,
                             error_y=dict(type="data", symmetric=False, array=hi, arrayminus=lo)))
    fig.add_hline(y=100, line=dict(dash="dash", color="gray"))
    fig.update_layout(barmode="group", yaxis_title="retained % (ablated / full)", height=380,
                      legend=dict(orientation="h", y=1.12))
    return fig
