"""What an edit did: efficacy, generalisation, specificity, collateral and rows changed, before / after.

Per fact (``edit.facts`` items) and in total, means over facts with a percentile-bootstrap 95 %
interval (resampling facts; held-out text: resampling windows; unrelated facts: resampling items):

* **efficacy**: the target ranked first among the fact's candidates by summed log-probability (no
  candidates: the target is the greedy continuation), and p(target) = exp(summed log-prob);
* **generalisation**: the same for each paraphrase (never trained on);
* **specificity**: neighbours (the fact's own ``neighbours``: gold answer still ranked first /
  greedy next token unchanged, and the KL of the next-token distribution); unrelated facts (suite
  items the edit did not name: accuracy before and after); held-out text loss before and after;
* **collateral**: held-out positions that read an edited row (the n-grams sharing the edited rows):
  how their next-token log-probability and distribution moved, against the positions that read none;
* **rows changed**: per layer / order / head, with the norms of old rows and offsets.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from engram_interp.analysis.resample import mean_replicates, percentile_ci
from engram_interp.edit.method import encode_pairs, sequence_scores
from engram_interp.edit.rows import EditRecord, applied

__all__ = ["evaluate_edit", "bootstrap"]


def bootstrap(values: Sequence[float], n_boot: int = 1000, seed: int = 0) -> dict:
    """``{mean, ci: [low, high], n}``: mean and percentile-bootstrap 95 % interval (None for n < 2)."""
    x = torch.tensor([float(v) for v in values], dtype=torch.float64)
    if x.numel() == 0:
        return {"mean": None, "ci": None, "n": 0}
    if x.numel() < 2:
        return {"mean": float(x.mean()), "ci": None, "n": 1}
    lo, hi = percentile_ci(mean_replicates(x, n_boot, seed))
    return {"mean": float(x.mean()), "ci": [float(lo), float(hi)], "n": int(x.numel())}


@torch.no_grad()
def _scores(model, pairs: list[tuple[str, str]], chunk: int = 64) -> torch.Tensor:
    out = [sequence_scores(model, *encode_pairs(model, pairs[i : i + chunk])) for i in range(0, len(pairs), chunk)]
    return torch.cat(out).double().cpu() if out else torch.zeros(0, dtype=torch.float64)


@torch.no_grad()
def _greedy(model, pairs: list[tuple[str, str]]) -> list[bool]:
    out = []
    for prompt, cont in pairs:
        tokens, starts, lens = encode_pairs(model, [(prompt, cont)])
        logits = model(tokens)[0]
        s, n = int(starts[0]), int(lens[0])
        out.append(bool((logits[s - 1 : s + n - 1].argmax(-1) == tokens[0, s : s + n]).all()))
    return out


def _queries(facts: Sequence[dict]) -> list[dict]:
    """Every question the evaluation asks: ``{fact, kind, prompt, answer, candidates}``; kind
    ``efficacy`` / ``paraphrase`` (answer: the target) or ``neighbour`` (answer: its own, if any)."""
    q = []
    for i, f in enumerate(facts):
        for kind, prompts in (("efficacy", [f["prompt"]]), ("paraphrase", f.get("paraphrases") or [])):
            q += [{"fact": i, "kind": kind, "prompt": p, "answer": f["target"], "candidates": f.get("candidates")} for p in prompts]
        for n in f.get("neighbours") or []:
            q.append({"fact": i, "kind": "neighbour", "prompt": n["prompt"], "answer": n.get("answer"),
                      "candidates": n.get("candidates")})
    return q


def _answer(model, queries: list[dict]) -> list[dict]:
    """Per query: ``{first, logprob}`` (answer ranked first / greedy; its summed log-prob) and ``next``:
    the next-token log-distribution after the prompt (for the neighbours' KL)."""
    pairs, spans = [], []
    for q in queries:
        if q["answer"] is None:
            spans.append(None)
            continue
        cands = q["candidates"] or [q["answer"]]
        spans.append((len(pairs), cands.index(q["answer"]) if q["answer"] in cands else 0, len(cands)))
        pairs += [(q["prompt"], c) for c in cands]
    scores = _scores(model, pairs)
    greedy = iter(_greedy(model, [(q["prompt"], q["answer"]) for q, sp in zip(queries, spans) if sp and sp[2] == 1]))
    out = []
    for q, span in zip(queries, spans):
        r = {"first": None, "logprob": None}
        if span is not None:
            s = scores[span[0] : span[0] + span[2]]
            r["logprob"] = float(s[span[1]])
            others = torch.cat([s[: span[1]], s[span[1] + 1 :]])
            r["first"] = bool(s[span[1]] > others.max()) if span[2] > 1 else next(greedy)
        out.append(r)
    nxt = [q["prompt"] for q in queries if q["kind"] == "neighbour"]
    if nxt:
        dists = iter(_next_logp(model, nxt))
        for q, r in zip(queries, out):
            if q["kind"] == "neighbour":
                r["next"] = next(dists)
    return out


@torch.no_grad()
def _next_logp(model, prompts: list[str]) -> list[torch.Tensor]:
    tokens = model.to_tokens(prompts)
    last = (tokens != model.info.pad_token_id).sum(1) - 1
    return list(F.log_softmax(model(tokens)[torch.arange(len(prompts)), last].double(), -1).cpu())


def _fact_rows(facts, queries, before, after) -> list[dict]:
    rows = [{"prompt": f["prompt"], "target": f["target"], **({"id": f["id"]} if "id" in f else {}),
             "efficacy_before": None, "efficacy_after": None, "p_before": None, "p_after": None,
             "paraphrases_before": [], "paraphrases_after": [], "neighbours": []} for f in facts]
    for q, b, a in zip(queries, before, after):
        r = rows[q["fact"]]
        if q["kind"] == "efficacy":
            r.update(efficacy_before=b["first"], efficacy_after=a["first"],
                     p_before=float(torch.tensor(b["logprob"]).exp()), p_after=float(torch.tensor(a["logprob"]).exp()))
        elif q["kind"] == "paraphrase":
            r["paraphrases_before"].append(b["first"])
            r["paraphrases_after"].append(a["first"])
        else:
            kl = float((b["next"].exp() * (b["next"] - a["next"])).sum())
            same_top = int(b["next"].argmax()) == int(a["next"].argmax())
            r["neighbours"].append({"prompt": q["prompt"], "answer": q["answer"], "first_before": b["first"],
                                    "first_after": a["first"], "kl": kl, "top1_kept": same_top,
                                    "kept": (b["first"] == a["first"]) if b["first"] is not None else same_top})
    return rows


def _mean(xs) -> float | None:
    xs = [float(x) for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def evaluate_edit(model, facts: Sequence[dict], record: EditRecord, *, unrelated: Sequence[dict] = (),
                  texts: Sequence[str] = (), max_tokens: int = 4000, per_row: int = 3, n_boot: int = 1000,
                  seed: int = 0) -> dict:
    """Everything above as one JSON-ready dict: ``{facts: [per fact], total: {efficacy, p_target,
    generalisation, neighbours_kept, neighbour_kl (each before / after with bootstrap intervals)},
    unrelated, heldout, collateral, rows}``. The model is measured as it is, then with ``record``
    applied (and reverted afterwards). Log-probabilities in nats, p in 0..1."""
    from engram_interp.edit.collateral import heldout_effect, rows_summary, unrelated_effect

    queries = _queries(facts)
    before = _answer(model, queries)
    with applied(model, record):
        after = _answer(model, queries)
    rows = _fact_rows(facts, queries, before, after)
    for r in rows:
        r["generalisation_before"] = _mean(r["paraphrases_before"])
        r["generalisation_after"] = _mean(r["paraphrases_after"])
        r["neighbours_kept"] = _mean(n["kept"] for n in r["neighbours"])

    def stat(key):
        return bootstrap([r[key] for r in rows if r[key] is not None], n_boot, seed)

    kl = [_mean(n["kl"] for n in r["neighbours"]) for r in rows]
    total = {"n_facts": len(rows),
             "efficacy": {"before": stat("efficacy_before"), "after": stat("efficacy_after")},
             "p_target": {"before": stat("p_before"), "after": stat("p_after")},
             "generalisation": {"before": stat("generalisation_before"), "after": stat("generalisation_after")},
             "neighbours_kept": stat("neighbours_kept"),
             "neighbour_kl": bootstrap([k for k in kl if k is not None], n_boot, seed)}
    named = {f["prompt"] for f in facts} | {p for f in facts for p in f.get("paraphrases") or []} | \
        {n["prompt"] for f in facts for n in f.get("neighbours") or []}
    return {"facts": rows, "total": total,
            "unrelated": unrelated_effect(model, [it for it in unrelated if it["prompt"] not in named], record, n_boot, seed),
            **heldout_effect(model, texts, record, max_tokens=max_tokens, per_row=per_row, n_boot=n_boot, seed=seed),
            "rows": rows_summary(model, record)}
