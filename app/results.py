"""Glue between pages and the library: run an analysis from ``engram_interp.analysis`` over the
probe data, cache its result on disk (``state.disk_cached``), and read headline numbers back.

Nothing here computes an analysis itself; functions marked APP-LOCAL gather inputs (token
positions, activations) that the library does not provide yet and should move into it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from app import probe_data, state
from app.state import Entry

Progress = Callable[[float, str], None]

CKA_DEFAULTS = {"tokens": "entities", "n_examples": 512, "batch": 64, "n_boot": 200, "seed": 0}


# ---- token positions and activations (APP-LOCAL) ------------------------------------------------
def _entity_final_positions(model, text: str, spans: Sequence[tuple[int, int]]) -> tuple[torch.Tensor, list[int]]:
    """APP-LOCAL. Token ids [1, pos] (BOS first, cut to max_seq_len) and the position of the final
    token of each entity span (the token that holds the span's last character)."""
    enc = model.tokenizer.encode(text, add_special_tokens=False)
    ids, offsets = list(enc.ids), list(enc.offsets)
    shift = 1 if model.cfg.bos_token_id is not None else 0
    if shift:
        ids = [model.cfg.bos_token_id] + ids
    ids = ids[: model.cfg.max_seq_len]
    positions = []
    for _, end in spans:
        for t, (s, e) in enumerate(offsets):
            if s < end <= e:
                if t + shift < len(ids):
                    positions.append(t + shift)
                break
    return torch.tensor([ids], dtype=torch.long), sorted(set(positions))


def collect_resid(models: Sequence[Any], tokens_and_positions: Sequence[tuple[torch.Tensor, list[int]]],
                  progress: Progress, start: float = 0.0, span: float = 1.0) -> list[list[torch.Tensor]]:
    """APP-LOCAL. For every model, per layer l the readout of ``blocks.{l}.hook_resid_pre`` at the
    given positions: ``[[N, d_model] per layer] per model`` (float32, CPU)."""
    out: list[list[list[torch.Tensor]]] = [[[] for _ in range(m.cfg.n_layers)] for m in models]
    n = len(tokens_and_positions)
    for i, (tokens, positions) in enumerate(tokens_and_positions):
        if not positions:
            continue
        for mi, model in enumerate(models):
            names = {f"blocks.{l}.hook_resid_pre" for l in range(model.cfg.n_layers)}
            _, cache = model.run_with_cache(tokens.to(model.device), names_filter=lambda name: name in names)
            for l in range(model.cfg.n_layers):
                resid = model.readout(cache[f"blocks.{l}.hook_resid_pre"])[0]  # [pos, d_model]
                out[mi][l].append(resid[positions].float().cpu())
        if i % 8 == 0 or i == n - 1:
            progress(start + span * (i + 1) / n, f"running the models: text {i + 1}/{n}")
    return [[torch.cat(chunks) for chunks in layers] for layers in out]


def cka_inputs(models: Sequence[Any], tokens: str, n_examples: int, seed: int) -> tuple[list[tuple[torch.Tensor, list[int]]], str]:
    """APP-LOCAL. (token ids + chosen positions per text, a description of the data)."""
    model = models[0]
    if tokens == "entities":
        items, source = probe_data.entity_texts(state.probes_dir())
        pairs = [_entity_final_positions(model, text, spans) for text, spans in items]
    else:
        texts, source = probe_data.texts(state.probes_dir())
        pairs = []
        for text in texts:
            ids = model.tokenizer.encode(text, add_special_tokens=False).ids
            ids = ([model.cfg.bos_token_id] if model.cfg.bos_token_id is not None else []) + ids
            ids = ids[: model.cfg.max_seq_len]
            pairs.append((torch.tensor([ids]), list(range(1, len(ids)))))  # position 0 (BOS) dropped
    # cap the number of examples: keep whole texts until n_examples positions are taken
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(pairs), generator=gen).tolist()
    chosen, total = [], 0
    for i in order:
        if total >= n_examples:
            break
        tokens_i, pos = pairs[i]
        pos = pos[: n_examples - total]
        if pos:
            chosen.append((tokens_i, pos))
            total += len(pos)
    return chosen, source


# ---- CKA -----------------------------------------------------------------------------------------
def cka(pair: state.Pair, params: dict[str, Any]) -> dict[str, Any]:
    """CKA between every layer of A and of B (cached on disk): dict with ``cka``, ``low``, ``high``
    ([L_a, L_b] float64), ``n_examples``, ``n_batches``, ``source``."""
    from engram_interp.analysis.cka import CKAAccumulator

    def compute(progress: Progress) -> dict[str, Any]:
        inputs, source = cka_inputs(pair.models, params["tokens"], params["n_examples"], params["seed"])
        acts = collect_resid(pair.models, inputs, progress, 0.0, 0.9)
        n = acts[0][0].shape[0] if acts[0] and acts[0][0].numel() else 0
        if n <= 3:
            return {"error": f"only {n} token positions found in {source}; CKA needs more than 3"}
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(params["seed"]))  # shuffle across texts
        acc = CKAAccumulator(len(acts[0]), len(acts[1]), n_boot=params["n_boot"], seed=params["seed"])
        for start in range(0, n, params["batch"]):
            rows = perm[start : start + params["batch"]]
            if len(rows) <= 3:
                break
            acc.update([a[rows] for a in acts[0]], [b[rows] for b in acts[1]])
        progress(0.95, "bootstrap intervals")
        low, high = acc.ci()
        return {"cka": acc.result(), "low": low, "high": high, "n_examples": acc.n_examples,
                "n_batches": acc.n_batches, "source": source}

    return state.disk_cached("cka", pair.shas, params, compute, label="CKA")


# ---- Overview summaries (disk cache only) --------------------------------------------------------
def _pairs(entries: Sequence[Entry]) -> list[tuple[Entry, Entry]]:
    engram = [e for e in entries if e.has_engram]
    other = [e for e in entries if not e.has_engram]
    return [(a, b) for a in engram for b in other]


def cka_summary(entries: Sequence[Entry]) -> list[str]:
    from engram_interp.analysis.cka import cka_argmax, soft_alignment

    lines = []
    for a, b in _pairs(entries):
        res = state.cached_result("cka", [a.sha, b.sha], CKA_DEFAULTS)
        if not res or "cka" not in res:
            continue
        align = soft_alignment(res["cka"], k=5)
        argmax = cka_argmax(res["cka"])
        shown = [f"layer {j}: {float(align[j]):.1f}" for j in a.info.config.engram.layer_ids if j < len(align)]
        mean_shift = float(torch.nanmean(align - torch.arange(len(align), dtype=torch.float64)))
        lines.append(f"{a.label} vs {b.label} ({res['n_examples']} entity tokens): soft alignment of Engram "
                     f"layers {', '.join(shown) or '-'}; mean shift a_j - j = {mean_shift:+.2f} layers "
                     f"(argmax {argmax.tolist()})")
    return lines


def summaries(entries: Sequence[Entry]) -> list[tuple[str, list[str]]]:
    out = []
    for title, page, fn in (
        ("1 · LogitLens: KL(final || lens) per layer", "LogitLens", lens_summary),
        ("2 · CKA: Engram layers align with deeper baseline layers", "CKA", cka_summary),
        ("3 · Gates: which n-grams open the memory", "Gates", gates_summary),
        ("4 · Ablation: retained performance without Engram", "Ablation", ablation_summary),
    ):
        try:
            lines = fn(entries) if fn else []
        except ImportError:
            lines = [f"the {page} analysis is not in this build of engram_interp yet"]
        except Exception as exc:  # noqa: BLE001 - a stale cache entry must not break the Overview
            lines = [f"cached result unreadable ({type(exc).__name__}); recompute it on the {page} page"]
        out.append((title, lines or [f"not computed yet: open the {page} page"]))
    return out


def fmt_ci(value: float, low: float, high: float, digits: int = 2) -> str:
    if any(math.isnan(x) for x in (value, low, high)):
        return "n/a"
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


# ---- library modules that may not be in this build yet --------------------------------------------
def library(module: str, what: str, stop: bool = True):
    """Import ``engram_interp.analysis.<module>``; when it is missing, say so on the page and stop the
    page (or return None when ``stop`` is False)."""
    import importlib

    import streamlit as st

    try:
        return importlib.import_module(f"engram_interp.analysis.{module}")
    except ImportError as exc:
        st.info(f"{what} is not available in this build of engram_interp (`engram_interp.analysis.{module}`: {exc}).")
        if stop:
            st.stop()
        return None


def corpus_texts() -> tuple[list[str], str]:
    """The library's default corpus (``engram_interp.analysis.common.default_texts``), else the
    probe texts / built-in sample of ``app.probe_data``."""
    from engram_interp.errors import EngramInterpError

    try:
        from engram_interp.analysis.common import default_corpus_path, default_texts

        texts = default_texts()
        return texts, f"{len(texts)} texts from {default_corpus_path()}"
    except (ImportError, EngramInterpError):
        return probe_data.texts(state.probes_dir())


# ---- LogitLens -------------------------------------------------------------------------------------
LENS_DEFAULTS = {"max_tokens": 4096, "batch_size": 8}


def lens_curves(entries: Sequence[Entry], params: dict[str, Any]) -> list[dict[str, Any]]:
    """One cached LensCurve dict per model (``engram_interp.analysis.logit_lens.logit_lens``)."""
    out = []
    for i, entry in enumerate(entries):
        def compute(progress: Progress, entry=entry) -> dict[str, Any]:
            from engram_interp.analysis.logit_lens import logit_lens

            texts, source = corpus_texts()
            progress(0.05, f"{entry.label}: {params['max_tokens']} tokens of {source}")
            res = logit_lens({entry.label: entry.model()}, texts, batch_size=params["batch_size"],
                             max_tokens=params["max_tokens"])
            return dict(res.to_dict()["models"][0], source=source)

        out.append(state.disk_cached("logit_lens", [entry.sha], params, compute, label=f"LogitLens {entry.label}"))
    return out


def lens_summary(entries: Sequence[Entry]) -> list[str]:
    lines = []
    for e in entries:
        res = state.cached_result("logit_lens", [e.sha], LENS_DEFAULTS)
        if res:
            kl = res["kl"]
            early = kl[: max(1, len(kl) // 3)]
            lines.append(f"{e.label}: mean KL over layers {sum(kl[:-1]) / max(1, len(kl) - 1):.3f} nats, "
                         f"early third {sum(early) / len(early):.3f} nats ({res['n_tokens']} tokens; "
                         f"last-layer KL {kl[-1]:.1e}, self-check)")
    return lines


# ---- Gates -----------------------------------------------------------------------------------------
GATES_DEFAULTS = {"max_tokens": 8192, "min_count": 3, "top_n": 20, "batch_size": 8}


def gate_corpus(entry: Entry, params: dict[str, Any]) -> dict[str, Any]:
    """Cached ``engram_interp.analysis.gates.gate_corpus`` of one model, as its ``to_dict()``."""

    def compute(progress: Progress) -> dict[str, Any]:
        from engram_interp.analysis.gates import gate_corpus as run

        texts, source = corpus_texts()
        progress(0.05, f"{entry.label}: gates over {params['max_tokens']} tokens of {source}")
        res = run(entry.model(), texts, batch_size=params["batch_size"], max_tokens=params["max_tokens"],
                  min_count=params["min_count"], top_n=params["top_n"], name=entry.label)
        return dict(res.to_dict(), source=source)

    return state.disk_cached("gates", [entry.sha], params, compute, label=f"Gate statistics {entry.label}")


def gate_tables(entry: Entry, gates_lib) -> None:
    """Corpus tables of top/bottom n-grams by mean gate, per (layer, branch) channel."""
    import pandas as pd
    import streamlit as st

    c1, c2 = st.columns(2)
    min_count = c1.select_slider("Minimum count", [2, 3, 5, 10, 20], value=GATES_DEFAULTS["min_count"], key="gates-min")
    max_tokens = c2.select_slider("Corpus tokens", [2048, 4096, 8192, 16384, 32768], value=GATES_DEFAULTS["max_tokens"],
                                  key="gates-tokens")
    params = dict(GATES_DEFAULTS, min_count=int(min_count), max_tokens=int(max_tokens))
    res = gate_corpus(entry, params)
    channels = [tuple(c) for c in res["channels"]]
    ranking = [tuple(c) for c in res["branch_ranking"]]
    st.caption(f"{res['n_tokens']} tokens, {res['n_ngrams']} distinct suffix n-grams · data: {res['source']}"
               + (" · rare n-grams were pruned" if res.get("pruned") else ""))
    sel = pd.DataFrame({
        "layer": [c[0] for c in channels], "branch": [c[1] for c in channels],
        "mean gate": [round(v, 3) for v in res["mean_gate"]],
        "selectivity (eta^2 of 3-gram identity)": [None if v is None else round(v, 3) for v in res["selectivity"]],
    })
    st.dataframe(sel, hide_index=True, width="stretch")
    best = ranking[0] if ranking else channels[0]
    choice = st.selectbox("Layer · branch", channels, index=channels.index(best), key="gates-channel",
                          format_func=lambda c: f"layer {c[0]} · branch {c[1]}" + ("  (most selective)" if c == best else ""))
    key = f"{choice[0]}.{choice[1]}"
    if not res["top"].get(key):
        st.info(f"No n-gram occurs at least {params['min_count']} times in this corpus; lower the minimum count.")
        return
    cols = st.columns(2)
    for col, side, title in zip(cols, ("top", "bottom"), ("highest mean gate", "lowest mean gate")):
        rows = [{"n-gram": repr(s["text"]), "n": s["order"], "count": s["count"], "mean": round(s["mean"], 3),
                 "max": round(s["max"], 3)} for s in res[side][key]]
        col.markdown(f"**{title}**")
        col.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")


def gates_summary(entries: Sequence[Entry]) -> list[str]:
    lines = []
    for e in entries:
        if not e.has_engram:
            continue
        res = state.cached_result("gates", [e.sha], GATES_DEFAULTS)
        if not res:
            continue
        best = tuple(res["branch_ranking"][0])
        top = [repr(s["text"]) for s in res["top"].get(f"{best[0]}.{best[1]}", [])[:5]]
        lines.append(f"{e.label}: layer {best[0]} branch {best[1]} tracks n-grams best; highest mean gate: "
                     f"{', '.join(top) or '-'}")
    return lines


# ---- Ablation --------------------------------------------------------------------------------------
ABLATION_DEFAULTS = {"mode": "zero", "n_boot": 1000, "per_layer": True, "batch_size": 16}


def scored_suites(suites: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """The suites' items that can be scored (they have an ``answer``); empty suites dropped."""
    scored = {n: [i for i in items if isinstance(i.get("answer"), str)] for n, items in suites.items()}
    return {n: items for n, items in scored.items() if items}


def _suites_key(suites: dict[str, list[dict]]) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(suites, sort_keys=True, default=str).encode()).hexdigest()[:16]


def ablation(entry: Entry, suites: dict[str, list[dict]], params: dict[str, Any]) -> dict[str, Any]:
    """Cached ``ablation_sensitivity`` of one model: ``{suite: SuiteScore dict}``."""
    key = dict(params, suites=_suites_key(suites))

    def compute(progress: Progress) -> dict[str, Any]:
        from engram_interp.analysis.ablation import ablation_sensitivity

        out = {}
        for i, (name, items) in enumerate(sorted(suites.items())):
            progress(i / len(suites), f"{entry.label}: suite {name} ({len(items)} items)")
            res = ablation_sensitivity({entry.label: entry.model()}, {name: items}, mode=params["mode"],
                                       per_layer=params["per_layer"], batch_size=params["batch_size"],
                                       n_boot=params["n_boot"])
            out.update(res.to_dict()["suites"])
        return out

    return state.disk_cached("ablation", [entry.sha], key, compute, label=f"Ablation {entry.label}")


def ablation_table(entries: Sequence[Entry], suites: dict, ablation_lib) -> None:
    """Retained % per suite with its bootstrap CI, for every Engram model, plus a chart."""
    import pandas as pd
    import streamlit as st

    from app import figures
    from engram_interp.errors import EngramInterpError

    scored = scored_suites(suites)
    if not scored:
        st.info("The suites have no items with an `answer`, so nothing can be scored.")
        return
    try:
        tables = {e.label: ablation(e, scored, ABLATION_DEFAULTS) for e in entries}
    except EngramInterpError as exc:
        st.error(str(exc))
        return
    rows, bars = [], []
    for label, table in tables.items():
        for suite, s in sorted(table.items()):
            ci = s.get("ci")
            bars.append((label, suite, s["retained"], ci if ci and None not in ci else None))
            rows.append({"model": label, "suite": suite, "n": s["n"], "full acc": round(s["full"], 3),
                         "ablated acc": round(s["ablated"], 3),
                         "retained %": None if s["retained"] is None else round(s["retained"], 1),
                         "95% CI": "-" if not ci or None in ci else f"[{ci[0]:.1f}, {ci[1]:.1f}]",
                         **{f"retained % (layer {l} only)": None if v.get("retained") is None else round(v["retained"], 1)
                            for l, v in sorted(s.get("per_layer", {}).items())}})
    st.plotly_chart(figures.retained_bars(bars), width="stretch")
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    st.caption("Retained = 100 x ablated accuracy / full accuracy (empty when the full model scores 0). "
               "CI: paired Poisson bootstrap over items.")


def ablation_summary(entries: Sequence[Entry]) -> list[str]:
    from app import probe_data

    scored = scored_suites(probe_data.suites(state.probes_dir()))
    lines = []
    for e in entries:
        if not e.has_engram or not scored:
            continue
        res = state.cached_result("ablation", [e.sha], dict(ABLATION_DEFAULTS, suites=_suites_key(scored)))
        if not res:
            continue
        parts = [f"{name} {s['retained']:.0f}%" + (f" [{s['ci'][0]:.0f}, {s['ci'][1]:.0f}]" if s.get("ci") and None not in s["ci"] else "")
                 for name, s in sorted(res.items()) if s.get("retained") is not None]
        lines.append(f"{e.label}: retained " + (", ".join(parts) or "n/a (full model scores 0)"))
    return lines


def item_answer(item: dict) -> str | None:
    """The expected answer of a suite item (first of ``answer``, ``target``, ``completion``)."""
    for key in ("answer", "target", "completion", "answers"):
        value = item.get(key)
        if isinstance(value, str):
            return value
        if isinstance(value, list) and value and isinstance(value[0], str):
            return value[0]
    return None
