"""Glue between pages and the library: run an analysis from ``engram_interp.analysis`` over the
probe data, cache its result on disk (``state.disk_cached``), and read headline numbers back.

Nothing here computes an analysis itself; functions marked APP-LOCAL gather inputs (token
positions, activations) that the library does not provide yet and should move into it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from app import state
from app.inputs import corpus_id, corpus_texts, data_id
from app.state import Entry
from app.twins import twin_entry
from engram_interp.defaults import DEFAULTS

Progress = Callable[[float, str], None]


def as_result(cls, data: dict[str, Any]):
    """Rebuild a library result dataclass from its cached ``to_dict()`` (extra keys such as ``source``
    dropped), so pages can hand it to the ``engram_interp.figures`` figures."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


def lens_result(curves: Sequence[dict[str, Any]]):
    from engram_interp.analysis.logit_lens import LensCurve, LogitLensResult

    return LogitLensResult(models=[as_result(LensCurve, c) for c in curves])


def cka_result(data: dict[str, Any]):
    from engram_interp.analysis.cka_models import CKAResult

    return as_result(CKAResult, data)


def gate_map_result(data: dict[str, Any]):
    from engram_interp.analysis.gates import GateMap

    return as_result(GateMap, dict(data, gates={int(k): v for k, v in data["gates"].items()}))


def ablation_result(tables: dict[str, dict[str, dict]], entries: Sequence[Entry], mode: str):
    from engram_interp.analysis.ablation import AblationResult, SuiteScore

    layers = {e.label: e.engram_layers for e in entries}
    return AblationResult(models=[{"name": name, "engram_layers": layers.get(name, []), "mode": mode,
                                   "suites": {s: as_result(SuiteScore, v) for s, v in sorted(table.items())}}
                                  for name, table in tables.items()], mode=mode)

CKA_DEFAULTS = {"tokens": "entities", "n_examples": DEFAULTS.tokens, "batch": 256, "n_boot": 200, "seed": DEFAULTS.seed}
# k of the stored soft alignment (with its bootstrap CI): None = the library's default for B's depth


def token_progress(progress: Progress) -> Callable[[int, int | None, str], None]:
    """An analysis's ``on_progress(tokens done, token budget, what)`` as the app's progress bar."""
    return lambda done, total, what: progress(min(done / total, 1.0) if total else 0.5,
                                              f"{what}: {done:,}/{f'{total:,}' if total else '?'} tokens")


# ---- CKA -----------------------------------------------------------------------------------------
def cka(pair: state.Pair, params: dict[str, Any], k: int | None = None) -> dict[str, Any]:
    """Cached ``engram_interp.analysis.cka_models.cka_analysis`` of model A vs B, as its ``to_dict()``
    (plus ``source``). Layer points 0..n_layers; ``cka``/``ci_low``/``ci_high`` ``[L_a][L_b]``."""

    def compute(progress: Progress) -> dict[str, Any]:
        from engram_interp.analysis.cka_models import cka_analysis

        texts, probes, source = _cka_data(params)
        progress(0.1, f"running both models over up to {params['n_examples']} tokens of {source}")
        res = cka_analysis(pair.models[0], pair.models[1], texts, tokens=params["tokens"], probes=probes,
                           batch_size=params["batch"],
                           max_tokens=params["n_examples"], k=k, n_boot=params["n_boot"], seed=params["seed"],
                           names=(pair.labels[0], pair.labels[1]), on_progress=token_progress(progress))
        return dict(res.to_dict(), source=source)

    return state.disk_cached("cka", pair.shas, cka_key(params, k), compute, label="CKA")


def _cka_together(rows: Sequence[Entry], b: Entry, params: dict[str, Any], k: int | None) -> None:
    """Compute the CKA of every ``rows`` model against ``b`` that is not cached yet in one pass
    (``cka_analyses``: B runs once for all of them) and store each under its own key, exactly as
    :func:`cka` would have."""
    key = cka_key(params, k)
    missing = [x for x in rows if state.cached_result("cka", [x.sha, b.sha], key) is None]
    if len(missing) < 2:
        return
    pair = state.load_pair([*missing, b])
    if pair is None:
        return

    def compute(progress: Progress) -> None:
        from engram_interp.analysis.cka_models import cka_analyses

        texts, probes, source = _cka_data(params)
        progress(0.05, f"{len(missing)} models vs {b.label} over up to {params['n_examples']} tokens of {source}")
        results = cka_analyses(dict(zip(pair.labels[:-1], pair.models[:-1])), pair.models[-1], texts,
                               tokens=params["tokens"], probes=probes, batch_size=params["batch"],
                               max_tokens=params["n_examples"], k=k, n_boot=params["n_boot"], seed=params["seed"],
                               name_b=pair.labels[-1], on_progress=token_progress(progress))
        for x, res in zip(missing, results):
            state.store_result("cka", [x.sha, b.sha], key, dict(res.to_dict(), source=source))

    state.with_progress(compute, label=f"CKA of {', '.join(x.label for x in missing)} vs {b.label}")


def _cka_data(params: dict[str, Any]) -> tuple[list[str] | None, str | None, str]:
    """(texts, probe file, source name) of a CKA run with ``params``."""
    if params["tokens"] == "entities":
        probes = state.probes_dir() / "entities_ner.jsonl"
        return None, str(probes), str(probes)
    texts, source = corpus_texts()
    return texts, None, source


def cka_key(params: dict[str, Any], k: int | None) -> dict[str, Any]:
    """The CKA cache key: the parameters, k, and the identity of the data (probe set or corpus)."""
    data = data_id(state.probes_dir() / "entities_ner.jsonl") if params["tokens"] == "entities" else corpus_id()
    return dict(params, k=k, data=data)


def is_control(e: Entry) -> bool:
    """True for an Engram-null arm (memory without content): the control of the Engram findings."""
    return e.ok and e.kind.startswith("engram-null")


def shape(e: Entry) -> tuple[int, int]:
    """(n_layers, d_model) of a checkpoint or a Hugging Face model entry."""
    src = e.info.config if e.info is not None else e.model_info
    return src.n_layers, src.d_model


def reference_entries(a: Entry, b: Entry, entries: Sequence[Entry]) -> dict[str, Entry]:
    """The references of the A-vs-B soft alignment among the loaded checkpoints: ``control`` = an
    Engram-null arm other than A; ``noise`` = another checkpoint of B's kind and shape (a second seed);
    ``twin`` = A's untrained twin (always, for an Engram model A)."""
    out = {}
    control = [e for e in entries if is_control(e) and e.sha not in (a.sha, b.sha)]
    if control and not is_control(a):
        out["control"] = control[0]
    same = [e for e in entries if e.sha not in (a.sha, b.sha) and e.kind == b.kind and shape(e) == shape(b)]
    if same:
        out["noise"] = same[0]
    if a.has_engram:
        out["twin"] = twin_entry(a)
    return out


def cka_with_references(a: Entry, b: Entry, entries: Sequence[Entry], params: dict[str, Any], *,
                        compute: bool = True, k: int | None = None) -> dict[str, Any] | None:
    """A-vs-B CKA with ``references`` filled from the loaded Engram-null control and second baseline
    seed (each the same analysis against B, same k). ``compute=False``: disk cache only (None if
    A vs B was never computed; a missing reference is left out)."""
    from engram_interp.analysis.alignment import reference_entry

    def get(x: Entry, kk: int | None):
        if not compute:
            return state.cached_result("cka", [x.sha, b.sha], cka_key(params, kk))
        pair = state.load_pair([x, b])
        return None if pair is None else cka(pair, params, k=kk)

    if compute:
        _cka_together([a, *reference_entries(a, b, entries).values()], b, params, k)
    res = get(a, k)
    if not res or "cka" not in res:
        return None
    res = dict(res, references={})
    for kind, e in reference_entries(a, b, entries).items():
        ref = get(e, k)  # same B, same k rule: the same k as A's index
        if ref and "cka" in ref:
            res["references"][kind] = reference_entry(ref)
    return res






# ---- LogitLens -------------------------------------------------------------------------------------
LENS_DEFAULTS = {"max_tokens": DEFAULTS.tokens, "batch_size": 8}


def lens_curves(entries: Sequence[Entry], params: dict[str, Any],
                on_curve: Callable[[list[dict[str, Any]]], None] | None = None) -> list[dict[str, Any]]:
    """One cached LensCurve dict per model (``engram_interp.analysis.logit_lens.logit_lens``), in the
    order of ``entries``. ``on_curve(curves so far)`` is called once with every cached curve (at once),
    then after each model that had to be computed, so a page can draw each curve as it arrives."""
    key = dict(params, data=corpus_id())
    found: dict[int, dict[str, Any]] = {}
    for i, entry in enumerate(entries):
        if (hit := state.cached_result("logit_lens", [entry.sha], key)) is not None:
            found[i] = hit
    if found and on_curve is not None:
        on_curve([found[i] for i in sorted(found)])
    for i, entry in enumerate(entries):
        if i in found:
            continue

        def compute(progress: Progress, entry=entry) -> dict[str, Any]:
            from engram_interp.analysis.logit_lens import logit_lens

            texts, source = corpus_texts()
            progress(0.05, f"{entry.label}: {params['max_tokens']} tokens of {source}")
            res = logit_lens({entry.label: entry.model()}, texts, batch_size=params["batch_size"],
                             max_tokens=params["max_tokens"],
                             on_progress=token_progress(progress))
            return dict(res.to_dict()["models"][0], source=source)

        found[i] = state.disk_cached("logit_lens", [entry.sha], key, compute,
                                     label=f"LogitLens {entry.label} ({len(found) + 1} of {len(entries)})")
        if on_curve is not None:
            on_curve([found[j] for j in sorted(found)])
    return [found[i] for i in range(len(entries))]


def twins(entries: Sequence[Entry]) -> list[Entry]:
    """The untrained twins of the Engram models among ``entries`` (not of the control): the null every
    finding of the Overview is stated against."""
    return [twin_entry(e) for e in _roles(entries)[0]]


def _roles(entries: Sequence[Entry]) -> tuple[list[Entry], Entry | None, Entry | None]:
    """(Engram models, the Engram-null control, the first baseline without Engram) among the entries."""
    engram = [e for e in entries if e.has_engram and not is_control(e)]
    control = next((e for e in entries if is_control(e)), None)
    baseline = next((e for e in entries if not e.has_engram), None)
    return engram, control, baseline


# ---- Gates -----------------------------------------------------------------------------------------
GATES_DEFAULTS = {"max_tokens": DEFAULTS.gate_tokens, "min_count": 3, "top_n": 20, "batch_size": 8, "n_perm": DEFAULTS.permutations,
                  "seed": DEFAULTS.seed}


def token_options(choices: Sequence[int]) -> list[int]:
    """Slider choices of a token budget, always including the shared default ``DEFAULTS.tokens``."""
    return sorted(set(choices) | {DEFAULTS.tokens})


def gate_corpus(entry: Entry, params: dict[str, Any]) -> dict[str, Any]:
    """Cached ``engram_interp.analysis.gates.gate_corpus`` of one model, as its ``to_dict()``."""

    def compute(progress: Progress) -> dict[str, Any]:
        from engram_interp.analysis.gates import gate_corpus as run

        texts, source = corpus_texts()
        progress(0.05, f"{entry.label}: gates over {params['max_tokens']} tokens of {source}")
        res = run(entry.model(), texts, batch_size=params["batch_size"], max_tokens=params["max_tokens"],
                  min_count=params["min_count"], top_n=params["top_n"], name=entry.label, n_perm=params["n_perm"],
                  seed=params["seed"], on_progress=token_progress(progress))
        return dict(res.to_dict(), source=source)

    return state.disk_cached("gates", [entry.sha], dict(params, data=corpus_id()), compute,
                             label=f"Gate statistics {entry.label}")


def gate_tables(entry: Entry) -> None:
    """Corpus tables of top/bottom n-grams by mean gate, per (layer, branch) channel."""
    import pandas as pd
    import streamlit as st

    c1, c2 = st.columns(2)
    min_count = c1.select_slider("Minimum count", [2, 3, 5, 10, 20], value=GATES_DEFAULTS["min_count"], key="gates-min")
    max_tokens = c2.select_slider("Corpus tokens", token_options([2048, 8192, 16384, DEFAULTS.gate_tokens, 32768]), value=GATES_DEFAULTS["max_tokens"],
                                  key="gates-tokens")
    params = dict(GATES_DEFAULTS, min_count=int(min_count), max_tokens=int(max_tokens))
    res = gate_corpus(entry, params)
    channels = [tuple(c) for c in res["channels"]]
    ranking = [tuple(c) for c in res["branch_ranking"]]
    st.caption(f"{res['n_tokens']} tokens, {res['n_ngrams']} distinct suffix n-grams · data: {res['source']}"
               + (" · rare n-grams were pruned" if res.get("pruned") else ""))
    r3 = lambda xs: [None if v is None else round(v, 3) for v in xs]  # noqa: E731
    tracks = res.get("tracks_ngrams") or [False] * len(channels)
    sel = pd.DataFrame({
        "layer": [int(c[0]) for c in channels],
        "branch": [int(c[1]) for c in channels],
        "mean gate": r3(res["mean_gate"]),
        "eta^2": r3(res["selectivity"]),
        "shuffled": [f"{m:.3f} / {x:.3f}" if m is not None and x is not None else "-"
                     for m, x in zip(res["selectivity_perm_mean"], res["selectivity_perm_max"])],
        "p": r3(res["selectivity_p"]),
        "omega^2": r3(res["selectivity_omega2"]),
        "beats shuffles": ["yes" if t else "no" for t in tracks],
    })
    from engram_interp.analysis.gates import GateCorpusResult
    from engram_interp.figures import gate_selectivity_figure

    st.dataframe(sel, hide_index=True, width="stretch", column_config={
        "eta^2": st.column_config.NumberColumn(help="share of gate variance explained by 3-gram identity (inflated by small groups)"),
        "shuffled": st.column_config.TextColumn(help=f"eta^2 with the n-gram labels shuffled: mean / max over {res['n_perm']} shuffles"),
        "p": st.column_config.NumberColumn(help="permutation p-value: (1 + shuffles >= eta^2) / (1 + shuffles)"),
        "omega^2": st.column_config.NumberColumn(help="bias-adjusted share of variance (about 0 when labels carry nothing)"),
    })
    st.caption(f"Selectivity over {res['selectivity_groups']} 3-grams seen at least {res['min_count']} times "
               f"({res['selectivity_tokens']} tokens). A channel tracks n-grams only when its eta^2 beats every shuffle.")
    st.plotly_chart(gate_selectivity_figure(as_result(GateCorpusResult, dict(res, channels=channels))), width="stretch")
    best = ranking[0] if ranking else channels[0]
    best_note = "  (highest omega^2" + ("" if tracks[channels.index(best)] else "; not above its shuffles") + ")"
    choice = st.selectbox("Layer · branch", channels, index=channels.index(best), key="gates-channel",
                          format_func=lambda c: f"layer {c[0]} · branch {c[1]}" + (best_note if c == best else ""))
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


# ---- Ablation --------------------------------------------------------------------------------------
# per_layer off for the first view (full + all Engram layers suppressed: half the forward passes of the
# bundled pair); the page's "each layer alone" switch adds the per-layer variants
ABLATION_DEFAULTS = {"mode": "zero", "n_boot": 1000, "per_layer": False, "batch_size": 16, "seed": DEFAULTS.seed}


def _suites_key(suites: dict[str, list[dict]]) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(suites, sort_keys=True, default=str).encode()).hexdigest()[:16]


def ablation(entry: Entry, suites: dict[str, list[dict]], params: dict[str, Any]) -> dict[str, Any]:
    """Cached ``ablation_sensitivity`` of one model: ``{suite: SuiteScore dict}``."""
    key = dict(params, suites=_suites_key(suites))

    def compute(progress: Progress) -> dict[str, Any]:
        from engram_interp.analysis.ablation import ablation_sensitivity

        n_items = sum(map(len, suites.values()))
        res = ablation_sensitivity({entry.label: entry.model()}, dict(sorted(suites.items())), mode=params["mode"],
                                   per_layer=params["per_layer"], batch_size=params["batch_size"],
                                   n_boot=params["n_boot"], seed=params["seed"],
                                   on_progress=lambda done, total, what: progress(
                                       done / total, f"{what} ({n_items} items; forward pass {done}/{total})"))
        return res.to_dict()["suites"]

    return state.disk_cached("ablation", [entry.sha], key, compute, label=f"Ablation {entry.label}")
