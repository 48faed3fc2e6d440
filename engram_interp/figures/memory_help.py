"""Figures of ``memory_help`` (``engram_interp.analysis.memory_help``): Engram - baseline loss per bucket
(n-gram frequency, row collisions, gate value) and the capacity curve, one colour per model (seeds and
the untrained twin included)."""

from __future__ import annotations

import html

import plotly.graph_objects as go
from plotly.subplots import make_subplots

__all__ = ["memory_help_figure", "memory_help_section"]

_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#7f7f7f")


def _errors(rows: list[dict], key: str) -> dict:
    val = [r[key] for r in rows]
    ci = [r[f"{key}_ci"] for r in rows]
    return dict(type="data", symmetric=False,
                array=[(c[1] - v) if c and v is not None else 0 for v, c in zip(val, ci)],
                arrayminus=[(v - c[0]) if c and v is not None else 0 for v, c in zip(val, ci)])


def memory_help_figure(d: dict) -> go.Figure:
    """``d``: the ``memory-help --json`` object (``models``, optional ``twin``). Panels: Engram - baseline loss
    (nats/token, 95% bootstrap interval) by n-gram frequency and by row collisions at the highest order, by
    gate value (every Engram layer), and against the rows kept per head (capacity; "full" = the whole table).
    Below 0: the Engram model predicts those tokens better than its baseline."""
    models = list(d["models"]) + ([d["twin"]] if d.get("twin") else [])
    fig = make_subplots(rows=1, cols=4, horizontal_spacing=0.06,
                        subplot_titles=("by n-gram frequency", "by row collisions", "by gate value", "by capacity (rows/head)"))
    for i, m in enumerate(models):
        c = _COLOURS[i % len(_COLOURS)]
        top = m["order"]
        for col, dim in ((1, "frequency"), (2, "collision")):
            rows = [x for x in m["buckets"] if x["dim"] == dim and x["key"] == top and x["n_tokens"]]
            fig.add_trace(go.Scatter(x=[x["bucket"] for x in rows], y=[x["delta_baseline"] for x in rows],
                                     error_y=_errors(rows, "delta_baseline"), mode="markers+lines", line=dict(color=c),
                                     name=m["name"], legendgroup=m["name"], showlegend=col == 1,
                                     customdata=[x["n_tokens"] for x in rows],
                                     hovertemplate="%{x}: %{y:+.4f} nats/token (%{customdata} tokens)"), row=1, col=col)
        for j, layer in enumerate(m["layers"]):
            rows = [x for x in m["buckets"] if x["dim"] == "gate" and x["key"] == layer and x["n_tokens"]]
            fig.add_trace(go.Scatter(x=[x["bucket"] for x in rows], y=[x["delta_baseline"] for x in rows],
                                     error_y=_errors(rows, "delta_baseline"), mode="markers+lines",
                                     line=dict(color=c, dash=("solid", "dot", "dash")[j % 3]), name=f"{m['name']} layer {layer}",
                                     legendgroup=m["name"], showlegend=False), row=1, col=3)
        caps = m["capacity"]
        fig.add_trace(go.Scatter(x=["full" if k["k"] is None else str(k["k"]) for k in caps],
                                 y=[k["delta_baseline"] for k in caps], error_y=_errors(caps, "delta_baseline"),
                                 mode="markers+lines", line=dict(color=c), name=m["name"], legendgroup=m["name"],
                                 showlegend=False), row=1, col=4)
    for col in range(1, 5):
        fig.add_hline(y=0, line=dict(color="#999", width=1), row=1, col=col)
    fig.update_yaxes(title_text="Engram - baseline loss (nats/token)", row=1, col=1)
    fig.update_xaxes(type="category")
    fig.update_layout(height=420, margin=dict(l=10, r=10, t=60, b=40), legend=dict(orientation="h", y=-0.2))
    return fig


def memory_help_section(d: dict, include_plotlyjs: bool = False) -> str:
    """HTML of the report's "Where the memory helps" section: the figure and the findings' sentences."""
    first = d["models"][0]
    c = first["counts"]
    sentences = "".join(f"<li>{html.escape(f['sentence'])}</li>" for f in d.get("findings", []))
    return ("<h2>Where the memory helps</h2><p>" + html.escape(
        f"Loss of {first['name']} minus {first['baseline']} per token (nats), by how often the token's suffix "
        f"{first['order']}-gram occurs in {c['corpus']} ({c['positions']:,} positions; cold < {c['cold']}, hot >= "
        f"{c['hot']}), by how many of its table rows other n-grams share, by gate value, and with the tables folded "
        f"to k rows per head. Below 0: the memory model does better.") + "</p>"
            + memory_help_figure(d).to_html(full_html=False, include_plotlyjs=include_plotlyjs, div_id="fig-memory-help")
            + (f"<ul>{sentences}</ul>" if sentences else ""))
