"""Figures and the report section of the memory inspector (``engram_interp.analysis.memory``)."""

from __future__ import annotations

import html

import plotly.graph_objects as go

from engram_interp.figures.axes import log_axis

_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")

__all__ = ["memory_usage_figure", "memory_norm_figure", "memory_pca_figure", "memory_section"]


def memory_usage_figure(res) -> go.Figure:
    """Rank-frequency curves of row loads (positions per row, log-log), one line per layer and hash
    head of ``res`` (a ``MemoryResult``); the legend gives the fitted Zipf exponent."""
    fig = go.Figure()
    xs: list[float] = []
    ys: list[float] = []
    for L in res.layers:
        for h in L.heads:
            xs += h.rank_curve["rank"]
            ys += h.rank_curve["load"]
            fig.add_trace(go.Scatter(
                x=h.rank_curve["rank"], y=h.rank_curve["load"], mode="lines",
                name=f"L{L.layer} n={h.order} h{h.head} (s={'-' if h.zipf_exponent is None else f'{h.zipf_exponent:.2f}'})",
                hovertemplate="rank %{x}<br>load %{y} positions<extra></extra>"))
    n = len(fig.data)  # the legend lists every curve: the figure is tall enough for all of them (no scroll box)
    fig.update_layout(title=f"Row usage: {html.escape(res.name)} ({res.n_positions} positions)",
                      xaxis=log_axis(xs, "row rank (by load)"), yaxis=log_axis(ys, "positions served"),
                      template="plotly_white", height=legend_height(n), margin=dict(t=LEGEND_MARGIN[0], b=LEGEND_MARGIN[1]),
                      legend=dict(tracegroupgap=0, maxheight=1.0))
    return fig


LEGEND_MARGIN = (70, 60)  # top and bottom margins (px) of a figure sized by legend_height
LEGEND_LINE = 21  # px per legend line (one trace) in plotly's default font


def legend_height(n_entries: int, base: int = 450) -> int:
    """A figure height (px) whose plot area (height less the LEGEND_MARGIN) holds a vertical legend of
    ``n_entries`` lines, so plotly never turns it into a scroll box."""
    return max(base, sum(LEGEND_MARGIN) + LEGEND_LINE * n_entries + 30)


def memory_norm_figure(res) -> go.Figure:
    """Mean L2 norm of touched rows by load bin (powers of 2) per layer, with the mean norm of the
    sampled untouched rows as the dotted control line of the same colour (a legend entry)."""
    fig = go.Figure()
    loads = [v for L in res.layers for b in L.norm_by_load for v in (b["load_min"], b["load_max"])]
    for i, L in enumerate(res.layers):
        bins = L.norm_by_load
        colour = _PALETTE[i % len(_PALETTE)]
        fig.add_trace(go.Scatter(x=[b["load_min"] for b in bins], y=[b["mean_norm"] for b in bins], mode="lines+markers",
                                 name=f"layer {L.layer}", line=dict(color=colour),
                                 customdata=[[b["load_max"], b["n_rows"]] for b in bins],
                                 hovertemplate="load %{x}-%{customdata[0]}<br>mean norm %{y:.3f}<br>%{customdata[1]} rows<extra></extra>"))
        free = [h.norm_untouched for h in L.heads if h.norm_untouched is not None]
        if free and loads:  # the control as a legend entry in the layer's colour: labels on the plot overlapped
            y = sum(free) / len(free)
            fig.add_trace(go.Scatter(x=[min(loads), max(loads)], y=[y, y], mode="lines", name=f"untouched rows, layer {L.layer}",
                                     line=dict(color=colour, dash="dot"),
                                     hovertemplate=f"untouched rows, layer {L.layer}: mean norm {y:.3f}<extra></extra>"))
    fig.update_layout(title="Row norm against row load", xaxis=log_axis(loads, "positions served by the row"),
                      yaxis_title="L2 norm of the row", template="plotly_white")
    return fig


def memory_pca_figure(res, layer: int) -> go.Figure:
    """2-D PCA map of the memory vectors of the most frequent n-grams of ``layer``, coloured by
    order; hover shows the n-gram and its count. Empty when the layer has no map (e.g. Engram-null)."""
    L = next(l for l in res.layers if l.layer == layer)
    fig = go.Figure()
    if L.pca:
        for order in sorted({p["order"] for p in L.pca["points"]}):
            pts = [p for p in L.pca["points"] if p["order"] == order]
            fig.add_trace(go.Scatter(x=[p["x"] for p in pts], y=[p["y"] for p in pts], mode="markers", name=f"{order}-grams",
                                     customdata=[[html.escape(p["text"]), p["count"]] for p in pts],
                                     hovertemplate="%{customdata[0]}<br>count %{customdata[1]}<extra></extra>"))
        ev = L.pca["explained_variance_ratio"]
        axes = dict(xaxis_title=f"PC1 ({100 * ev[0]:.1f}%)", yaxis_title=f"PC2 ({100 * ev[1]:.1f}%)")
    else:
        axes = dict(xaxis_title="PC1", yaxis_title="PC2")
    fig.update_layout(title=f"Memory vectors of frequent n-grams, layer {layer}", template="plotly_white", **axes)
    return fig


def memory_section(res, first_figure_index: int = 0, include_plotlyjs: bool = False) -> str:
    """The report's memory-inspector section as HTML: the usage/collision table (with the uniform-hash
    reference), the usage, norm and PCA figures and the heaviest rows of head 0 of every order."""
    rows = "".join(
        f"<tr><td>{L.layer}</td><td>{h.order}</td><td>{h.head}</td><td>{h.rows:,}</td><td>{h.touched:,}</td>"
        f"<td>{h.top1pct_share:.3f}</td><td>{'-' if h.zipf_exponent is None else f'{h.zipf_exponent:.2f}'}</td>"
        f"<td>{h.collision_share:.3f}</td><td>{h.uniform_collision_share:.3f}</td>"
        f"<td>{'-' if h.norm_touched is None else f'{h.norm_touched:.3f}'}</td>"
        f"<td>{'-' if h.norm_untouched is None else f'{h.norm_untouched:.3f}'}</td></tr>"
        for L in res.layers for h in L.heads)
    parts = [f"<h2>Memory: {html.escape(res.name)}</h2>",
             f"<p>{res.n_positions} positions hashed from {res.n_texts} texts ({html.escape(res.layout)} layout"
             f"{', Engram-null' if res.null_memory else ''}). Collision share: positions whose row also serves another"
             " corpus n-gram; uniform: the same for a uniform hash of the table size.</p>",
             "<table><tr><th>layer</th><th>n</th><th>head</th><th>rows</th><th>touched</th><th>top 1% share</th>"
             "<th>Zipf s</th><th>collision</th><th>uniform</th><th>|row| touched</th><th>|row| untouched</th></tr>"
             f"{rows}</table>"]
    figs = [memory_usage_figure(res), memory_norm_figure(res)] + [memory_pca_figure(res, L.layer) for L in res.layers]
    for i, fig in enumerate(figs):
        parts.append(fig.to_html(full_html=False, include_plotlyjs=include_plotlyjs and i == 0,
                                 div_id=f"memfig{first_figure_index + i}"))
    for L in res.layers:
        for h in L.heads:
            if h.head == 0:
                body = "".join(f"<tr><td>{r['row']}</td><td>{r['load']}</td><td>"
                               + html.escape(", ".join(f"{g['text']!r} x{g['count']}" for g in r["ngrams"][:6]))
                               + "</td></tr>" for r in h.heavy_rows[:8])
                parts.append(f"<h3>Heaviest rows, layer {L.layer}, order {h.order}, head 0</h3>"
                             f"<table><tr><th>row</th><th>load</th><th>n-grams</th></tr>{body}</table>")
    return "".join(parts)
