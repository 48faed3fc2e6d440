"""LogitLens: KL(p_final || q_l) per layer for every loaded model, and a per-token view of free text."""

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

st.set_page_config(page_title="LogitLens · engram-interp", layout="wide")
good = state.page_header(
    "LogitLens",
    "q_l = softmax(W_U · FinalNorm(h_l)) with the final norm's statistics recomputed on h_l (and the mHC "
    "readout applied); KL(p_final || q_l) in nats, averaged over tokens. Lower KL = the prediction is ready "
    "earlier. The last point is the model's own output (KL ~ 0, a self-check).",
)
lens = inputs.library("logit_lens", "The LogitLens analysis")

st.subheader("KL per layer, all loaded models")
max_tokens = st.select_slider("Tokens", results.token_options([1024, 2048, 8192, 16384]), value=results.LENS_DEFAULTS["max_tokens"],
                              key="lens-tokens")
params = dict(results.LENS_DEFAULTS, max_tokens=int(max_tokens))
corpus = st.container()  # filled last, one curve per model as it is done: the text view below is usable meanwhile


@st.cache_data(max_entries=32, show_spinner="Running the LogitLens on the text ...")
def token_lens(path: str, sha: str, text: str) -> dict:
    return lens.logit_lens_tokens(state.model_for(path, sha), text, top_k=5).to_dict()


def text_view() -> None:
    """Layer x token heatmaps of free text for two picked models (fast: one forward each)."""
    chosen = state.pick_models(good, n=2, key="lens")
    pair = state.load_pair(chosen)
    if pair is None:
        return
    text = st.text_area("Text", "Alexander the Great was a king of Macedon. The Milky Way is a galaxy.", key="lens-text",
                        max_chars=20000)
    shown = {}
    for entry, model in zip(pair.entries, pair.models):
        if state.tokens_or_error(model, text, entry.label) is None:
            continue
        try:
            shown[entry.label] = (entry, token_lens(str(entry.path), entry.sha, text))
        except EngramInterpError as exc:
            st.error(f"{entry.label}: {exc}")
    zmax = figures.shared_kl_max([lens.TokenLens(**tl) for _, tl in shown.values()]) if shown else None
    log = figures.shared_kl_log([lens.TokenLens(**tl) for _, tl in shown.values()]) if shown else None  # one scale
    if len(shown) > 1:
        st.caption(f"One colour scale for both models: 0 to {zmax:.2f} nats.")
    cols = st.columns(len(shown) or 1)
    for col, (label, (entry, tl)) in zip(cols, shown.items()):
        with col:
            st.markdown(f"#### {entry.label} · {entry.kind}")
            st.plotly_chart(figures.token_lens_figure(lens.TokenLens(**tl), zmax=zmax, text=text, log=log), width="stretch",
                            key=f"lens-{entry.label}")
            final = [cell[0][0] if cell else "" for cell in tl["top_tokens"][-1]]
            st.caption("Hover a cell for the lens's top-5 tokens. Final prediction per position: "
                       + " ".join(f"{t!r}" for t in final[-12:]))


st.subheader("Your text: layer x token")
text_view()

with corpus:
    kl_chart, kl_note = st.empty(), st.empty()

    def draw(curves: list[dict]) -> None:
        kl_chart.plotly_chart(figures.kl_figure(results.lens_result(curves)), width="stretch", key=f"lens-kl-{len(curves)}")
        kl_note.caption("Data: " + "; ".join(sorted({c.get("source", "?") for c in curves}))
                        + ". Bars: 95% interval (1.96 SEM over tokens)."
                        + ("" if len(curves) == len(good) else f" {len(curves)} of {len(good)} models so far."))

    try:
        results.lens_curves(good, params, on_curve=draw)
    except EngramInterpError as exc:
        st.error(str(exc))
