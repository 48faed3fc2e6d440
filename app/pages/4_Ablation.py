"""Ablation: task-suite scores with Engram suppressed (Y = 0), as a share of the full model's score."""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402
import torch  # noqa: E402

from app import results, state  # noqa: E402
from engram_interp.errors import EngramInterpError  # noqa: E402

st.set_page_config(page_title="Ablation · engram-interp", layout="wide")
good = state.page_header(
    "Ablation",
    "Each task suite is scored with the full model and with every Engram output Y set to 0 at inference. "
    "Retained = ablated score / full score. The paper: factual recall collapses (TriviaQA keeps 29%), reading "
    "comprehension survives (C3 93%).",
)
engram_entries = state.engram_entries(good, "there is nothing to ablate.")
suites, problem = results.probe_suites()
if not suites:
    st.info(f"No task suites found in `{state.probes_dir()}` ({problem}; suites are JSONL files with `prompt` and "
            "`answer` fields). Generate them with `engram-interp data suites`, or point `--probes` at a folder that has them.")
    st.stop()

st.subheader("Retained performance per suite")
if results.library("ablation", "The ablation analysis", stop=False) is not None:
    results.ablation_table(engram_entries, suites)

st.subheader("One item: full vs ablated prediction")
labels = [e.label for e in engram_entries]
c1, c2 = st.columns(2)
entry = engram_entries[c1.selectbox("Model", range(len(labels)), format_func=lambda i: labels[i], key="abl-model")]
suite = c2.selectbox("Suite", sorted(suites), key="abl-suite")
items = suites[suite]
idx = st.number_input(f"Item (0..{len(items) - 1})", 0, len(items) - 1, 0, key="abl-item")
item = items[int(idx)]
model = state.load_model(entry)
if model is None:
    st.stop()
st.markdown(f"**Prompt:** {item['prompt']!r}")
st.markdown(f"**Expected:** {item['answer']!r}")
try:
    tokens = model.to_tokens(item["prompt"])
except EngramInterpError as exc:
    st.error(str(exc))
    st.stop()
with torch.no_grad():
    full = torch.softmax(model(tokens)[0, -1].float(), -1)
    with model.engram_suppressed():
        ablated = torch.softmax(model(tokens)[0, -1].float(), -1)
cols = st.columns(2)
for col, name, probs in zip(cols, ["full model", "Engram suppressed (Y = 0)"], [full, ablated]):
    top = probs.topk(min(8, probs.shape[0]))
    col.markdown(f"**{name}**")
    col.dataframe(pd.DataFrame({"next token": [repr(model.decode([i]))
                                               for i in top.indices.tolist()],
                                "p": [round(p, 4) for p in top.values.tolist()]}), hide_index=True, width="stretch")
