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

from app import ablation_view, inputs, state  # noqa: E402
from engram_interp.analysis.item_view import item_candidates  # noqa: E402
from engram_interp.errors import EngramInterpError  # noqa: E402

st.set_page_config(page_title="Ablation · engram-interp", layout="wide")
good = state.page_header(
    "Ablation",
    "Each task suite is scored with the full model and with every Engram output Y set to 0 at inference. "
    "Retained = ablated score / full score. The paper: factual recall collapses (TriviaQA keeps 29%), reading "
    "comprehension survives (C3 93%).",
)
engram_entries = state.engram_entries(good, "there is nothing to ablate, so it retains 100% by construction.")
suites, problem = inputs.probe_suites()
if not suites:
    st.info(f"No task suites found in `{state.probes_dir()}` ({problem}; suites are JSONL files with `prompt` and "
            "`answer` fields). Generate them with `engram-interp data suites`, or point `--probes` at a folder that has them.")
    st.stop()

st.subheader("Retained performance per suite")
per_layer = st.toggle("Also each Engram layer suppressed alone", value=False, key="abl-per-layer",
                      help="One more set of forward passes per Engram layer and model; the retained % with every "
                           "Engram layer suppressed does not change.")
retained = st.container()  # filled last, one model at a time: the item view below is usable meanwhile


def item_view() -> None:
    """One item of a suite scored by the full and the Engram-suppressed model (one forward each)."""
    labels = [e.label for e in engram_entries]
    c1, c2 = st.columns(2)
    entry = engram_entries[c1.selectbox("Model", range(len(labels)), format_func=lambda i: labels[i], key="abl-model")]
    suite = c2.selectbox("Suite", sorted(suites), key="abl-suite")
    items = suites[suite]
    idx = st.number_input(f"Item (0..{len(items) - 1})", 0, len(items) - 1, 0, key="abl-item")
    item = items[int(idx)]
    model = state.load_model(entry)
    if model is None:
        return
    st.markdown(f"**Prompt:** {item['prompt']!r}")
    st.markdown(f"**Expected:** {item['answer']!r}")
    try:
        scored = item_candidates(model, item)
    except EngramInterpError as exc:
        st.error(str(exc))
        return
    rule = ("multiple choice: correct when the answer's summed log-probability is strictly the highest"
            if item.get("candidates") else "exact match: correct when every answer token is the greedy (argmax) choice")
    st.caption(f"What the ablation scored ({rule}). Probabilities of the whole continuation after the prompt.")
    st.dataframe(pd.DataFrame([{
        "candidate": repr(c.text) + ("  (answer)" if c.is_answer else ""),
        "tokens": " ".join(repr(t) for t in c.tokens),
        "p full": round(c.prob_full, 4), "p Engram suppressed": round(c.prob_ablated, 4),
        "log p full (nats)": round(c.logprob_full, 3), "log p suppressed (nats)": round(c.logprob_ablated, 3),
        **({} if item.get("candidates") else {"greedy full": c.greedy_full, "greedy suppressed": c.greedy_ablated}),
    } for c in scored]), hide_index=True, width="stretch")
    with torch.no_grad():
        tokens = model.to_tokens(item["prompt"])
        full = torch.softmax(model(tokens)[0, -1].float(), -1)
        with model.engram_suppressed():
            ablated = torch.softmax(model(tokens)[0, -1].float(), -1)
    st.markdown("**Most likely next tokens**")
    cols = st.columns(2)
    for col, name, probs in zip(cols, ["full model", "Engram suppressed (Y = 0)"], [full, ablated]):
        top = probs.topk(min(8, probs.shape[0]))
        col.markdown(f"*{name}*")
        col.dataframe(pd.DataFrame({"next token": [repr(model.decode_token(i)) for i in top.indices.tolist()],
                                    "p": [round(p, 4) for p in top.values.tolist()]}), hide_index=True, width="stretch")


st.subheader("One item: full vs ablated prediction")
item_view()
with retained:
    if inputs.library("ablation", "The ablation analysis", stop=False) is not None:
        ablation_view.ablation_table(engram_entries, suites, per_layer=per_layer)
