"""Overview: the loaded checkpoints, their parameter accounting, and the four findings at a glance."""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:  # `streamlit run app/Home.py` puts only app/ on the path
    sys.path.insert(0, _ROOT)

import streamlit as st  # noqa: E402

from app.nav import page_names  # noqa: E402

st.set_page_config(page_title="engram-interp", page_icon=":material/memory:", layout="wide")
# the text first: it needs neither torch nor a model, so it is on screen while they load
st.title("Overview")
st.caption("Models with DeepSeek Engram conditional memory next to their baselines. "
           f"Pages (left sidebar): {', '.join(page_names())}.")

header = st.container()  # messages about checkpoints that cannot be opened
st.subheader("Loaded models")
st.caption(
    "Parameter accounting (docs/ENGRAM.md, section 6): P_tot excludes the token embedding and LM head; "
    "P_act = parameters used per token; rho = share of the sparse parameters held by routed experts "
    "(1 = pure MoE, empty for a dense model). Validation loss as recorded in the checkpoint's provenance."
)
models, files = st.empty(), st.empty()
st.subheader("Findings")
st.caption("Each finding states what was measured, against which controls (the untrained twin: same architecture, "
           "random weights; the Engram-null arm: same model, memory without content), with its 95% interval, and ends "
           "in the verdict of the same function as the verdicts below: \"not established\" where a control's interval "
           "or the noise band covers the difference, and always with one seed (docs/ANALYSES.md). Numbers appear once "
           "a page has computed them (cached on disk per checkpoint); the button also computes the twins.")
summary = st.container()
st.subheader("Verdicts on the bundled set")
st.caption("The same objects as checkpoints/FINDINGS.md (engram-interp findings on checkpoints/measurements/, "
           "re-measured by `bash checkpoints/measure.sh`): each finding's number per seed, the across-seed band of "
           "every arm, the Engram-null control and the verdict.")
verdicts = st.container()

# every heading and caption is on screen; now torch, the checkpoints and the cached results
from app import findings, state  # noqa: E402

with header:
    good = state.page_header("Overview", "", title_shown=True)
models.dataframe(findings.model_table(good), hide_index=True, width="stretch")
files.caption(findings.files_line(good))
with summary:
    if st.button("Compute the missing findings (default settings)", key="overview-compute"):
        findings.compute_all(good)
    findings.render_summary(good)
with verdicts:
    findings.render_verdicts()
