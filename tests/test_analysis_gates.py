"""Gate maps and n-gram aggregation against direct reads of the gate hooks."""

from __future__ import annotations

import pytest
import torch

from engram_interp.analysis import GateNgramAccumulator, gate_corpus, gate_map
from engram_interp.errors import EngramInterpError
from engram_interp.testing import tiny_model


def test_gate_map_matches_cache():
    model = tiny_model("mhc")
    text = "Alexander the Great"
    g = gate_map(model, text)
    _, cache = model.run_with_cache(model.to_tokens(text))
    for l in model.engram_layers:
        torch.testing.assert_close(torch.tensor(g.gates[l]), cache[f"blocks.{l}.engram.hook_gate"][0].float())
    assert len(g.tokens) == len(g.ngrams) and g.n_branches == 4
    assert g.ngrams[3][0] == g.tokens[2] + g.tokens[3]


def test_gate_map_needs_engram_and_text():
    with pytest.raises(EngramInterpError, match="no Engram"):
        gate_map(tiny_model("moe"), "hello")
    with pytest.raises(EngramInterpError, match="empty"):
        gate_map(tiny_model("engram"), "  ")


def test_ngram_accumulator_against_python_reference():
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(3, 8, (4, 12), generator=g)
    mask = torch.ones_like(tokens, dtype=torch.bool)
    mask[:, 0] = False
    mask[2, 9:] = False
    gates = torch.rand(4, 12, 2, generator=g)
    acc = GateNgramAccumulator(2, vocab_size=10)
    acc.update(tokens[:2], mask[:2], gates[:2])
    other = GateNgramAccumulator(2, vocab_size=10)
    other.update(tokens[2:], mask[2:], gates[2:])
    acc.merge_state(other.state_dict())
    ref: dict = {}
    for b in range(4):
        for t in range(12):
            for n in (2, 3):
                if t - n + 1 < 0 or not mask[b, t - n + 1:t + 1].all():
                    continue
                key = (n, tuple(tokens[b, t - n + 1:t + 1].tolist()))
                ref.setdefault(key, []).append(gates[b, t].double())
    assert len(ref) == len(acc.keys)
    for (n, ids), vals in ref.items():
        key = sum(v * 10 ** (n - 1 - i) for i, v in enumerate(ids))
        row = acc.index[(n, key)]
        assert acc.decode_key(n, key) == list(ids)
        v = torch.stack(vals)
        assert acc.count[row] == len(vals)
        torch.testing.assert_close(acc.sum[row], v.sum(0))
        torch.testing.assert_close(acc.max[row], v.max(0).values)


def test_gate_corpus_top_lists_and_ranking():
    model = tiny_model("engram")
    texts = ["The Milky Way is a galaxy. By the way, the Princess of Wales visited London."] * 3
    r = gate_corpus(model, texts, min_count=3, top_n=5)
    assert len(r.channels) == 2 and sorted(r.branch_ranking) == sorted(r.channels)
    top = r.top["1.0"]
    assert top and all(s.count >= 3 for s in top)
    assert [s.mean for s in top] == sorted([s.mean for s in top], reverse=True)
    assert r.bottom["1.0"][0].mean <= top[-1].mean
    assert all(0 < m < 1 for m in r.mean_gate)


def test_gate_corpus_and_cka_report_progress_in_tokens():
    """The app's progress bars: on_progress(done, budget, name) after each batch, done rising to the
    number of tokens actually analysed."""
    from engram_interp.analysis import cka_analysis
    from engram_interp.analysis.progress import count_tokens

    model = tiny_model("engram")
    texts = ["The Milky Way is a galaxy. By the way, the Princess of Wales visited London. " * 8] * 6
    budget = 700
    calls = []
    gate_corpus(model, texts, batch_size=1, max_tokens=budget, on_progress=lambda *a: calls.append(a))
    assert len(calls) > 1 and [c[0] for c in calls] == sorted(c[0] for c in calls)
    assert calls[-1][0] == count_tokens(model, texts, budget) and calls[-1][1] == budget
    calls.clear()
    cka_analysis(model, tiny_model("moe"), texts, batch_size=16, max_tokens=budget, text_batch_size=1, n_boot=5,
                 on_progress=lambda *a: calls.append(a))
    assert len(calls) > 1 and calls[-1][0] == count_tokens(model, texts, budget) and calls[-1][1] == budget
