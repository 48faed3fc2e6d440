"""Memory: what the Engram tables hold, row by row (usage, collisions, reverse lookup, PCA map)."""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402

from app import inputs, state  # noqa: E402
from engram_interp import figures  # noqa: E402
from engram_interp.defaults import DEFAULTS  # noqa: E402
from engram_interp.errors import EngramInterpError  # noqa: E402

st.set_page_config(page_title="Memory · engram-interp", layout="wide")
good = state.page_header(
    "Memory",
    "Engram addresses its tables by hashing the last n tokens, so what a table holds can be read without running "
    "the model: which rows a corpus uses, how many different n-grams share a row (next to what a uniform hash of "
    "the same size would give), which n-grams land in the heaviest rows, and whether the rows training reached "
    "differ from the rows it never touched.",
)
engram_entries = state.engram_entries(good, "it has no memory tables to inspect.")
labels = [e.label for e in engram_entries]
entry = engram_entries[st.selectbox("Model", range(len(labels)), format_func=lambda i: labels[i], key="memory-model")]
memory_lib = inputs.library("memory", "The memory inspector")
PARAMS = {"max_tokens": DEFAULTS.memory_tokens, "untouched": 2048, "seed": DEFAULTS.seed}  # as `engram-interp memory`


def _compute(ngram: str | None):
    def compute(progress):
        from engram_interp.memory import open_tables

        texts, source = inputs.corpus_texts()
        progress(0.05, f"{entry.label}: hashing {PARAMS['max_tokens']} tokens of {source}")
        tables = open_tables(entry.path)
        if ngram is not None:
            return memory_lib.memory_lookup(tables, texts, ngram, max_tokens=PARAMS["max_tokens"])
        res = memory_lib.memory_inspect(tables, texts, max_tokens=PARAMS["max_tokens"], untouched=PARAMS["untouched"],
                                        seed=PARAMS["seed"], progress=False)
        return dict(res.to_dict(), corpus=source)

    return compute


try:
    data = state.disk_cached("memory", [entry.sha], PARAMS, _compute(None), label=f"Memory {entry.label}")
except EngramInterpError as exc:
    st.error(str(exc))
    st.stop()
res = memory_lib.MemoryResult.from_dict({k: v for k, v in data.items() if k != "corpus"})
st.caption(f"{res.n_positions} positions from {data.get('corpus', 'the corpus')}"
           + (" · Engram-null: every n-gram reads row 0 of each head" if res.null_memory else ""))

st.subheader("Usage")
st.plotly_chart(figures.memory_usage_figure(res), width="stretch")
st.caption("Positions served by each touched row, rows ranked by load (log-log); s is the fitted Zipf exponent.")

st.subheader("Collisions")
SMALL = {c: st.column_config.NumberColumn(width="small") for c in ("layer", "order", "head")}
table = pd.DataFrame([{
    "layer": L.layer, "order": h.order, "head": h.head, "rows": h.rows, "touched": h.touched,
    "touched share": round(h.touched_share, 4), "top 1% share": round(h.top1pct_share, 3),
    "n-grams per row": round(h.ngrams_per_row_mean, 2), "max": h.ngrams_per_row_max,
    "collision share": round(h.collision_share, 3), "uniform hash": round(h.uniform_collision_share, 3),
} for L in res.layers for h in L.heads])
st.dataframe(table, hide_index=True, width="stretch", key="memory-collisions", column_config=SMALL)
st.caption("Collision share: positions whose row also serves another corpus n-gram. Uniform hash: the same figure "
           "expected for a uniformly random hash into a table of this size (the control).")
st.plotly_chart(figures.memory_norm_figure(res), width="stretch")
norms = pd.DataFrame([{
    "layer": L.layer, "order": h.order, "head": h.head,
    "|row| touched": None if h.norm_touched is None else round(h.norm_touched, 3),
    "|row| untouched": None if h.norm_untouched is None else round(h.norm_untouched, 3),
} for L in res.layers for h in L.heads])
st.dataframe(norms, hide_index=True, width="content", key="memory-norms", column_config=SMALL)
st.caption("|row|: mean L2 norm of the touched rows and of a seeded sample of untouched rows.")

st.subheader("Heaviest rows")
L = res.layers[st.selectbox("Layer", range(len(res.layers)), format_func=lambda i: str(res.layers[i].layer), key="memory-layer")]
for h in [h for h in L.heads if h.head == 0]:
    st.markdown(f"**order {h.order}, head 0**")
    st.dataframe(pd.DataFrame([{"row": r["row"], "load": r["load"], "n-grams": r["n_ngrams"],
                                "top n-grams": ", ".join(f"{g['text']!r} x{g['count']}" for g in r["ngrams"][:6])}
                               for r in h.heavy_rows]), hide_index=True)

st.subheader("Reverse lookup")
ngram = st.text_input("An n-gram (at least 2 tokens)", "the capital", key="memory-ngram", max_chars=200)
if ngram.strip():
    try:
        look = state.disk_cached("memory-lookup", [entry.sha], dict(PARAMS, ngram=ngram), _compute(ngram),
                                 label=f"Looking up {ngram!r}")
    except EngramInterpError as exc:
        st.error(str(exc))
        look = None
    if look:
        st.caption("Tokens: " + " | ".join(repr(t) for t in look["tokens"]))
        for o in look["orders"]:
            st.markdown(f"**{o['order']}-gram {o['text']!r}**: {o['count']} times in the corpus")
            rows = [{"layer": lay["layer"], "head": hd["head"], "row": hd["row"], "other n-grams": hd["n_shared"],
                     "shared with": ", ".join(f"{m['text']!r} x{m['count']}" for m in hd["shared_with"][:6])}
                    for lay in o["layers"] for hd in lay["heads"]]
            st.dataframe(pd.DataFrame(rows), hide_index=True)
            for lay in o["layers"]:
                if lay["neighbours"]:
                    b = lay["cosine_baseline"]
                    st.markdown(f"Nearest by memory vector, layer {lay['layer']} (control: mean cosine {b['mean']:.2f}, "
                                f"95th percentile {b['p95']:.2f} over {b['n_candidates']} n-grams): "
                                + ", ".join(f"`{m['text']!r}` {m['cosine']:.2f}" for m in lay["neighbours"][:8]))

st.subheader("Memory map")
st.plotly_chart(figures.memory_pca_figure(res, L.layer), width="stretch")
st.caption("PCA of the memory vectors (an n-gram's rows in every head of its order, concatenated) of the most "
           "frequent n-grams; hover a point for the n-gram.")
