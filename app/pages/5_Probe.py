"""Probe: free text -> the next-token top-k that the LogitLens reads at every layer, per model."""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402
import torch  # noqa: E402

from app import probe_views, state  # noqa: E402
from engram_interp.errors import EngramInterpError  # noqa: E402

st.set_page_config(page_title="Probe · engram-interp", layout="wide")
good = state.page_header(
    "Probe",
    "Type a text and pick a token: for every layer, the LogitLens (the model's own final norm, statistics "
    "recomputed, and unembedding applied to the residual stream entering that block) gives a next-token "
    "distribution. 'final' is the model's real prediction.",
)

chosen = state.pick_models(good, n=2, key="probe")
pair = state.load_pair(chosen)
if pair is None:
    st.stop()
text = st.text_area("Text", "Alexander the Great was a king of Macedon. By the way, the capital of France is",
                    key="probe-text", max_chars=20000)
k = st.slider("top-k", 1, 10, 5, key="probe-k")

streams = []
for entry, model in zip(pair.entries, pair.models):
    if state.tokens_or_error(model, text, entry.label) is None:
        st.stop()
    try:
        streams.append(probe_views.residual_streams(str(entry.path), entry.sha, text))
    except EngramInterpError as exc:
        st.error(f"{entry.label}: {exc}")
        st.stop()

tokens = streams[0][0]
# The slider's state belongs to one text: a new text starts at its last token. (A widget keeps its
# stored value across reruns, so without this the tables stayed at the old text's position.)
if st.session_state.get("probe-pos-text") != tokens or st.session_state.get("probe-pos", -1) >= len(tokens):
    st.session_state["probe-pos-text"] = tokens
    st.session_state["probe-pos"] = len(tokens) - 1
pos = st.select_slider(
    "Predict the token after position", options=list(range(len(tokens))),
    format_func=lambda i: f"{i}: {tokens[i]!r}", key="probe-pos",
)
st.markdown(f"Predicting the token after position {pos} ({tokens[pos]!r}) of {len(tokens)} tokens; "
            f"context ends with **{''.join(tokens[max(0, pos - 8): pos + 1])!r}**")

for entry, model, (toks, resid) in zip(pair.entries, pair.models, streams):  # one full-width table per model
    with st.container():
        st.markdown(f"#### {entry.label} · {entry.kind}")
        with torch.no_grad():
            probs = torch.softmax(model.lens_logits(resid[:, pos : pos + 1].to(model.device)).float(), dim=-1)[:, 0]
        top = probs.topk(k, dim=-1)
        rows = []
        for layer, (vals, ids) in enumerate(zip(top.values.tolist(), top.indices.tolist())):
            row = {"layer": probe_views.layer_names(model.info.n_layers)[layer]}
            for rank, (p, i) in enumerate(zip(vals, ids)):
                row[f"#{rank + 1}"] = f"{model.decode_token(i)!r} {p:.3f}"
            rows.append(row)
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")

st.subheader("Routing and attention")
for entry in pair.entries:
    probe_views.render(entry, text)
