"""Figure of ``locate`` (``engram_interp.analysis.locate``): per Engram row at the last position, its
direct contribution to the logit (difference) next to the change of log p(target) when its head's
rows are zeroed."""

from __future__ import annotations

import html
from collections.abc import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from engram_interp.analysis.locate import LocateResult

__all__ = ["locate_figure", "locate_section"]


def locate_figure(res: LocateResult) -> go.Figure:
    """Two panels of horizontal bars, one bar per (layer, order, head) row read at the last position
    plus each layer's value-bias and short-conv terms: left, the direct contribution (logits; the bars
    of a layer sum to its Engram term of ``attribute``); right, log p(target) with that head's group
    zeroed minus the clean log p (nats; empty for the non-row terms)."""
    labels, contrib, delta, colours = [], [], [], []
    for lay in res.layers:
        effect = {(g.order, g.head): g.logprob_zeroed - res.logprob for g in lay.groups if g.head is not None}
        for r in lay.rows:
            if r.contribution is None:
                continue
            labels.append(f"L{lay.layer} n{r.order}.h{r.head} {r.ngram!r} #{r.row}")
            contrib.append(r.contribution)
            delta.append(effect.get((r.order, r.head)))
            colours.append("#d62728")
        for name, value in (("value bias", lay.value_bias), ("short conv", lay.conv)):
            labels.append(f"L{lay.layer} {name}")
            contrib.append(value)
            delta.append(None)
            colours.append("#7f7f7f")
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.02,
                        subplot_titles=("direct contribution (logits)", "log p change, head's rows zeroed (nats)"))
    fig.add_trace(go.Bar(x=contrib, y=labels, orientation="h", marker_color=colours, showlegend=False,
                         hovertemplate="%{y}: %{x:+.4f} logits<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Bar(x=delta, y=labels, orientation="h", marker_color="#1f77b4", showlegend=False,
                         hovertemplate="%{y}: %{x:+.4f} nats<extra></extra>"), row=1, col=2)
    what = f"logit({res.target!r})" + (f" - logit({res.contrast!r})" if res.contrast is not None else "")
    fig.update_layout(title=f"{res.model}: Engram rows behind {what} after {res.prompt!r}", height=max(320, 20 * len(labels) + 140),
                      yaxis=dict(autorange="reversed"), margin=dict(l=10, r=10, t=80, b=40))
    return fig


def locate_section(results: Sequence[LocateResult], include_plotlyjs: bool = False) -> str:
    """HTML of the report's Locate section: per located prompt, the metric with and without every row
    the prompt reads, the figure, and per Engram layer its term split into rows, value bias and short
    conv (logits). Empty string when nothing was located."""
    out = []
    for i, res in enumerate(results):
        what = f"{res.target!r}" + (f" minus {res.contrast!r}" if res.contrast else "")
        out.append(f"<h2>Locate: {html.escape(res.model)}, {html.escape(res.prompt)!s} &rarr; {html.escape(what)}</h2>"
                   f"<p>Metric (logit of {html.escape(what)}): {res.metric:+.3f}; log p(target) {res.logprob:.3f}; with "
                   f"every row the prompt reads zeroed {res.metric_all_zeroed:+.3f} / {res.logprob_all_zeroed:.3f}. One "
                   "prompt: no interval.</p>")
        out.append(locate_figure(res).to_html(full_html=False, include_plotlyjs=include_plotlyjs and i == 0,
                                              div_id=f"fig-locate-{i}"))
        rows = "".join(f"<tr><td>{l.layer}</td><td>{l.engram_term:+.4f}</td><td>{l.rows_sum:+.4f}</td>"
                       f"<td>{l.value_bias:+.4f}</td><td>{l.conv:+.4f}</td></tr>" for l in res.layers)
        out.append("<table><tr><th>layer</th><th>Engram term</th><th>rows</th><th>value bias</th><th>short conv</th>"
                   f"</tr>{rows}</table>")
    return "".join(out)
