"""Figures (plotly) of the causal and attribution tools: DLA bars, the target through the layers, the
patching grid and bars, and the per-kind attribution over probe items. Each takes a result dataclass
from ``engram_interp.analysis.attribution*`` / ``patching`` and returns a ``go.Figure``; the app page
and the report render the same figures."""

from __future__ import annotations

from typing import Sequence

import plotly.graph_objects as go

from engram_interp.analysis.attribution import Attribution, TargetTrace
from engram_interp.analysis.attribution_items import ItemAttribution
from engram_interp.analysis.patching import PatchBars, PatchGrid
from engram_interp.figures.axes import int_axis, log_axis, shared_range

__all__ = ["dla_figure", "dla_range", "trace_figure", "patch_grid_figure", "patch_bars_figure", "items_figure"]

_COLOURS = {"embed": "#7f7f7f", "engram": "#d62728", "attn": "#1f77b4", "mlp": "#2ca02c", "expert": "#2ca02c",
            "shared": "#98df8a", "remainder": "#bcbd22"}


def dla_range(attributions: Sequence[Attribution]) -> list[float]:
    """One x range (logits) that holds every bar of every attribution: the axis of DLA charts shown side by side."""
    return shared_range(*([c.contribution for c in a.components] + [a.remainder] for a in attributions))


def dla_figure(a: Attribution, x_range: Sequence[float] | None = None) -> go.Figure:
    """Horizontal bars: each component's direct contribution to the logit (difference), in logits,
    with the remainder, in forward order (top = embedding). ``x_range``: the x axis (logits; default
    :func:`dla_range` of this one), so that charts compared side by side share one."""
    names = [c.name for c in a.components] + ["remainder"]
    values = [c.contribution for c in a.components] + [a.remainder]
    colours = [_COLOURS.get(c.kind, "#444") for c in a.components] + [_COLOURS["remainder"]]
    what = f"logit({a.target!r})" + (f" - logit({a.contrast!r})" if a.contrast is not None else "")
    fig = go.Figure(go.Bar(x=values, y=names, orientation="h", marker_color=colours,
                           hovertemplate="%{y}: %{x:+.4f} logits<extra></extra>"))
    fig.update_layout(title=f"{a.model}: {what}<br>= {a.logit:+.3f} (sum of the bars)",
                      xaxis=dict(title="contribution (logits)", range=list(x_range or dla_range([a])), zeroline=True),
                      yaxis=dict(autorange="reversed"), height=max(300, 22 * len(names) + 140),
                      margin=dict(l=10, r=10, t=80, b=40))
    return fig


def trace_figure(traces: Sequence[TargetTrace]) -> go.Figure:
    """Probability of the target at every layer point (log scale), one line per model; hover shows the rank."""
    fig = go.Figure()
    probs = [p for t in traces for p in t.probability]
    for t in traces:
        fig.add_trace(go.Scatter(x=t.layers, y=t.probability, mode="lines+markers", name=t.model,
                                 customdata=t.rank, hovertemplate="layer %{x}: p=%{y:.4f}, rank %{customdata}<extra>"
                                 + t.model + "</extra>"))
    target = traces[0].target if traces else ""
    n = max((len(t.layers) for t in traces), default=0)
    fig.update_layout(title=f"p({target!r}) through the layers (LogitLens, last position)",
                      xaxis=int_axis("layer point", n), yaxis=log_axis(probs, "probability"), height=380,
                      margin=dict(l=10, r=10, t=50, b=40))
    return fig


def patch_grid_figure(g: PatchGrid) -> go.Figure:
    """Layer point x position heatmap of the restored fraction (1 = clean answer back, 0 = none)."""
    labels = [f"{i}: {c!r}" if c == x else f"{i}: {c!r} / {x!r}" for i, (c, x) in enumerate(zip(g.tokens, g.corrupt_tokens))]
    fig = go.Figure(go.Heatmap(z=g.restored, x=labels, y=[f"L{l}" for l in g.layers], colorscale="RdBu", zmid=0,
                               colorbar=dict(title="restored"),
                               hovertemplate="%{y} at %{x}: %{z:.3f}<extra></extra>"))
    fig.update_layout(title="residual stream patched from the clean run (clean / corrupted token)",
                      yaxis=dict(autorange="reversed"), height=120 + 28 * len(g.layers),
                      margin=dict(l=10, r=10, t=50, b=40))
    return fig


def patch_bars_figure(bars: Sequence[PatchBars]) -> go.Figure:
    """Per-layer restored fraction of patching each component's output at all positions."""
    fig = go.Figure()
    for b in bars:
        if b.layers:
            fig.add_trace(go.Bar(x=[f"L{l}" for l in b.layers], y=b.restored, name=b.kind,
                                 marker_color=_COLOURS.get(b.kind, "#9467bd"),
                                 hovertemplate="%{x}: %{y:.3f}<extra>" + b.kind + "</extra>"))
    fig.update_layout(barmode="group", title="component outputs patched at every position", yaxis_title="restored fraction",
                      height=360, margin=dict(l=10, r=10, t=50, b=40))
    return fig


def items_figure(summaries: Sequence[ItemAttribution]) -> go.Figure:
    """Mean contribution per component kind over probe items, one bar group per model, 95 % intervals."""
    fig = go.Figure()
    for s in summaries:
        fig.add_trace(go.Bar(
            x=[k.name for k in s.kinds], y=[k.mean for k in s.kinds], name=f"{s.model} (n={s.n_items})",
            error_y=dict(type="data", symmetric=False, array=[k.ci_high - k.mean for k in s.kinds],
                         arrayminus=[k.mean - k.ci_low for k in s.kinds]),
        ))
    suite = summaries[0].suite if summaries else ""
    fig.update_layout(barmode="group", title=f"{suite}: logit(answer) - logit(distractor), mean contribution per kind",
                      yaxis_title="logits (95 % bootstrap interval over items)", height=380,
                      margin=dict(l=10, r=10, t=50, b=40))
    return fig
