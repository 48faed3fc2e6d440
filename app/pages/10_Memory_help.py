"""Where the memory helps: the Engram model's loss minus its baseline's per token, by how frequent the token's
suffix n-gram is, by whether its table rows are shared with other n-grams, by gate value, and with the
tables folded to k rows per head."""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402

from app import inputs, state  # noqa: E402
from engram_interp.errors import EngramInterpError  # noqa: E402

st.set_page_config(page_title="Memory help · engram-interp", layout="wide")
good = state.page_header(
    "Where the memory helps",
    "Per token: the Engram model's loss minus its baseline's (nats; below 0 the memory model does better), bucketed "
    "by how often the token's suffix n-gram occurs in the corpus (cold / warm / hot), by how many of its table rows "
    "other n-grams share, and by the gate value; and the same with every table folded to k rows per head "
    "(row r -> r mod k), which asks whether a capacity-1 table works as well.",
)
help_lib = inputs.library("memory_help", "Memory help")
engram = [e for e in good if e.has_engram and e.kind != "engram-null"]
base = [e for e in good if not e.has_engram]
if not engram or not base:
    st.info("This page needs an Engram model and a baseline without Engram (e.g. the MoE partner).")
    st.stop()
c1, c2, c3 = st.columns(3)
labels = {e.label: e for e in good}
e_label = c1.selectbox("Engram model", [e.label for e in engram], key="mh-engram")
b_label = c2.selectbox("Baseline", [e.label for e in base], key="mh-base")
nulls = [e.label for e in good if e.kind == "engram-null"]
n_label = c3.selectbox("Engram-null control", ["(none)"] + nulls, index=1 if nulls else 0, key="mh-null")
c4, c5, c6 = st.columns(3)
max_tokens = c4.select_slider("Tokens", [1000, 2000, 5000, 10000, 20000], value=2000, key="mh-tokens")
cold = c5.number_input("Cold: fewer occurrences than", 1, 1000, 2, key="mh-cold")
hot = c6.number_input("Hot: at least", 1, 100000, 10, key="mh-hot")
twin = st.checkbox("Untrained twin control (twins of both models)", value=True, key="mh-twin")
chosen = [labels[e_label], labels[b_label]] + ([labels[n_label]] if n_label != "(none)" else [])
if any(state.load_model(e) is None for e in chosen):
    st.stop()


@st.cache_data(max_entries=16, show_spinner="Scoring every token with each model and capacity ...")
def run(paths: tuple, shas: tuple, names: tuple, max_tokens: int, cold: int, hot: int, twin: bool) -> dict:
    import engram_interp as ei
    from engram_interp.analysis.ngram_counts import count_ngrams
    from engram_interp.claims.memory_help import memory_help_findings
    from engram_interp.claims.sentences import twin_name
    from engram_interp.memory import open_tables

    models = [state.model_for(p, s) for p, s in zip(paths, shas)]
    texts, where = inputs.corpus_texts()
    tables = open_tables(paths[0])
    counts = count_ngrams(tables, texts, corpus=where)
    kw = dict(cold=cold, hot=hot, max_tokens=max_tokens)
    res = help_lib.memory_help(models[0], models[1], texts, counts, tables, null=models[2] if len(models) > 2 else None,
                               names=(names[0], names[1], names[2] if len(names) > 2 else None), **kw).to_dict()
    tw = None
    if twin:
        tw = help_lib.memory_help(ei.untrained_twin(models[0]), ei.untrained_twin(models[1]), texts, counts, tables,
                                  names=(twin_name(names[0]), twin_name(names[1]), None), **kw).to_dict()
    return {"models": [res], "twin": tw, "findings": [f.to_dict() for f in memory_help_findings([res], tw)]}


try:
    d = run(tuple(str(e.path) for e in chosen), tuple(e.sha for e in chosen), tuple(e.label for e in chosen),
            max_tokens, int(cold), int(hot), twin)
except EngramInterpError as exc:
    st.error(str(exc))
    st.stop()

from engram_interp.figures.memory_help import memory_help_figure  # noqa: E402

st.plotly_chart(memory_help_figure(d), width="stretch", key="mh-fig")
for f in d["findings"]:
    st.markdown(f"- **{f['verdict']}**: {f['sentence']}")
m = d["models"][0]
rows = [{"bucket": x["dim"], "key": x["key"], "value": x["bucket"], "tokens": x["n_tokens"], "share": x["share"],
         "Engram - baseline": x["delta_baseline"],
         "95%": None if not x["delta_baseline_ci"] else f"[{x['delta_baseline_ci'][0]:+.4f}, {x['delta_baseline_ci'][1]:+.4f}]",
         "Engram - null": x["delta_null"]} for x in m["buckets"] if x["n_tokens"]]
st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
st.caption("One seed; `engram-interp memory-help ... --seeds checkpoints/seeds --twin` states the findings over the "
           "seed band (docs/ANALYSES.md, 'Where the memory helps').")
