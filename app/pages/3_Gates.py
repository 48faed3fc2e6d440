"""Gates: the Engram gate alpha_t per token, Engram layer and branch; n-gram tables over a corpus."""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import streamlit as st  # noqa: E402

from app import inputs, results, state  # noqa: E402
from engram_interp import figures  # noqa: E402
from engram_interp.errors import EngramInterpError  # noqa: E402

st.set_page_config(page_title="Gates · engram-interp", layout="wide")
good = state.page_header(
    "Gates",
    "alpha_t in (0, 1) decides how much of the retrieved n-gram memory enters the residual stream "
    "(one value per token, Engram layer and residual branch). The paper finds gates fire at the last token "
    "of multi-token entities and formulaic phrases.",
)
engram_entries = state.engram_entries(good, "it has no gates to show.")
labels = [e.label for e in engram_entries]
entry = engram_entries[st.selectbox("Model", range(len(labels)), format_func=lambda i: labels[i], key="gates-model")]
model = state.load_model(entry)
if model is None:
    st.stop()

st.subheader("Your text")
text = st.text_area("Text", "Alexander the Great met the Princess of Wales. By the way, the Milky Way is a galaxy.",
                    key="gates-text", max_chars=20000)
gates_lib = inputs.library("gates", "The gate analysis")


@st.cache_data(max_entries=32, show_spinner="Running the model on the text ...")
def gate_map(path: str, sha: str, text: str) -> dict:
    return gates_lib.gate_map(state.model_for(path, sha), text).to_dict()


if state.tokens_or_error(model, text, entry.label) is not None:
    try:
        gm = gate_map(str(entry.path), entry.sha, text)
    except EngramInterpError as exc:
        st.error(str(exc))
        st.stop()
    st.plotly_chart(figures.gate_figure(results.gate_map_result(gm)), width="stretch")
    st.caption("Hover a cell for the 2- and 3-gram that ends at that token and the gate value.")

st.subheader("Corpus: n-grams by mean gate")
results.gate_tables(entry)
