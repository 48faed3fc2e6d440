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
