"""Figures (plotly) of the four analyses: LogitLens, CKA, gates and ablation.

Every ``*_figure`` takes a result dataclass from ``engram_interp.analysis`` and returns a
``plotly.graph_objects.Figure``; the CLI, the report and the Streamlit app render the same figures.
"""

from __future__ import annotations

import html
from typing import Sequence

import plotly.graph_objects as go

from engram_interp.analysis.ablation import AblationResult
from engram_interp.analysis.cka_models import CKAResult
from engram_interp.analysis.gates import GateCorpusResult, GateMap
from engram_interp.analysis.logit_lens import LogitLensResult, TokenLens
from engram_interp.figures.axes import int_axis

__all__ = ["kl_figure", "token_lens_figure", "shared_kl_max", "shared_kl_log", "layer_means", "kl_spans_orders", "token_label", "cka_figure", "gate_figure",
           "gate_selectivity_figure", "retained_figure"]


SPAN = 30.0  # a KL axis turns logarithmic when the layers' values span more than this factor


def kl_spans_orders(rows: Sequence[Sequence[float]], span: float = SPAN) -> bool:
    """Whether the per-layer KL values in ``rows`` (one row per model; the last point, the model's own
    output with KL ~ 0 by construction, left out) span more than ``span`` (largest / smallest positive
    value): then a linear axis flattens every layer but the largest, and the figures use a log scale."""
    vals = [v for row in rows for v in list(row)[:-1] if v is not None and v == v and v > 0]
    return bool(vals) and max(vals) / min(vals) > span


def _log_ticks(lo: float, hi: float) -> list[float]:
    """Decade ticks (1, 10, 100 ... and 0.1, 0.01 ...) covering [lo, hi], lo > 0."""
    import math

    return [10.0 ** e for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)]


def kl_figure(res: LogitLensResult) -> go.Figure:
    """KL(p_final || q_l) per layer of every model on one plot (nats), with standard-error bands; on a
    log axis (decade ticks) when the layers' values span more than ``SPAN`` (:func:`kl_spans_orders`),
    so that a large first layer does not flatten the rest."""
    fig = go.Figure()
    for m in res.models:
        fig.add_trace(go.Scatter(
            x=m.layers, y=m.kl, mode="lines+markers", name=f"{m.name} ({m.n_tokens} tokens)",
            error_y=dict(type="data", array=[1.96 * s for s in m.kl_sem], visible=True),
            hovertemplate="layer %{x}<br>KL %{y:.4f} nats<extra>" + html.escape(m.name) + "</extra>",
        ))
    log = kl_spans_orders([m.kl for m in res.models])
    fig.update_layout(title="LogitLens: KL(p_final || q_layer)" + (" (log axis)" if log else ""),
                      xaxis_title="layer (residual stream entering block; last = final)",
                      yaxis_title="KL (nats" + (", log scale)" if log else ")"), template="plotly_white")
    if log:  # decade ticks only: no cluttered minor labels; the final point (KL ~ 0) sits below the axis
        fig.update_yaxes(type="log", dtick=1, exponentformat="power", showexponent="all")
    fig.update_xaxes(**int_axis(n=max((len(m.layers) for m in res.models), default=0)))  # layer 3, never 2.5
    return fig


def token_label(i: int, token: str) -> str:
    """Axis label of token ``i``: its index and its ``repr`` (spaces and newlines visible, never cut)."""
    return f"{i} {token!r}"


def token_lens_figure(t: TokenLens, zmax: float | None = None, text: str | None = None,
                      log: bool | None = None) -> go.Figure:
    """Layer x position heatmap of per-token KL(p_final || q_layer) in nats; hover lists the lens's
    top tokens and the KL. ``zmax``: the top of the colour scale (pass one value to put several models
    on one scale); ``text``: the probe text, printed under the title; ``log``: a logarithmic colour
    scale (decade ticks labelled in nats, values below zmax / 10^4 shown at the bottom colour), by
    default when the layers' mean KL spans more than ``SPAN`` (pass one value for several models)."""
    import math

    hover = [["<br>".join(f"{html.escape(s)!s}: {p:.3f}" for s, p in t.top_tokens[l][i]) for i in range(len(t.tokens))]
             for l in range(len(t.layers))]
    xs = [token_label(i, tok) for i, tok in enumerate(t.tokens)]
    log = kl_spans_orders([layer_means(t)]) if log is None else log
    top = zmax if zmax is not None else shared_kl_max([t])
    z, bar, zmin = t.kl, dict(title=dict(text="KL (nats)", side="right")), 0.0
    if log and top > 0:
        floor = top * 1e-4
        z = [[None if v is None or v != v else math.log10(max(v, floor)) for v in row] for row in t.kl]
        ticks = [v for v in _log_ticks(floor, top) if floor <= v <= top * 1.0001]
        bar = dict(title=dict(text="KL (nats, log scale)", side="right"), tickvals=[math.log10(v) for v in ticks],
                   ticktext=[f"{v:g}" for v in ticks])
        zmin, top = math.log10(floor), math.log10(top)
    kl_text = [[("-" if v is None or v != v else f"{v:.3f}") for v in row] for row in t.kl]
    fig = go.Figure(go.Heatmap(z=z, x=xs, y=t.layers, customdata=hover, text=kl_text, colorscale="Viridis", zmin=zmin,
                               zmax=top, colorbar=bar,
                               hovertemplate="%{x}<br>layer %{y}<br>KL %{text} nats<br>%{customdata}<extra></extra>"))
    title = f"Per-token LogitLens KL(p_final || q_layer): {html.escape(t.name)}"
    if text:
        short = text if len(text) <= 110 else text[:107] + "..."
        title += f"<br><sup>text: {html.escape(repr(short))}</sup>"
    fig.update_layout(title=title, xaxis_title="token (position and text)", yaxis_title="layer", template="plotly_white",
                      height=420 + 4 * max((len(x) for x in xs), default=0), margin=dict(b=40))
    fig.update_xaxes(tickangle=-60, automargin=True, tickfont=dict(size=10), type="category")
    fig.update_yaxes(**int_axis(n=len(t.layers)))
    return fig


def shared_kl_max(lenses: Sequence[TokenLens]) -> float:
    """One colour-scale top (nats) for several per-token lens heatmaps shown side by side."""
    return max((v for t in lenses for row in t.kl for v in row if v is not None and v == v), default=1.0)


def layer_means(t: TokenLens) -> list[float]:
    """Mean per-token KL of each layer of ``t`` (nats; NaN for a layer without a finite value)."""
    rows = [[v for v in row if v is not None and v == v] for row in t.kl]
    return [sum(r) / len(r) if r else float("nan") for r in rows]


def shared_kl_log(lenses: Sequence[TokenLens]) -> bool:
    """One log-or-linear choice for several per-token heatmaps shown side by side (:func:`kl_spans_orders`)."""
    return kl_spans_orders([layer_means(t) for t in lenses])


def _xerr(values, lo, hi) -> dict:
    return dict(type="data", symmetric=False,
                array=[None if h is None or a is None else h - a for h, a in zip(hi, values)],
                arrayminus=[None if l is None or a is None else a - l for l, a in zip(lo, values)])


def cka_figure(res: CKAResult) -> go.Figure:
    """CKA heatmap (rows: A's layers, columns: B's), with the diagonal, the soft-alignment curve
    (and its CI), the references' curves (Engram-null control, second baseline seed) when present,
    the attainable range of the index for this k (dotted) and the per-row argmax overlaid. A model
    against itself (``name_a == name_b``) is the heatmap alone: its diagonal is 1 and its alignment
    index trivial by construction, so nothing is overlaid."""
    fig = go.Figure(go.Heatmap(z=res.cka, x=res.layers_b, y=res.layers_a, colorscale="Viridis", zmin=0, zmax=1,
                               colorbar=dict(title=dict(text="CKA", side="right"), len=0.9),
                               hovertemplate=f"{html.escape(res.name_a)} layer %{{y}}<br>{html.escape(res.name_b)} layer %{{x}}<br>CKA %{{z:.3f}}<extra></extra>"))
    if res.name_a == res.name_b:
        fig.update_layout(title=f"CKA of {html.escape(res.name_a)}'s layers with each other ({res.tokens} tokens, "
                                f"n={res.n_examples}; a description of one model, the diagonal is 1 by construction)",
                          xaxis_title="layer", yaxis_title="layer", template="plotly_white")
        return fig
    n = min(len(res.layers_a), len(res.layers_b))
    fig.add_trace(go.Scatter(x=list(range(n)), y=list(range(n)), mode="lines", name="diagonal (a_j = j)",
                             line=dict(color="#9e9e9e", dash="dash", width=2)))
    lo, hi = res.soft_alignment_ci
    fig.add_trace(go.Scatter(x=res.soft_alignment, y=res.layers_a, mode="lines+markers", name=f"soft alignment (k={res.k})",
                             line=dict(color="red"), error_x=_xerr(res.soft_alignment, lo, hi)))
    styles = {"control": ("#1f77b4", "Engram-null control"), "noise": ("#8c564b", "second baseline seed")}
    for kind, ref in sorted((res.references or {}).items()):
        colour, label = styles.get(kind, ("#7f7f7f", kind))
        rlo, rhi = ref["soft_alignment_ci"]
        fig.add_trace(go.Scatter(x=ref["soft_alignment"], y=list(range(len(ref["soft_alignment"]))), mode="lines+markers",
                                 name=f"{label}: {html.escape(ref['name'])}", line=dict(color=colour, dash="dot"),
                                 error_x=_xerr(ref["soft_alignment"], rlo, rhi)))
    fig.add_trace(go.Scatter(x=res.argmax, y=res.layers_a, mode="markers", name="argmax", marker=dict(symbol="x", color="orange", size=9)))
    if res.soft_alignment_range:
        for x in res.soft_alignment_range:
            fig.add_vline(x=x, line=dict(color="#e0e0e0", dash="dot", width=1))
    fig.update_layout(title=f"CKA ({res.tokens} tokens, n={res.n_examples}): {html.escape(res.name_a)} vs {html.escape(res.name_b)}",
                      xaxis_title=f"{html.escape(res.name_b)} layer", yaxis_title=f"{html.escape(res.name_a)} layer",
                      template="plotly_white", legend=dict(orientation="h", yanchor="top", y=-0.24, xanchor="left", x=0),
                      margin=dict(b=140))
    fig.update_xaxes(**int_axis(n=len(res.layers_b)))
    fig.update_yaxes(**int_axis(n=len(res.layers_a)))
    return fig


def gate_figure(g: GateMap) -> go.Figure:
    """Gate heatmap over tokens: one row per (Engram layer, branch); hover shows the token, its
    suffix 2-/3-grams and the gate value."""
    rows, labels = [], []
    for l in g.layers:
        for b in range(g.n_branches):
            rows.append([v[b] for v in g.gates[l]])
            labels.append(f"L{l}" + (f" b{b}" if g.n_branches > 1 else ""))
    xs = [token_label(i, t) for i, t in enumerate(g.tokens)]
    custom = [[f"2-gram: {html.escape(n2)!s}<br>3-gram: {html.escape(n3)!s}" for n2, n3 in g.ngrams] for _ in rows]
    fig = go.Figure(go.Heatmap(z=rows, x=xs, y=labels, customdata=custom, zmin=0, zmax=1, colorscale="Magma",
                               colorbar=dict(title="gate"),
                               hovertemplate="%{x}<br>%{y}<br>gate %{z:.3f}<br>%{customdata}<extra></extra>"))
    fig.update_layout(title=f"Engram gates: {html.escape(g.name)}", xaxis_title="token", yaxis_title="layer / branch",
                      template="plotly_white")
    fig.update_xaxes(tickangle=-60, automargin=True, tickfont=dict(size=10), type="category")
    return fig


def gate_selectivity_figure(r: GateCorpusResult) -> go.Figure:
    """Per (layer, branch): eta^2 of the gate explained by 3-gram identity (bars), the same statistic
    with shuffled n-gram labels (grey bar: mean, whisker: maximum over the shuffles) and omega^2 (bias-adjusted)."""
    labels = [f"L{l} b{b}" for l, b in r.channels]
    z = lambda xs: [None if v is None else v for v in xs] if xs else [None] * len(labels)  # noqa: E731
    fig = go.Figure(go.Bar(x=labels, y=z(r.selectivity), name="eta^2 (3-gram identity)", marker_color="#1f77b4"))
    if r.selectivity_perm_mean:
        mean, top = z(r.selectivity_perm_mean), z(r.selectivity_perm_max)
        fig.add_trace(go.Bar(x=labels, y=mean, name=f"eta^2 with labels shuffled (mean; whisker: max of {r.n_perm})",
                             marker_color="#9e9e9e",
                             error_y=dict(type="data", symmetric=False, arrayminus=[0] * len(labels),
                                          array=[None if m is None or t is None else t - m for m, t in zip(mean, top)])))
    if r.selectivity_omega2:
        fig.add_trace(go.Bar(x=labels, y=z(r.selectivity_omega2), name="omega^2 (adjusted)", marker_color="#ff7f0e"))
    fig.update_layout(title=f"Gate selectivity by branch: {html.escape(r.name)} ({r.n_tokens} tokens, "
                            f"{r.selectivity_groups} 3-grams)", yaxis_title="share of gate variance",
                      barmode="group", template="plotly_white", legend=dict(orientation="h", y=-0.2))
    return fig


def retained_figure(res: AblationResult) -> go.Figure:
    """Retained % per suite (Engram suppressed / full) with 95% bootstrap CI error bars, one bar
    group per model with Engram; the label inside each bar's foot gives the retained % (clear of the
    error bar and of the 100% line), the hover full and ablated accuracy and n. Models without
    Engram get no bars (they retain 100% by construction: stated once in the title). A suite where
    the full model scores 0 is marked "full = 0" instead of an empty slot."""
    fig = go.Figure()
    without = [m["name"] for m in res.models if not m.get("engram_layers")]
    tops = [100.0]
    for m in res.models:
        if not m.get("engram_layers"):
            continue
        names = list(m["suites"])
        sc = [m["suites"][s] for s in names]
        vals = [s.retained for s in sc]
        tops += [v for s in sc for v in ([s.retained] + list(s.ci or [])) if v is not None]
        fig.add_trace(go.Bar(
            x=names, y=[0 if v is None else v for v in vals], name=m["name"],
            text=["full = 0" if v is None else f"{v:.0f}%" for v in vals],
            textposition=["outside" if v is None else "inside" for v in vals], insidetextanchor="start",
            textangle=0, textfont=dict(size=12), cliponaxis=False,
            customdata=[[s.full, s.ablated, s.n] for s in sc],
            error_y=dict(type="data", symmetric=False,
                         array=[None if s.ci is None or s.retained is None else s.ci[1] - s.retained for s in sc],
                         arrayminus=[None if s.ci is None or s.retained is None else s.retained - s.ci[0] for s in sc]),
            hovertemplate="%{x}<br>retained %{y:.1f}%<br>full acc %{customdata[0]:.3f}, ablated %{customdata[1]:.3f}"
                          "<br>n = %{customdata[2]}<extra>" + html.escape(m["name"]) + "</extra>"))
    fig.add_hline(y=100, line_dash="dot", line_color="gray", annotation_text="100% = full model",
                  annotation_position="top left")
    title = f"Engram ablation ({res.mode}): accuracy retained with Engram suppressed"
    if without:
        title += f"<br><sup>{html.escape(', '.join(without))}: no Engram layers, retains 100% by construction</sup>"
    fig.update_layout(title=title, yaxis=dict(title="retained (% of full accuracy)", range=[0, 1.1 * max(tops)]),
                      barmode="group", template="plotly_white", uniformtext=dict(minsize=10, mode="hide"),
                      legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="right", x=1))
    return fig
