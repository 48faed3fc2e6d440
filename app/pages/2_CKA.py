"""CKA: minibatch unbiased linear CKA between the layers of an Engram model and a baseline."""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402
import torch  # noqa: E402

from app import results, state, summaries  # noqa: E402
from engram_interp import figures  # noqa: E402
from engram_interp.analysis.alignment import alignment_verdicts  # noqa: E402
from engram_interp.claims.sentences import alignment_sentence  # noqa: E402
from engram_interp.analysis.cka import cka_argmax, default_k, soft_alignment, soft_alignment_range  # noqa: E402
from engram_interp.errors import EngramInterpError  # noqa: E402

st.set_page_config(page_title="CKA · engram-interp", layout="wide")
good = state.page_header(
    "CKA",
    "Minibatch unbiased linear CKA (Song et al. 2012; Nguyen et al. 2021) between the residual stream entering "
    "every block of model A (rows) and of model B (columns). Red: soft alignment index a_j (top-k weighted mean "
    "of B's layer index, paper eq. 9); a_j above the diagonal means A's layer j looks like a deeper layer of B. "
    "Intervals: percentile bootstrap over minibatches.",
)
chosen = state.pick_models(good, n=2, key="cka")
c1, c2, c3 = st.columns(3)
tokens = c1.radio("Tokens", ["entities", "all"], key="cka-tokens", horizontal=True,
                  format_func={"entities": "named-entity final tokens", "all": "all tokens (BOS dropped)"}.get)
n_examples = c2.select_slider("Examples (token positions)", results.token_options([256, 512, 1024, 2048, 8192]),
                              value=results.CKA_DEFAULTS["n_examples"], key="cka-n")
n_points_b = results.shape(chosen[-1])[0] + 1
k_choice = c3.slider("k (soft alignment)", 1, min(10, n_points_b), default_k(n_points_b), key="cka-k",
              help=f"Default: about 1/6 of {chosen[-1].label}'s {n_points_b} layer points. Intervals and the "
                   "comparison with the Engram-null control are computed for the default k.")
if chosen[0].path == chosen[-1].path:
    st.info("Model A and B are the same checkpoint: the matrix is A's self-similarity.")

pair = state.load_pair(chosen)
if pair is None:
    st.stop()
params = dict(results.CKA_DEFAULTS, tokens=tokens, n_examples=int(n_examples))
a, b = pair.entries
view = st.empty()  # A vs B as soon as it is computed; again with the references when they are


def draw(res: dict, stage: str) -> None:
    """The CKA figure, sentences and table of ``res``; ``stage`` "first" (A vs B, references still being
    computed) or "final"."""
    with view.container():
        if stage == "first":
            st.info("A vs B is shown; the references (Engram-null control, untrained twin, second seed) are being "
                    "computed below, and the verdicts come with them.")
        matrix = torch.tensor(res["cka"], dtype=torch.float64)
        low, high = (torch.tensor(res[key], dtype=torch.float64) for key in ("ci_low", "ci_high"))
        k = min(k_choice, matrix.shape[1])
        if k == res["k"]:  # the stored index comes with its bootstrap interval
            align = torch.tensor([float("nan") if v is None else v for v in res["soft_alignment"]], dtype=torch.float64)
            align_ci = res["soft_alignment_ci"]
        else:
            align, align_ci = soft_alignment(matrix, k=k), None
        argmax = cka_argmax(matrix)
        st.caption(f"{res['n_examples']} token positions ({res['tokens']}) in {res['n_batches']} minibatches of "
                   f"{res['batch_size']} · data: {res['source']} · layer point l = stream entering block l, last = output")
        engram_layers = list(res.get("engram_layers_a") or [])
        st.plotly_chart(figures.cka_figure(results.cka_result(res)), width="stretch", key=f"cka-fig-{stage}")
        lo_k, hi_k = soft_alignment_range(k, matrix.shape[1])
        st.caption(f"With k = {k} of {matrix.shape[1]} layer points the index can only lie between {lo_k:.1f} and {hi_k:.1f} "
                   "while the top-k CKA values are about equal (a weighted mean of k distinct layer indices), so "
                   "a_j > j at shallow layers holds by construction. A shift counts only against the same index of "
                   "the Engram-null control (and of a second baseline seed, when one is loaded); see docs/ANALYSES.md section 2.")
        refs = res.get("references") or {}
        if k == res["k"] and engram_layers and stage == "final":
            for v in alignment_verdicts(res):
                st.markdown("- " + state.md(alignment_sentence(v, a.label, b.label, res["k"], res.get("n_batches")).sentence))
            if "control" not in refs:
                st.info("No Engram-null control is loaded, so no shift can be established: open the app with the "
                        "Engram-null checkpoint too (`engram-interp app engram.ckpt moe.ckpt engram-null.ckpt`).")
        rows = []
        for j in range(matrix.shape[0]):
            d = min(j, matrix.shape[1] - 1)
            ci = "" if align_ci is None or align_ci[0][j] is None else f" [{align_ci[0][j]:.2f}, {align_ci[1][j]:.2f}]"
            ref_cols = {}
            if k == res["k"]:
                for kind, r in sorted(refs.items()):
                    rci = r["soft_alignment_ci"]
                    val = r["soft_alignment"][j] if j < len(r["soft_alignment"]) else None
                    ref_cols[f"{kind} a_j"] = ("n/a" if val is None else f"{val:.2f}"
                                                        + ("" if rci[0][j] is None else f" [{rci[0][j]:.2f}, {rci[1][j]:.2f}]"))
            rows.append({
                "layer": j,
                "Engram": "yes" if j in engram_layers else "",
                f"a_j (k={k}) [95% CI]": f"{float(align[j]):.2f}{ci}",
                **ref_cols,
                "a_j - j": round(float(align[j]) - j, 2),
                "argmax": int(argmax[j]),
                "CKA diagonal [95% CI]": summaries.fmt_ci(float(matrix[j, d]), float(low[j, d]), float(high[j, d]), 3),
                "CKA max [95% CI]": summaries.fmt_ci(float(matrix[j, argmax[j]]), float(low[j, argmax[j]]),
                                                   float(high[j, argmax[j]]), 3),
            })
        # short headers: the table fits at 1400 px; who each reference is goes in the caption
        narrow = {c: st.column_config.Column(width="small") for c in ("layer", "Engram", "a_j - j", "argmax")}
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", key=f"cka-table-{stage}", column_config=narrow)
        st.caption(f"Rows: {a.label}'s layer points; a_j: soft alignment index (in {b.label} layer units)"
                   + "".join(f"; {kind} a_j: {r['name']} vs {b.label}" for kind, r in sorted(refs.items()) if k == res["k"])
                   + "; argmax: the best-matching layer of " + b.label + ".")
        if not a.has_engram:
            st.info(f"{a.label} has no Engram layers; pick an Engram model as A to see where its Engram layers align.")


try:
    wanted = set(results.reference_entries(a, b, good))
    res = results.cka_with_references(a, b, good, params, compute=False)
    if res is None or set(res["references"]) != wanted:
        if wanted:  # A vs B alone first, drawn at once; the references follow in one pass (B runs once more)
            first = results.cka(pair, params)
            if first and "cka" in first:
                draw(dict(first, references=(res or {}).get("references", {})), "first")
        res = results.cka_with_references(a, b, good, params)
except EngramInterpError as exc:
    st.error(str(exc))
    if tokens == "entities":
        st.info("Switch 'Tokens' to 'all tokens', or add the named-entity probe set `probes/entities_ner.jsonl`.")
    st.stop()
if res is None:
    st.stop()
draw(res, "final")
