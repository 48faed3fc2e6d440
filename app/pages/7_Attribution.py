"""Attribution: which component wrote the next-token logit (direct logit attribution), the target token
through the layers, and activation patching between a clean and a corrupted prompt."""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import streamlit as st  # noqa: E402

from app import inputs, state  # noqa: E402
from engram_interp.figures import attribution as figures  # noqa: E402
from engram_interp.errors import EngramInterpError  # noqa: E402

st.set_page_config(page_title="Attribution · engram-interp", layout="wide")
good = state.page_header(
    "Attribution",
    "Direct logit attribution: the final norm is frozen at its scale on the real final stream, so the logit of the "
    "target (minus the contrast's) splits exactly into what the embedding, each Engram layer, each attention layer "
    "and each FFN/MoE layer wrote at the last position; the bars add up to the model's own logit. Patching puts "
    "activations of the clean prompt into the corrupted one and shows how much of the clean logit difference returns.",
)
attribution = inputs.library("attribution", "Direct logit attribution")
patching = inputs.library("patching", "Activation patching")

chosen = state.pick_models(good, n=2, key="attr")
pair = state.load_pair(chosen)
if pair is None:
    st.stop()


@st.cache_data(max_entries=64, show_spinner="Attributing ...")
def dla(path: str, sha: str, label: str, text: str, target: str, contrast: str | None, per_expert: bool):
    model = state.model_for(path, sha)
    return attribution.direct_logit_attribution(model, text, target, contrast, per_expert=per_expert, name=label)


@st.cache_data(max_entries=64, show_spinner="Reading the target through the layers ...")
def trace(path: str, sha: str, label: str, text: str, target: str):
    return attribution.target_through_layers({label: state.model_for(path, sha)}, text, target)[0]


@st.cache_data(max_entries=32, show_spinner="Patching ...")
def patch(path: str, sha: str, label: str, clean: str, corrupt: str, target: str, contrast: str | None):
    return patching.patching(state.model_for(path, sha), clean, corrupt, target, contrast, name=label)


st.subheader("Direct logit attribution")
c1, c2, c3, c4 = st.columns([3, 1, 1, 1])
text = c1.text_input("Prompt", "Southern United", key="attr-text", max_chars=4000)
target = c2.text_input("Target token", " States", key="attr-target", help="one token, leading space included")
contrast = c3.text_input("Contrast token (optional)", " Kingdom", key="attr-contrast") or None
per_expert = c4.checkbox("per expert", key="attr-experts", help="split each MoE layer into its chosen routed experts and the shared experts")

cols = st.columns(len(pair.entries))
charts = [col.empty() for col in cols]  # each model drawn when it is done, all on one x range
notes = [col.empty() for col in cols]
done: list = []
traces = []
for i, (col, entry, model) in enumerate(zip(cols, pair.entries, pair.models)):
    try:
        a = dla(str(entry.path), entry.sha, entry.label, text, target, contrast,
                per_expert and bool(model.info.moe_layers))
        traces.append(trace(str(entry.path), entry.sha, entry.label, text, target))
    except EngramInterpError as exc:
        col.error(f"{entry.label}: {exc}")
        continue
    done.append((i, a))
    x_range = figures.dla_range([d for _, d in done])
    for j, d in done:
        charts[j].plotly_chart(figures.dla_figure(d, x_range), width="stretch", key=f"attr-dla-{j}-{len(done)}")
    notes[i].caption(f"p(target) = {a.probability:.4f}; sum of bars {a.total():+.4f} vs logit {a.logit:+.4f}; "
                     f"remainder (bias terms) {a.remainder:+.1e}. One prompt: no interval; the report's probe "
                     "section gives means with 95 % intervals over many prompts.")
if len(done) > 1:
    st.caption("Both charts share one x axis (logits), so bar lengths compare across models.")
if traces:
    st.subheader("Target through the layers")
    st.plotly_chart(figures.trace_figure(traces), width="stretch", key="attr-trace")

st.subheader("Activation patching")
labels = pair.labels
which = st.selectbox("Model", range(len(labels)), format_func=lambda i: labels[i], key="patch-model")
p1, p2 = st.columns(2)
clean = p1.text_input("Clean prompt", "Southern United", key="patch-clean", max_chars=4000)
corrupt = p2.text_input("Corrupted prompt (same number of tokens)", "Saviour Jesus", key="patch-corrupt", max_chars=4000)
p3, p4 = st.columns(2)
p_target = p3.text_input("Clean answer token", " States", key="patch-target")
p_contrast = p4.text_input("Corrupted answer token (optional)", " Christ", key="patch-contrast") or None
entry = pair.entries[which]
try:
    r = patch(str(entry.path), entry.sha, entry.label, clean, corrupt, p_target, p_contrast)
except EngramInterpError as exc:
    st.error(f"{entry.label}: {exc}")
    st.stop()
st.markdown(f"Metric: **{r.clean_metric:+.3f}** clean, **{r.corrupt_metric:+.3f}** corrupted (logits). "
            f"Full patch (first layer point{' + Engram hash ids' if pair.models[which].info.engram_layers else ''}) restores "
            f"**{r.full_patch:.3f}** (self-check, 1 by construction).")
if abs(r.clean_metric - r.corrupt_metric) < 1.0:
    st.warning("The clean and corrupted metrics differ by less than 1 logit: restored fractions are ratios of "
               "small numbers and swing widely. Pick prompts whose answers differ more.")
st.plotly_chart(figures.patch_grid_figure(r.residual), width="stretch", key="patch-grid")
st.plotly_chart(figures.patch_bars_figure(r.components), width="stretch", key="patch-bars")
for bars in r.components:
    if bars.note:
        st.info(f"{bars.kind} not patched: {bars.note}")
st.caption("The Engram lookup reads token ids, not the residual stream: patching the stream alone leaves an "
           "Engram model's memory reading the corrupted n-grams.")
