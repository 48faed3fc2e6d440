"""Routing: how the MoE layers of each model route (load balance, router entropy, top-expert consistency
within suffix bigrams), and whether the tokens an Engram gate opens on go to other experts."""

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

st.set_page_config(page_title="Routing · engram-interp", layout="wide")
good = state.page_header(
    "Routing",
    "Per MoE layer: how evenly the experts are chosen (balance), how undecided the router is (entropy; both over "
    "log experts, 1 = uniform), how often the tokens ending the same bigram go to the same top expert next to the "
    "same with the experts shuffled, and the Jensen-Shannon divergence between the expert shares of gate-weighted "
    "and (1 - gate)-weighted tokens. A model without Engram is split by the Engram model's gate on the same tokens.",
)
routing_lib = inputs.library("routing", "Routing")
moe = [e for e in good if e.kind in ("moe", "engram", "engram-null") or (e.model_info is not None and e.model_info.moe_layers)]
if not moe:
    st.info("No loaded model has mixture-of-experts layers: there is no routing to show.")
    st.stop()
labels = [e.label for e in moe]
chosen = st.multiselect("Models", labels, default=labels[:3], key="routing-models")
max_tokens = st.select_slider("Tokens", [1000, 2000, 5000, 10000, 20000], value=2000, key="routing-tokens")
entries = [e for e in moe if e.label in chosen]
gate_entry = next((e for e in entries if e.has_engram), None)


@st.cache_data(max_entries=32, show_spinner=False)
def run(path: str, sha: str, label: str, gate_path: str | None, gate_sha: str | None, max_tokens: int) -> dict:
    model = state.model_for(path, sha)
    gate = None if gate_path is None else state.model_for(gate_path, gate_sha)
    texts = inputs.corpus_texts()[0]
    return routing_lib.routing({label: model}, texts, gate_from=gate, max_tokens=max_tokens).to_dict()["models"][0]


from engram_interp.figures.routing import routing_figure  # noqa: E402

figure, status = st.empty(), st.empty()
done: list[dict] = []
for i, e in enumerate(entries):  # each model is drawn as soon as it is computed
    if state.load_model(e) is None:
        continue
    status.caption(f"computing {e.label} ({i + 1} of {len(entries)}) ...")
    try:
        done.append(run(str(e.path), e.sha, e.label, None if gate_entry is None else str(gate_entry.path),
                        None if gate_entry is None else gate_entry.sha, max_tokens))
    except EngramInterpError as exc:
        st.error(f"{e.label}: {exc}")
        continue
    figure.plotly_chart(routing_figure({"models": done}), width="stretch", key=f"routing-fig-{len(done)}")
status.empty()
if done:
    rows = [{"model": m["name"], "layer": x["layer"], "balance": x["balance"], "router entropy": x["router_entropy"],
             "consistency": x["consistency"], "shuffled": x["consistency_shuffled"], "bigrams": x["n_bigrams"],
             "gate JS": x["gate_js"], "gate JS 95%": None if not x["gate_js_ci"] else f"[{x['gate_js_ci'][0]:.4f}, {x['gate_js_ci'][1]:.4f}]"}
            for m in done for x in m["layers"]]
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    st.caption("One seed; the CLI's `engram-interp routing ... --twin` states the finding against the untrained twin "
               "(docs/ANALYSES.md, 'Routing').")
