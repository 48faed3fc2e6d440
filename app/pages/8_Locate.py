"""Locate: which Engram table rows a prompt reads, each row's exact share of the layer's Engram term of
the next-token logit, zeroing / restoring row groups, and the corpus n-grams that share each row."""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402

from app import inputs, state  # noqa: E402
from engram_interp.defaults import DEFAULTS  # noqa: E402
from engram_interp.errors import EngramInterpError  # noqa: E402

st.set_page_config(page_title="Locate · engram-interp", layout="wide")
good = state.page_header(
    "Locate",
    "The table rows an Engram model reads for one prediction. Each row's direct contribution goes through the "
    "frozen gate and the value projection; the rows, the value bias and the short conv add up to that layer's "
    "Engram term of the Attribution page. Zeroing a head's rows (or restoring only them) shows what the "
    "prediction causally needs; the collision columns list the corpus n-grams hashed into the same row.",
)
locate_lib = inputs.library("locate", "Locate")
engram = [e for e in good if e.has_engram]
if not engram:
    st.info("No loaded model has Engram layers: there are no table rows to locate.")
    st.stop()
entry = state.pick_models(engram, n=1, key="locate")[0]
if state.load_model(entry) is None:
    st.stop()


@st.cache_data(max_entries=32, show_spinner="Locating the rows ...")
def run(path: str, sha: str, label: str, prompt: str, target: str, contrast: str | None, scope: str,
        collisions: bool, max_tokens: int):
    texts = inputs.corpus_texts()[0] if collisions else None
    return locate_lib.locate(state.model_for(path, sha), prompt, target, contrast, scope=scope, corpus=texts,
                             max_tokens=max_tokens, name=label)


c1, c2, c3 = st.columns([3, 1, 1])
prompt = c1.text_input("Prompt", "Southern United", key="loc-prompt", max_chars=4000)
target = c2.text_input("Target token", " States", key="loc-target", help="one token, leading space included")
contrast = c3.text_input("Contrast token (optional)", " Kingdom", key="loc-contrast") or None
c4, c5, c6 = st.columns(3)
scope = c4.radio("Row groups hold the rows read", ["last", "all"], horizontal=True, key="loc-scope",
                 format_func={"last": "at the last position", "all": "anywhere in the prompt"}.get)
collisions = c5.checkbox("Collisions over the corpus", value=True, key="loc-coll")
max_tokens = c6.select_slider("Corpus positions hashed", sorted({2000, 5000, 10000, 20000, DEFAULTS.memory_tokens}),
                              value=DEFAULTS.memory_tokens, key="loc-tokens",
                              disabled=not collisions)
try:
    res = run(str(entry.path), entry.sha, entry.label, prompt, target, contrast, scope, collisions, max_tokens)
except EngramInterpError as exc:
    st.error(f"{entry.label}: {exc}")
    st.stop()

from engram_interp.figures.locate import locate_figure  # noqa: E402

st.markdown(f"Metric (logit of {res.target!r}" + (f" minus {res.contrast!r}" if res.contrast else "")
            + f"): **{res.metric:+.3f}**; log p(target) **{res.logprob:.3f}**; with every row the prompt reads zeroed: "
            f"**{res.metric_all_zeroed:+.3f}** / **{res.logprob_all_zeroed:.3f}**.")
st.plotly_chart(locate_figure(res), width="stretch", key="loc-fig")
layer_rows = [{"layer": l.layer, "gate": ", ".join(f"{g:.3f}" for g in l.gate), "Engram term": l.engram_term,
               "rows": l.rows_sum, "value bias": l.value_bias, "short conv": l.conv, "unexplained": l.unexplained}
              for l in res.layers]
st.dataframe(pd.DataFrame(layer_rows), hide_index=True, width="stretch", column_config={  # 5e-17, not 0.00000000000000005
    **{c: st.column_config.NumberColumn(format="%.4f") for c in ("Engram term", "rows", "value bias", "short conv")},
    "unexplained": st.column_config.NumberColumn(format="%.1e")})
st.subheader("Rows at the last position, largest |contribution| first")
top = [{"layer": r.layer, "order": r.order, "head": r.head, "row": r.row, "n-gram": r.ngram,
        "contribution": r.contribution, "corpus count": r.corpus_count, "other n-grams in the row": r.n_shared,
        "most frequent row-mates": ", ".join(f"{m['text']!r} ({m['count']})" for m in (r.shared_with or []))}
       for r in res.top_rows(20)]
st.dataframe(pd.DataFrame(top), hide_index=True, width="stretch")
st.subheader("Causal tracing over row groups")
groups = [{"group": g.name, "rows": g.n_rows, "log p zeroed": g.logprob_zeroed, "log p restored only": g.logprob_restored,
           "metric zeroed": g.metric_zeroed, "metric restored only": g.metric_restored}
          for l in res.layers for g in l.groups]
st.dataframe(pd.DataFrame(groups), hide_index=True, width="stretch")
st.caption("One prompt: no interval. A row's contribution is direct only: it counts neither the row's effect on "
           "the gate nor what later layers do with it (docs/ATTRIBUTION.md, 'Locate').")
