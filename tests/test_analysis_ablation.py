"""Ablation: MoE baseline retains exactly 100%; suppressing Engram changes an Engram model's scores."""

from __future__ import annotations

import pytest
import torch

from engram_interp.analysis import AblationAccumulator, ablation_sensitivity, score_items
from engram_interp.errors import EngramInterpError
from engram_interp.testing import tiny_model

PROMPTS = ["Alexander the", "The Milky", "By the way, the", "The capital of France", "It was the best of",
           "Once upon a time there", "Water boils at one", "The capital of Italy is", "New York, new",
           "Café, cafe and", "the grapes were", "said the"]


def self_items(model):
    """Answers = the model's own greedy next token (full score 1.0 by construction); prompts whose
    argmax token does not survive decode -> encode (a partial UTF-8 byte) are skipped."""
    items = []
    for i, p in enumerate(PROMPTS):
        with torch.no_grad():
            nxt = int(model(model.to_tokens(p))[0, -1].argmax())
        ans = model.tokenizer.decode([nxt])
        if model.tokenizer.encode(ans, add_special_tokens=False).ids == [nxt]:
            items.append({"id": str(i), "prompt": p, "answer": ans, "candidates": None})
    assert len(items) >= 6
    return items


def test_moe_retains_exactly_100_and_engram_changes():
    engram, moe = tiny_model("engram"), tiny_model("moe", seed=1)
    suites = {"self_engram": self_items(engram), "self_moe": self_items(moe)}
    res = ablation_sensitivity({"engram": engram, "moe": moe}, suites, n_boot=200)
    m_moe = res.models[1]["suites"]
    for s in m_moe.values():
        assert s.ablated == s.full
    assert m_moe["self_moe"].full == 1.0
    assert m_moe["self_moe"].retained == 100.0 and m_moe["self_moe"].ci == [100.0, 100.0]
    e = res.models[0]["suites"]["self_engram"]
    assert e.full == 1.0
    assert e.ablated < 1.0  # suppressing Y at both layers changes greedy predictions
    assert set(e.per_layer) == {"1", "2"}
    lo, hi = e.ci
    assert lo <= e.retained <= hi
    d = res.to_dict()
    assert set(d["suites"]["self_engram"]) >= {"full", "ablated", "retained", "ci"}


def test_mean_ablation_differs_from_zero():
    engram = tiny_model("engram")
    suites = {"s": self_items(engram)}
    z = ablation_sensitivity(engram, suites, mode="zero", per_layer=False, n_boot=50)
    m = ablation_sensitivity(engram, suites, mode="mean", reference_texts=PROMPTS, per_layer=False, n_boot=50)
    assert m.suites["s"].full == z.suites["s"].full == 1.0
    assert 0 <= m.suites["s"].ablated <= 1
    with pytest.raises(EngramInterpError):
        ablation_sensitivity(engram, suites, mode="mean")


def test_candidate_scoring_by_summed_logprob():
    model = tiny_model("engram")
    items = [{"id": "0", "prompt": "The capital of France is", "answer": " Paris", "candidates": [" Paris", " Rome"]}]
    tok = model.to_tokens("The capital of France is Paris")
    prompt_len = model.to_tokens("The capital of France is").shape[1]
    with torch.no_grad():
        def lp(text):
            t = model.to_tokens(text)
            logp = torch.log_softmax(model(t)[0].float(), -1)
            return sum(float(logp[i - 1, t[0, i]]) for i in range(prompt_len, t.shape[1]))
        expected = float(lp("The capital of France is Paris") > lp("The capital of France is Rome"))
    assert score_items(model, items)[0].item() == expected
    assert tok.shape[1] > prompt_len


def test_ablation_accumulator_sharding_invariant():
    full = torch.tensor([1, 1, 0, 1, 1, 0, 1, 1.0])
    abl = torch.tensor([0, 1, 0, 1, 0, 0, 1, 0.0])
    one = AblationAccumulator(300, seed=3)
    one.update(full, abl)
    a, b = AblationAccumulator(300, seed=3), AblationAccumulator(300, seed=3)
    a.update(full[:5], abl[:5], first_index=0)
    b.update(full[5:], abl[5:], first_index=5)
    a.sums += b.sums
    a.boot += b.boot
    assert a.result() == one.result()
    assert one.result()["retained"] == pytest.approx(100 * 3 / 6)


# ---- packed scoring == the per-pair scoring it replaced ------------------------------------------
def reference_scores(model, items, batch_size=16):
    """The scoring the packed engine replaced, kept as the reference: every (prompt, continuation)
    pair in its own padded row, candidates flattened, full logits, rules applied per row."""
    import torch.nn.functional as F

    def pack(pairs):
        seqs, spans = [], []
        for prompt, cont in pairs:
            p = [model.info.bos_token_id] + model.encode(prompt)
            c = model.encode(cont)
            seq = (p + c)[-model.info.max_seq_len:]
            seqs.append(seq)
            spans.append((len(seq) - len(c), len(seq)))
        out = torch.full((len(seqs), max(map(len, seqs))), model.info.pad_token_id, dtype=torch.long)
        for i, s in enumerate(seqs):
            out[i, : len(s)] = torch.tensor(s)
        return out, spans

    scores = torch.zeros(len(items), dtype=torch.float64)
    logps = {}
    with torch.no_grad():
        for i, it in enumerate(items):
            if not it.get("candidates"):
                tokens, [(s, e)] = pack([(it["prompt"], it["answer"])])
                pred = model(tokens).argmax(-1)
                scores[i] = float(bool((pred[0, s - 1:e - 1] == tokens[0, s:e]).all()))
                continue
            tokens, spans = pack([(it["prompt"], c) for c in it["candidates"]])
            logp = F.log_softmax(model(tokens).float(), dim=-1)
            lp = torch.stack([logp[r, s - 1:e - 1].gather(-1, tokens[r, s:e, None]).sum() for r, (s, e) in enumerate(spans)])
            logps[i] = lp
            a = it["candidates"].index(it["answer"])
            others = torch.cat([lp[:a], lp[a + 1:]])
            scores[i] = float(others.numel() == 0 or bool(lp[a] > others.max()))
    return scores, logps


def mixed_items(model, n=24, seed=0):
    """Generation and multiple-choice items whose candidates share prefixes (one-token candidates,
    candidates that extend one another, repeated prompts, a prompt longer than the context), with
    the gold answer set to the model's own best candidate for about half of them."""
    import random

    rng = random.Random(seed)
    words = [" the", " Paris", " Rome", " king", " of", " Mac", " Macedon", " galaxy", " Wales", " times",
             " grapes", " fox", " sour", " New", " York", " capital"]
    items = []
    for i in range(n):
        prompt = " ".join(rng.choice(PROMPTS) for _ in range(rng.randint(1, 3)))
        if i == 0:
            prompt = " ".join(PROMPTS * 8)  # longer than max_seq_len: left-truncated like the reference
        if i % 3 == 0:
            ans = "".join(rng.choice(words) for _ in range(rng.randint(1, 4)))
            items.append({"id": str(i), "prompt": prompt, "answer": ans})
            continue
        cands = rng.sample(words, rng.randint(1, 5))
        if i % 4 == 1:
            cands.append(cands[0] + rng.choice(words))  # a candidate extending another
        items.append({"id": str(i), "prompt": prompt, "answer": rng.choice(cands), "candidates": cands})
    items.append(dict(items[1], id="dup"))  # the same prompt twice
    return items


@pytest.mark.parametrize("kind", ["engram", "mhc"])
def test_packed_scoring_equals_per_pair_reference(kind):
    from engram_interp.analysis.scoring import _point_scores, plan_scoring

    model = tiny_model(kind)
    items = mixed_items(model)
    # gold = the model's own best candidate for every other ranked item: those score 1 by construction
    _, logps = reference_scores(model, items)
    for i, lp in logps.items():
        if i % 2 == 0:
            items[i]["answer"] = items[i]["candidates"][int(lp.argmax())]
    for it in items[:6]:  # and greedy answers the model reproduces
        if not it.get("candidates"):
            with torch.no_grad():
                ids = torch.tensor([([model.info.bos_token_id] + model.encode(it["prompt"]))[-255:]])
                nxt = int(model(ids)[0, -1].argmax())
            ans = model.decode_token(nxt)
            if ans.startswith(" ") and model.encode(ans) == [nxt]:
                it["answer"] = ans
    ref, logps = reference_scores(model, items)
    plan = plan_scoring(model, items, batch_size=2)
    assert plan.n_forwards > 1 and len(plan.rows) < sum(len(it.get("candidates") or [0]) for it in items)
    from engram_interp.analysis.scoring import run_plan

    got = run_plan(model, plan)
    assert got.tolist() == ref.tolist()
    assert 0 < ref.sum() < len(items)  # both outcomes occur, so the comparison can fail
    # summed log-probs per candidate agree with the reference to float rounding
    lp, _ = _point_scores(model, plan, None)
    cont_lp = torch.zeros(len(plan.cont_item), dtype=torch.float64).index_add_(0, plan.point_cont, lp.double())
    flat_ref = torch.cat([logps[i] if i in logps else torch.zeros(0) for i in range(len(items))]).double()
    ranked = plan.item_ranked[plan.cont_item]
    assert torch.allclose(cont_lp[ranked], flat_ref, atol=1e-4, rtol=0)
    # and under an intervention (the variant runs of the ablation)
    if model.engram_layers:
        with model.engram_suppressed():
            assert run_plan(model, plan).tolist() == reference_scores(model, items)[0].tolist()


def test_ablation_per_variant_scores_match_reference():
    model = tiny_model("engram")
    items = self_items(model)[:4] + mixed_items(model, n=8, seed=1)
    suites = {"a": items[:5], "b": items[5:]}
    res = ablation_sensitivity(model, suites, n_boot=50)
    for name, part in suites.items():
        full = reference_scores(model, part)[0]
        with model.engram_suppressed():
            off = reference_scores(model, part)[0]
        with model.engram_suppressed(layers=[2]):
            off2 = reference_scores(model, part)[0]
        s = res.suites[name]
        assert s.full == pytest.approx(full.mean().item()) and s.ablated == pytest.approx(off.mean().item())
        assert s.per_layer["2"]["ablated"] == pytest.approx(off2.mean().item())
