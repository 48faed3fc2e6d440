"""Overview tables: what each checkpoint is, and the cached headline numbers of the four analyses."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import streamlit as st

from app.state import Entry, md


def validation_loss(provenance: dict[str, Any]) -> float | None:
    """The validation loss recorded in a checkpoint's provenance (first key that names one), in nats."""
    preferred = ("val_loss", "validation_loss", "eval_loss", "valid_loss", "heldout_loss")
    stack = [provenance or {}]
    while stack:
        d = stack.pop(0)
        for key in preferred:
            if isinstance(d.get(key), (int, float)):
                return float(d[key])
        for key, value in d.items():
            if isinstance(value, (int, float)) and "val" in key.lower() and "loss" in key.lower():
                return float(value)
        stack.extend(v for v in d.values() if isinstance(v, dict))
    return None


def short_path(path) -> str:
    """``path`` relative to the working directory when it lies below it (the bundled set:
    ``checkpoints/engram.ckpt``), else in full: a column narrow enough to leave the others on screen."""
    from pathlib import Path

    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def files_line(entries: Sequence[Entry]) -> str:
    """``Files: engram checkpoints/engram.ckpt; ...``: under the model table (a path column pushed the
    table past the page width)."""
    return "Files: " + "; ".join(f"{e.label} `{short_path(e.path)}`" for e in entries)


def model_table(entries: Sequence[Entry]) -> pd.DataFrame:
    rows = []
    for e in entries:
        if e.info is None:  # a Hugging Face folder / GGUF file: facts from its ModelInfo
            mi = e.model_info
            rows.append({
                "model": e.label, "kind": f"{mi.kind} ({mi.architecture})", "layers": mi.n_layers,
                "d_model": mi.d_model, "branches": mi.n_branches,
                "Engram layers": ", ".join(map(str, mi.engram_layers)) or "-",
                "P_tot": f"{mi.extra.get('parameters', 0):,} (all)", "P_act": "-", "P_sparse": "-", "rho": "-",
                "val loss (nats)": "-", "sha256": e.sha[:12],
            })
            continue
        cfg, p = e.info.config, e.params
        eng = cfg.engram
        loss = validation_loss(e.info.provenance)
        rows.append({
            "model": e.label,
            "kind": cfg.kind,
            "layers": cfg.n_layers,
            "d_model": cfg.d_model,
            "branches": cfg.n_branches,
            "Engram layers": ", ".join(map(str, eng.layer_ids)) if eng else "-",
            "P_tot": f"{p.P_tot:,}",
            "P_act": f"{p.P_act:,}",
            "P_sparse": f"{p.P_sparse:,}",
            "rho": "-" if p.rho is None else f"{p.rho:.3f}",
            "val loss (nats)": "-" if loss is None else f"{loss:.4f}",
            "sha256": e.sha[:12],
        })
    return pd.DataFrame(rows)


def render_summary(entries: Sequence[Entry]) -> None:
    """The measured sentences of each finding (against its control, with intervals), from the disk
    cache only (nothing is computed on the Overview)."""
    from app import summaries

    for title, lines in summaries.summaries(entries):
        st.markdown(f"**{title}**")
        for line in lines:
            st.markdown(f"- {md(line)}")


def compute_all(entries: Sequence[Entry]) -> None:
    """Run every analysis with the defaults the summary reads (cached results are reused)."""
    from app import inputs, results, summaries
    from engram_interp.errors import EngramInterpError

    steps = [("LogitLens (and the untrained twins)",
              lambda: results.lens_curves([*entries, *results.twins(entries)], results.LENS_DEFAULTS))]
    for a, b in summaries._pairs(entries):
        steps.append((f"CKA {a.label} vs {b.label} (and its references)",
                      lambda a=a, b=b: results.cka_with_references(a, b, entries, results.CKA_DEFAULTS)))
    for e in [*entries, *results.twins(entries)]:
        if e.has_engram:
            steps.append((f"Gates {e.label}", lambda e=e: results.gate_corpus(e, results.GATES_DEFAULTS)))
            suites, _ = inputs.probe_suites()
            if suites:
                steps.append((f"Ablation {e.label}", lambda e=e, s=suites: results.ablation(e, s, results.ABLATION_DEFAULTS)))
    problems = []
    with st.status("Computing the findings ...", expanded=True) as status:
        for name, step in steps:
            st.write(name)
            try:
                step()
            except ImportError as exc:
                problems.append(f"{name}: not in this build of engram_interp ({exc})")
            except EngramInterpError as exc:
                problems.append(f"{name}: {exc}")
        status.update(label="Findings computed", state="complete", expanded=False)
    for problem in problems:
        st.warning(problem)


def render_verdicts(folder: str | None = None) -> None:
    """The verdicts of checkpoints/FINDINGS.md (engram_interp.claims.findings on the measurement JSON of
    ``folder``, default checkpoints/measurements): one paragraph per finding (text wraps), its across-seed
    bands per arm in a small table."""
    from pathlib import Path

    from engram_interp.errors import EngramInterpError
    from engram_interp.claims.findings import compute_findings, load_measurements

    path = Path(folder) if folder else Path(__file__).resolve().parents[1] / "checkpoints" / "measurements"
    try:
        found = compute_findings(load_measurements(path))
    except EngramInterpError as exc:
        st.info(str(exc))
        return

    for f in found:  # text wraps: a measured / why that is a paragraph long is read whole, not cut in a cell
        st.markdown(md(f"**{f.title}**: {f.verdict}  \nMeasured: {f.metric}.  \nWhy: {f.reason}"))
        with st.expander(f"Bands per arm ({len(f.bands)})"):
            st.dataframe(band_table(f.bands), hide_index=True, width="content")


def band_table(bands: dict[str, dict | None]) -> pd.DataFrame:
    """One row per arm of a finding: mean, min and max over seeds, number of seeds ("-" where an arm
    was not measured)."""
    rows = []
    for arm, b in bands.items():
        if b is None:
            rows.append({"arm": arm, "mean": None, "min": None, "max": None, "seeds": 0})
        else:
            many = b["n"] > 1
            rows.append({"arm": arm, "mean": round(b["mean"], 3), "min": round(b["low"], 3) if many else None,
                         "max": round(b["high"], 3) if many else None, "seeds": b["n"]})
    return pd.DataFrame(rows)
