"""The report: exports of the analyses' results (JSON, CSV, one self-contained HTML file).

The HTML report inlines plotly.js (no CDN): it opens offline. Its figures come from
``engram_interp.figures.analyses``, ``.memory`` and ``.attribution``.
"""

from __future__ import annotations

import csv
import html
import io as _stdio
from pathlib import Path
from typing import Sequence

import plotly.graph_objects as go

from engram_interp.analysis.ablation import AblationResult
from engram_interp.analysis.cka_models import CKAResult
from engram_interp.analysis.gates import GateCorpusResult, GateMap
from engram_interp.analysis.logit_lens import LogitLensResult, TokenLens
from engram_interp.figures.analyses import (cka_figure, gate_figure, gate_selectivity_figure, kl_figure, retained_figure,
                                            shared_kl_log, shared_kl_max, token_lens_figure)
from engram_interp.figures.memory import memory_section
from engram_interp.io import atomic_write_text, check_output_dir, dumps_strict, replace_set

# every file a report may write: an earlier report's files are replaced as one set (no stale CSVs)
REPORT_FILES = {"report.html", "results.json", "logit_lens.csv", "cka.csv", "cka_alignment.csv", "gate_ngrams.csv",
                "gate_selectivity.csv", "ablation.csv"}

__all__ = ["REPORT_FILES", "write_report", "write_csvs", "attribution_section", "seed_section"]


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
    from engram_interp.figures.attribution import items_figure

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
                 ablation: AblationResult | None = None, notes: Sequence[str] = (), findings: Sequence[dict] = (),
                 probe_text: str | None = None, source: dict | None = None,
                 extra_gates: Sequence[GateCorpusResult] = (), force: bool = False, memory=None,
                 attribution: Sequence = (), seed_bands: dict | None = None,
                 seed_findings: Sequence = (), locate: Sequence = (), memory_help: dict | None = None) -> dict[str, Path]:
    """Write ``report.html`` (self-contained, plotly.js inlined once), ``results.json`` (strict JSON)
    and CSVs into ``out``, each file atomically (temporary file + rename). A folder holding an earlier
    report needs ``force``; then the whole earlier set is replaced (its files this report does not
    write are removed). ``findings``: FindingRecord dicts (verdict table and sentences) shown first; ``probe_text``: printed with the
    per-token figures; ``source``: stored as ``results.json["source"]``; ``extra_gates``: the
    control's gate statistics (figures and ``results.json["gates_control"]``); ``seed_bands`` /
    ``seed_findings`` (``engram_interp.claims.findings.Finding``): the across-seed section; ``locate``:
    ``analysis.locate.LocateResult`` objects (section and ``results.json["locate"]``); ``memory_help``: the
    ``memory-help --json`` object (section and ``results.json["memory_help"]``).
    Returns ``{"html": path, "json": path, "csv": [paths]}``."""
    out = check_output_dir(out, REPORT_FILES, force)
    out.mkdir(parents=True, exist_ok=True)
    figs: list[tuple[str, go.Figure]] = []
    if lens:
        figs.append(("LogitLens", kl_figure(lens)))
    zmax = shared_kl_max(token_lens) if token_lens else None
    log = shared_kl_log(token_lens) if token_lens else None
    for t in token_lens:
        figs.append((f"Per-token LogitLens: {t.name}", token_lens_figure(t, zmax=zmax, text=probe_text, log=log)))
    if cka:
        own = cka.name_a == cka.name_b  # one model's layers against each other: a description, not a comparison
        figs.append((f"CKA of {cka.name_a}'s layers with each other" if own else "CKA", cka_figure(cka)))
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
    if locate:
        from engram_interp.figures.locate import locate_section

        parts.append(locate_section(locate, include_plotlyjs=not figs and memory is None and not attribution))
    if memory_help:
        from engram_interp.figures.memory_help import memory_help_section

        parts.append(memory_help_section(memory_help, include_plotlyjs=not figs and memory is None and not attribution
                                         and not locate))
    if seed_findings:
        parts.insert(0, seed_section(seed_findings))
    note_html = "".join(f"<p>{html.escape(n)}</p>" for n in notes)
    if findings:  # FindingRecord dicts (engram_interp.claims.verdict): the verdict table, then each sentence
        note_html += ("<h2>Findings (each against its controls)</h2><table><tr><th>finding</th><th>verdict</th></tr>"
                      + "".join(f"<tr><td>{html.escape(f['finding'])}</td><td><b>{html.escape(f['verdict'])}</b></td></tr>"
                                for f in findings) + "</table><ul>"
                      + "".join(f"<li>{html.escape(f['sentence'])}</li>" for f in findings) + "</ul>")
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
    if locate:
        results["locate"] = [r.to_dict() for r in locate]
    if memory_help:
        results["memory_help"] = memory_help
    json_path = atomic_write_text(out / "results.json", dumps_strict(results, indent=1), force=True)
    csvs = write_csvs(out, lens, cka, gates, ablation)
    replace_set(out, REPORT_FILES, {p.name for p in [html_path, json_path, *csvs]})
    return {"html": html_path, "json": json_path, "csv": csvs}


def seed_section(findings: Sequence) -> str:
    """HTML of the across-seed findings: the verdict table, then each finding's bands (mean [min, max]
    over seeds, 95% t interval, n seeds) and its reason; the same objects as checkpoints/FINDINGS.md."""
    from engram_interp.claims.findings import MIN_SEEDS, format_band

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
