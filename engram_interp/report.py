"""Figures (plotly) for the four analyses and their exports (JSON, CSV, one self-contained HTML).

Every ``*_figure`` takes a result dataclass from ``engram_interp.analysis`` and returns a
``plotly.graph_objects.Figure``; the CLI, the report and the Streamlit app render the same figures.
The HTML report inlines plotly.js (no CDN): it opens offline.
"""

from __future__ import annotations

import csv
import html
import io as _stdio
from pathlib import Path
from typing import Sequence

import plotly.graph_objects as go

from engram_interp.analysis.ablation import AblationResult
from engram_interp.analysis.cka import CKAResult
from engram_interp.analysis.gates import GateCorpusResult, GateMap
from engram_interp.analysis.logit_lens import LogitLensResult, TokenLens
from engram_interp.io import atomic_write_text, check_output_dir, dumps_strict, replace_set

# every file a report may write: an earlier report's files are replaced as one set (no stale CSVs)
REPORT_FILES = {"report.html", "results.json", "logit_lens.csv", "cka.csv", "cka_alignment.csv", "gate_ngrams.csv",
                "gate_selectivity.csv", "ablation.csv"}

__all__ = ["kl_figure", "token_lens_figure", "shared_kl_max", "token_label", "cka_figure", "gate_figure",
           "gate_selectivity_figure", "retained_figure", "write_report", "write_csvs", "memory_usage_figure",
           "memory_norm_figure", "memory_pca_figure", "memory_section", "attribution_section"]


def kl_figure(res: LogitLensResult) -> go.Figure:
    """KL(p_final || q_l) per layer of every model on one plot (nats), with standard-error bands."""
    fig = go.Figure()
    for m in res.models:
        fig.add_trace(go.Scatter(
            x=m.layers, y=m.kl, mode="lines+markers", name=f"{m.name} ({m.n_tokens} tokens)",
            error_y=dict(type="data", array=[1.96 * s for s in m.kl_sem], visible=True),
            hovertemplate="layer %{x}<br>KL %{y:.4f} nats<extra>" + html.escape(m.name) + "</extra>",
        ))
    fig.update_layout(title="LogitLens: KL(p_final || q_layer)", xaxis_title="layer (residual stream entering block; last = final)",
                      yaxis_title="KL (nats)", template="plotly_white")
    return fig


def token_label(i: int, token: str) -> str:
    """Axis label of token ``i``: its index and its ``repr`` (spaces and newlines visible, never cut)."""
    return f"{i} {token!r}"


def token_lens_figure(t: TokenLens, zmax: float | None = None, text: str | None = None) -> go.Figure:
    """Layer x position heatmap of per-token KL(p_final || q_layer) in nats; hover lists the lens's
    top tokens. ``zmax``: the top of the colour scale (pass one value to put several models on one
    scale); ``text``: the probe text, printed under the title."""
    hover = [["<br>".join(f"{html.escape(s)!s}: {p:.3f}" for s, p in t.top_tokens[l][i]) for i in range(len(t.tokens))]
             for l in range(len(t.layers))]
    xs = [token_label(i, tok) for i, tok in enumerate(t.tokens)]
    fig = go.Figure(go.Heatmap(z=t.kl, x=xs, y=t.layers, customdata=hover, colorscale="Viridis", zmin=0,
                               zmax=zmax, colorbar=dict(title=dict(text="KL (nats)", side="right")),
                               hovertemplate="%{x}<br>layer %{y}<br>KL %{z:.3f} nats<br>%{customdata}<extra></extra>"))
    title = f"Per-token LogitLens KL(p_final || q_layer): {html.escape(t.name)}"
    if text:
        short = text if len(text) <= 110 else text[:107] + "..."
        title += f"<br><sup>text: {html.escape(repr(short))}</sup>"
    fig.update_layout(title=title, xaxis_title="token (position and text)", yaxis_title="layer", template="plotly_white",
                      height=420 + 4 * max((len(x) for x in xs), default=0), margin=dict(b=40))
    fig.update_xaxes(tickangle=-60, automargin=True, tickfont=dict(size=10), type="category")
    return fig


def shared_kl_max(lenses: Sequence[TokenLens]) -> float:
    """One colour-scale top (nats) for several per-token lens heatmaps shown side by side."""
    return max((v for t in lenses for row in t.kl for v in row if v == v), default=1.0)


def _xerr(values, lo, hi) -> dict:
    return dict(type="data", symmetric=False,
                array=[None if h is None or a is None else h - a for h, a in zip(hi, values)],
                arrayminus=[None if l is None or a is None else a - l for l, a in zip(lo, values)])


def cka_figure(res: CKAResult) -> go.Figure:
    """CKA heatmap (rows: A's layers, columns: B's), with the diagonal, the soft-alignment curve
    (and its CI), the references' curves (Engram-null control, second baseline seed) when present,
    the attainable range of the index for this k (dotted) and the per-row argmax overlaid."""
    fig = go.Figure(go.Heatmap(z=res.cka, x=res.layers_b, y=res.layers_a, colorscale="Viridis", zmin=0, zmax=1,
                               colorbar=dict(title=dict(text="CKA", side="right"), len=0.9),
                               hovertemplate=f"{html.escape(res.name_a)} layer %{{y}}<br>{html.escape(res.name_b)} layer %{{x}}<br>CKA %{{z:.3f}}<extra></extra>"))
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
    group per model with Engram; hover and text give full and ablated accuracy and n. Models without
    Engram get no bars (they retain 100% by construction: stated once in the title). A suite where
    the full model scores 0 is marked "full = 0" instead of an empty slot."""
    fig = go.Figure()
    without = [m["name"] for m in res.models if not m.get("engram_layers")]
    for m in res.models:
        if not m.get("engram_layers"):
            continue
        names = list(m["suites"])
        sc = [m["suites"][s] for s in names]
        vals = [s.retained for s in sc]
        text = [f"full = 0 (n={s.n})" if s.retained is None else f"{s.retained:.0f}%<br>{s.full:.2f} -> {s.ablated:.2f}, n={s.n}"
                for s in sc]
        fig.add_trace(go.Bar(
            x=names, y=[0 if v is None else v for v in vals], name=m["name"], text=text, textposition="outside",
            customdata=[[s.full, s.ablated, s.n] for s in sc],
            error_y=dict(type="data", symmetric=False,
                         array=[None if s.ci is None or s.retained is None else s.ci[1] - s.retained for s in sc],
                         arrayminus=[None if s.ci is None or s.retained is None else s.retained - s.ci[0] for s in sc]),
            hovertemplate="%{x}<br>retained %{y:.1f}%<br>full acc %{customdata[0]:.3f}, ablated %{customdata[1]:.3f}"
                          "<br>n = %{customdata[2]}<extra>" + html.escape(m["name"]) + "</extra>"))
    fig.add_hline(y=100, line_dash="dot", line_color="gray")
    title = f"Engram ablation ({res.mode}): accuracy retained with Engram suppressed"
    if without:
        title += f"<br><sup>{html.escape(', '.join(without))}: no Engram layers, retains 100% by construction</sup>"
    fig.update_layout(title=title, yaxis_title="retained (% of full accuracy)", barmode="group", template="plotly_white")
    return fig


# --------------------------------------------------------------------------------------- exports
def write_csvs(out: Path, lens: LogitLensResult | None = None, cka: CKAResult | None = None,
               gates: GateCorpusResult | None = None, ablation: AblationResult | None = None) -> list[Path]:
    """One CSV per analysis in ``out``; returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []

    def w(name, header, rows):
        buf = _stdio.StringIO(newline="")
        cw = csv.writer(buf)
        cw.writerow(header)
        cw.writerows(rows)
        written.append(atomic_write_text(out / name, buf.getvalue(), force=True))

    if lens:
        w("logit_lens.csv", ["model", "layer", "kl_nats", "kl_sem", "entropy_nats", "n_tokens"],
          [[m.name, l, k, s, e, m.n_tokens] for m in lens.models for l, k, s, e in zip(m.layers, m.kl, m.kl_sem, m.entropy)])
    if cka:
        w("cka.csv", ["layer_a", "layer_b", "cka", "ci_low", "ci_high"],
          [[la, lb, cka.cka[i][j], cka.ci_low[i][j], cka.ci_high[i][j]]
           for i, la in enumerate(cka.layers_a) for j, lb in enumerate(cka.layers_b)])
        w("cka_alignment.csv", ["layer_a", "soft_alignment", "ci_low", "ci_high", "argmax"],
          [[la, cka.soft_alignment[i], cka.soft_alignment_ci[0][i], cka.soft_alignment_ci[1][i], cka.argmax[i]]
           for i, la in enumerate(cka.layers_a)])
    if gates:
        w("gate_ngrams.csv", ["channel", "list", "rank", "ngram", "order", "count", "mean", "max"],
          [[ch, which, i, s.text, s.order, s.count, s.mean, s.max]
           for which, table in (("top", gates.top), ("bottom", gates.bottom))
           for ch, stats in table.items() for i, s in enumerate(stats)])
        n = len(gates.channels)
        cols = [gates.selectivity_perm_mean or [None] * n, gates.selectivity_perm_max or [None] * n,
                gates.selectivity_p or [None] * n, gates.selectivity_omega2 or [None] * n]
        w("gate_selectivity.csv", ["layer", "branch", "selectivity_eta2", "eta2_shuffled_mean", "eta2_shuffled_max",
                                   "p_permutation", "omega2", "mean_gate"],
          [[l, b, s, *(c[i] for c in cols), m] for i, ((l, b), s, m) in enumerate(zip(gates.channels, gates.selectivity, gates.mean_gate))])
    if ablation:
        rows = []
        for m in ablation.models:
            for suite, sc in m["suites"].items():
                rows.append([m["name"], suite, "all", sc.n, sc.full, sc.ablated, sc.retained,
                             *(sc.ci or [None, None])])
                for layer, r in sc.per_layer.items():
                    rows.append([m["name"], suite, layer, r["n"], r["full"], r["ablated"], r["retained"], *(r["ci"] or [None, None])])
        w("ablation.csv", ["model", "suite", "layers", "n", "full", "ablated", "retained_pct", "ci_low", "ci_high"], rows)
    return written


def attribution_section(summaries: Sequence, include_plotlyjs: bool = False) -> str:
    """HTML of the probe-prompt attribution section: the per-kind figure (``ItemAttribution`` of each
    model, from ``analysis.attribution_items``) and a table of means with 95 % intervals, each marked
    "not established" when its interval covers 0. Empty string when there is nothing to show."""
    from engram_interp.attribution_figures import items_figure

    summaries = [s for s in summaries if s is not None]
    if not summaries:
        return ""
    rows = "".join(
        f"<tr><td>{html.escape(s.model)}</td><td>{html.escape(k.name)}</td><td>{k.mean:+.3f}</td>"
        f"<td>[{k.ci_low:+.3f}, {k.ci_high:+.3f}]</td><td>{'yes' if k.established else 'not established'}</td></tr>"
        for s in summaries for k in [s.metric, *s.kinds])
    head = (f"<h2>Direct logit attribution on {html.escape(summaries[0].suite)} prompts</h2><p>Metric: logit of "
            "the answer's first token minus that of the first distractor, at the end of the prompt; final norm "
            "frozen; items (largest |remainder|): " + ", ".join(
                f"{html.escape(s.model)} {s.n_items} ({s.remainder_max:.1e})" for s in summaries) + ".</p>")
    fig = items_figure(summaries).to_html(full_html=False, include_plotlyjs=include_plotlyjs, div_id="fig-attribution")
    table = ("<table><tr><th>model</th><th>component</th><th>mean (logits)</th><th>95 % CI</th><th>CI excludes 0</th>"
             f"</tr>{rows}</table>")
    return head + fig + table


def write_report(out: str | Path, *, title: str = "engram-interp report", lens: LogitLensResult | None = None,
                 token_lens: Sequence[TokenLens] = (), cka: CKAResult | None = None,
                 gate_maps: Sequence[GateMap] = (), gates: GateCorpusResult | None = None,
                 ablation: AblationResult | None = None, notes: Sequence[str] = (), findings: Sequence[str] = (),
                 probe_text: str | None = None, source: dict | None = None,
                 extra_gates: Sequence[GateCorpusResult] = (), force: bool = False, memory=None,
                 attribution: Sequence = (), seed_bands: dict | None = None,
                 seed_findings: Sequence = ()) -> dict[str, Path]:
    """Write ``report.html`` (self-contained, plotly.js inlined once), ``results.json`` (strict JSON)
    and CSVs into ``out``, each file atomically (temporary file + rename). A folder holding an earlier
    report needs ``force``; then the whole earlier set is replaced (its files this report does not
    write are removed). ``findings``: measured sentences shown first; ``probe_text``: printed with the
    per-token figures; ``source``: stored as ``results.json["source"]``; ``extra_gates``: the
    control's gate statistics (figures and ``results.json["gates_control"]``); ``seed_bands`` /
    ``seed_findings`` (``engram_interp.findings.Finding``): the across-seed section.
    Returns ``{"html": path, "json": path, "csv": [paths]}``."""
    out = check_output_dir(out, REPORT_FILES, force)
    out.mkdir(parents=True, exist_ok=True)
    figs: list[tuple[str, go.Figure]] = []
    if lens:
        figs.append(("LogitLens", kl_figure(lens)))
    zmax = shared_kl_max(token_lens) if token_lens else None
    for t in token_lens:
        figs.append((f"Per-token LogitLens: {t.name}", token_lens_figure(t, zmax=zmax, text=probe_text)))
    if cka:
        figs.append(("CKA", cka_figure(cka)))
    for g in gate_maps:
        figs.append((f"Gates: {g.name}", gate_figure(g)))
    if gates:
        figs.append(("Gate selectivity", gate_selectivity_figure(gates)))
    for g in extra_gates:
        figs.append((f"Gate selectivity (control): {g.name}", gate_selectivity_figure(g)))
    if ablation:
        figs.append(("Ablation", retained_figure(ablation)))
    parts = []
    for i, (name, fig) in enumerate(figs):
        parts.append(f"<h2>{html.escape(name)}</h2>")
        parts.append(fig.to_html(full_html=False, include_plotlyjs=(i == 0), div_id=f"fig{i}"))
    if gates:
        for ch in [f"{l}.{b}" for l, b in gates.branch_ranking[:2]]:
            top = "".join(f"<tr><td>{html.escape(s.text)}</td><td>{s.count}</td><td>{s.mean:.3f}</td></tr>" for s in gates.top.get(ch, [])[:15])
            parts.append(f"<h3>Top n-grams, layer.branch {ch}</h3><table><tr><th>n-gram</th><th>count</th><th>mean gate</th></tr>{top}</table>")
    if memory is not None:  # a MemoryResult (engram_interp.analysis.memory)
        parts.append(memory_section(memory, include_plotlyjs=not figs))
    parts.append(attribution_section(attribution, include_plotlyjs=not figs and memory is None))
    if seed_findings:
        parts.insert(0, seed_section(seed_findings))
    note_html = "".join(f"<p>{html.escape(n)}</p>" for n in notes)
    if findings:
        note_html += "<h2>Findings (each against its control)</h2><ul>" + "".join(
            f"<li>{html.escape(f)}</li>" for f in findings) + "</ul>"
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            "<style>body{font-family:sans-serif;max-width:1200px;margin:auto}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:2px 6px}</style></head><body>"
            f"<h1>{html.escape(title)}</h1>{note_html}{''.join(parts)}</body></html>")
    html_path = atomic_write_text(out / "report.html", page, force=True)
    results: dict = {} if source is None else {"source": source}
    if findings:
        results["findings"] = list(findings)
    if seed_bands:
        results["seed_bands"] = seed_bands
    if seed_findings:
        results["seed_findings"] = [f.to_dict() for f in seed_findings]
    if lens:
        results["logit_lens"] = lens.to_dict()
    if token_lens:
        results["token_lens"] = [t.to_dict() for t in token_lens]
    if cka:
        results["cka"] = cka.to_dict()
    if gate_maps:
        results["gate_maps"] = [g.to_dict() for g in gate_maps]
    if gates:
        results["gates"] = gates.to_dict()
    if extra_gates:
        results["gates_control"] = [g.to_dict() for g in extra_gates]
    if ablation:
        results["ablation"] = ablation.to_dict()
    if memory is not None:
        results["memory"] = memory.to_dict()
    if any(a is not None for a in attribution):
        results["attribution"] = [a.to_dict() for a in attribution if a is not None]
    json_path = atomic_write_text(out / "results.json", dumps_strict(results, indent=1), force=True)
    csvs = write_csvs(out, lens, cka, gates, ablation)
    replace_set(out, REPORT_FILES, {p.name for p in [html_path, json_path, *csvs]})
    return {"html": html_path, "json": json_path, "csv": csvs}


def seed_section(findings: Sequence) -> str:
    """HTML of the across-seed findings: the verdict table, then each finding's bands (mean [min, max]
    over seeds, 95% t interval, n seeds) and its reason; the same objects as checkpoints/FINDINGS.md."""
    from engram_interp.findings import MIN_SEEDS, format_band

    rows = "".join(f"<tr><td>{html.escape(f.title)}</td><td><b>{html.escape(f.verdict)}</b></td></tr>" for f in findings)
    out = ["<h2>Across seeds</h2>",
           f"<p>Each number is reduced to one value per seed; a verdict other than 'not established' needs >= {MIN_SEEDS}"
           " seeds per model and bands that do not overlap (rules: checkpoints/FINDINGS.md).</p>",
           f"<table><tr><th>finding</th><th>verdict</th></tr>{rows}</table>"]
    for f in findings:
        digits = 1 if f.key == "ablation" else 3
        bands = "".join(f"<tr><td>{html.escape(arm)}</td><td>{html.escape(format_band(b, 3 if 'full' in arm else digits))}"
                        "</td></tr>" for arm, b in f.bands.items())
        out += [f"<h3>{html.escape(f.title)}</h3><p>Measured: {html.escape(f.metric)}.</p>",
                f"<table><tr><th>model</th><th>mean [min, max], t95 (n seeds)</th></tr>{bands}</table>",
                f"<p><b>{html.escape(f.verdict)}</b>: {html.escape(f.reason)}.</p>"]
    return "".join(out)


# ------------------------------------------------------------------------------- memory inspector
def memory_usage_figure(res) -> go.Figure:
    """Rank-frequency curves of row loads (positions per row, log-log), one line per layer and hash
    head of ``res`` (a ``MemoryResult``); the legend gives the fitted Zipf exponent."""
    fig = go.Figure()
    for L in res.layers:
        for h in L.heads:
            fig.add_trace(go.Scatter(
                x=h.rank_curve["rank"], y=h.rank_curve["load"], mode="lines",
                name=f"L{L.layer} n={h.order} h{h.head} (s={'-' if h.zipf_exponent is None else f'{h.zipf_exponent:.2f}'})",
                hovertemplate="rank %{x}<br>load %{y} positions<extra></extra>"))
    fig.update_layout(title=f"Row usage: {html.escape(res.name)} ({res.n_positions} positions)", xaxis_type="log",
                      yaxis_type="log", xaxis_title="row rank (by load)", yaxis_title="positions served", template="plotly_white")
    return fig


def memory_norm_figure(res) -> go.Figure:
    """Mean L2 norm of touched rows by load bin (powers of 2) per layer, with the mean norm of the
    sampled untouched rows as the dotted control line."""
    fig = go.Figure()
    for L in res.layers:
        bins = L.norm_by_load
        fig.add_trace(go.Scatter(x=[b["load_min"] for b in bins], y=[b["mean_norm"] for b in bins], mode="lines+markers",
                                 name=f"layer {L.layer}", customdata=[[b["load_max"], b["n_rows"]] for b in bins],
                                 hovertemplate="load %{x}-%{customdata[0]}<br>mean norm %{y:.3f}<br>%{customdata[1]} rows<extra></extra>"))
        free = [h.norm_untouched for h in L.heads if h.norm_untouched is not None]
        if free:
            fig.add_hline(y=sum(free) / len(free), line_dash="dot", annotation_text=f"untouched, layer {L.layer}")
    fig.update_layout(title="Row norm against row load", xaxis_type="log", xaxis_title="positions served by the row",
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
