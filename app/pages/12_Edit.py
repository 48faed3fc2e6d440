"""Edit: write one fact into an Engram model's table rows and see before / after: efficacy, paraphrases,
neighbours, held-out loss, and the held-out n-grams that share the edited rows. The edit lives only for
the measurement (the shared model is reverted); `engram-interp edit` writes a new checkpoint."""

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

st.set_page_config(page_title="Edit · engram-interp", layout="wide")
good = state.page_header(
    "Edit",
    "Write a fact into the Engram table rows only: a few steps of norm-bounded gradient descent on the rows the "
    "prompt reads where the target is predicted (docs/EDIT.md). Before / after for the fact, its paraphrases and "
    "neighbours, held-out text, and the held-out positions that read an edited row. The page reverts the edit "
    "after measuring; `engram-interp edit MODEL --facts F --out NEW.ckpt` writes an edited checkpoint.",
)
entry = state.pick_models(state.engram_entries(good, "there are no table rows to edit."), n=1, key="edit")[0]
if state.load_model(entry) is None:
    st.stop()


def _lines(text: str) -> list[str]:
    return [t for t in (x.strip("\n") for x in text.splitlines()) if t.strip()]


@st.cache_data(max_entries=16, show_spinner="Editing the rows and measuring ...")
def run(path: str, sha: str, fact: dict, steps: int, bound: float, max_tokens: int):
    from engram_interp.edit import edit_and_evaluate
    from engram_interp.edit.facts import check_fact
    from engram_interp.edit.method import EditConfig

    texts = inputs.corpus_texts()[0]
    return edit_and_evaluate(state.model_for(path, sha), [check_fact(fact, "the fact")], EditConfig(steps=steps, bound=bound),
                             texts=texts, max_tokens=max_tokens)


c1, c2 = st.columns([3, 1])
prompt = c1.text_input("Prompt", "The capital of France is", key="edit-prompt", max_chars=2000)
target = c2.text_input("Target", " Rome", key="edit-target", help="the continuation to write, leading space included")
c3, c4, c5 = st.columns(3)
cands = c3.text_area("Candidates (one per line, optional)", " Rome\n Paris\n London", key="edit-cands")
paras = c4.text_area("Paraphrases (one per line)", "The French capital is", key="edit-paras")
neigh = c5.text_area("Neighbours: prompts that must not move", "The capital of Spain is", key="edit-neigh")
c6, c7, c8 = st.columns(3)
steps = c6.slider("Most steps", 5, 100, 40, key="edit-steps")
bound = c7.slider("Bound (median row norms)", 0.25, 4.0, 2.0, 0.25, key="edit-bound")
max_tokens = c8.select_slider("Held-out tokens", [500, 1000, 2000, 4000], value=1000, key="edit-tokens")
fact = {"prompt": prompt, "target": target, "paraphrases": _lines(paras), "neighbours": _lines(neigh)}
if _lines(cands):
    fact["candidates"] = _lines(cands)
try:
    res = run(str(entry.path), entry.sha, fact, steps, bound, max_tokens)
except EngramInterpError as exc:
    st.error(f"{entry.label}: {exc}")
    st.stop()

r, rows = res["facts"][0], res["rows"]
st.markdown(f"**{rows['n_rows']}** table rows changed ({100 * rows['table_fraction']:.2f} % of the tables) in "
            f"**{res['trace']['steps']}** steps" + ("" if res["trace"]["converged"] else " (stopping rule not met)") + ".")
before_after = [{"question": "target ranked first" + (" among the candidates" if "candidates" in fact else " (greedy)"),
                 "before": r["efficacy_before"], "after": r["efficacy_after"]},
                {"question": "p(target)", "before": r["p_before"], "after": r["p_after"]}]
before_after += [{"question": f"paraphrase: {p!r}", "before": b, "after": a}
                 for p, b, a in zip(fact["paraphrases"], r["paraphrases_before"], r["paraphrases_after"])]
before_after += [{"question": f"neighbour keeps its next token: {n['prompt']!r}", "before": True, "after": n["top1_kept"]}
                 for n in r["neighbours"]]
st.dataframe(pd.DataFrame(before_after).astype(str), hide_index=True, width="stretch")
h = res["heldout"]
if h:
    st.markdown(f"Held-out loss over {h['tokens']} tokens: **{h['loss_before']:.4f} -> {h['loss_after']:.4f}** nats.")
    c = res["collateral"]
    st.subheader("Collateral: held-out positions that read an edited row")
    st.dataframe(pd.DataFrame([{"positions": k, "n": c[k]["positions"], "change of log p": c[k]["logprob_change"]["mean"],
                                "KL": c[k]["kl"]["mean"], "top-1 changed": c[k]["top1_changed"]["mean"]}
                               for k in ("touched", "untouched")]), hide_index=True, width="stretch")
    st.dataframe(pd.DataFrame([{"row": f"L{x['layer']}.n{x['order']}.h{x['head']}:{x['row']}", "positions": x["positions"],
                                "change of log p": x["logprob_change"],
                                "n-grams": ", ".join(f"{g['text']!r} ({g['count']})" for g in x["ngrams"])}
                               for x in c["rows"]]), hide_index=True, width="stretch")
st.caption("One fact: no interval (the CLI gives bootstrap intervals over facts). Collateral counts only the "
           "positions that read an edited row directly; others move too through attention and the short conv.")
