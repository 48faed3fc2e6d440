"""The gate selectivity's permutation test (issue 20 item 2): enough shuffles, p never below 1/(B+1),
exact when the relabellings are few, no "tracks n-grams" at p > alpha or on too few n-grams."""

from __future__ import annotations

import itertools

import pytest
import torch

from engram_interp.analysis.gates import ALPHA, MIN_GROUPS, PERMUTATIONS, GateNgramAccumulator


def _acc(tokens, gates, n_perm=PERMUTATIONS, batch=4):
    acc = GateNgramAccumulator(gates.shape[-1], int(tokens.max()) + 1, orders=(3,), n_perm=n_perm, seed=0)
    mask = torch.ones_like(tokens, dtype=torch.bool)
    for b in range(0, tokens.shape[0], batch):
        acc.update(tokens[b:b + batch], mask[b:b + batch], gates[b:b + batch])
    return acc


def _signal_and_noise(seed=1):
    """Channel 0 depends on the 3-gram, channel 1 is noise; 6^3 = 216 3-grams over ~1,900 tokens."""
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, 6, (16, 120), generator=gen)
    effect = torch.rand(6, 6, 6, generator=gen, dtype=torch.float64)
    gates = torch.rand(16, 120, 2, generator=gen, dtype=torch.float64)
    gates[:, 2:, 0] += 0.3 * effect[tokens[:, :-2], tokens[:, 1:-1], tokens[:, 2:]]
    return tokens, gates


def test_default_draws_enough_permutations_and_p_is_never_below_one_over_b_plus_one():
    assert PERMUTATIONS >= 999
    st = _acc(*_signal_and_noise()).selectivity_stats(min_count=3, order=3)
    assert st["n_null"] == PERMUTATIONS and not st["exact"]
    assert float(st["p"][0]) == pytest.approx(1 / (PERMUTATIONS + 1))  # the signal beats every shuffle
    assert float(st["p"][1]) > ALPHA  # noise does not
    for b in (19, 99):
        p = _acc(*_signal_and_noise(), n_perm=b).selectivity_stats(min_count=3, order=3)["p"]
        assert float(p.min()) >= 1 / (b + 1) - 1e-15


def _brute_p(tokens, gates, min_count):
    """Exact permutation p by brute force, one row of ``tokens`` per batch: every distinct ordering of
    each row's 3-gram labels (itertools), eta^2 computed from scratch (float64)."""
    rows = [[(tuple(tokens[r, t - 2:t + 1].tolist()), float(gates[r, t, 0])) for t in range(2, tokens.shape[1])]
            for r in range(tokens.shape[0])]
    counts = {}
    for row in rows:
        for g, _ in row:
            counts[g] = counts.get(g, 0) + 1
    rows = [[(g, v) for g, v in row if counts[g] >= min_count] for row in rows]
    xs = [v for row in rows for _, v in row]
    grand = sum(xs) / len(xs)
    total = sum((x - grand) ** 2 for x in xs)

    def eta2(labels):
        groups = {}
        for g, x in zip([g for lab in labels for g in lab], xs):
            groups.setdefault(g, []).append(x)
        return sum(len(v) * (sum(v) / len(v) - grand) ** 2 for v in groups.values()) / total

    labels = [tuple(g for g, _ in row) for row in rows]
    null = [eta2(combo) for combo in itertools.product(*[sorted(set(itertools.permutations(lab))) for lab in labels])]
    return sum(x >= eta2(labels) - 1e-12 for x in null) / len(null), len(null)


def test_exact_when_the_relabellings_are_few():
    tokens = torch.tensor([[0, 1, 2, 0, 1, 2, 0], [0, 1, 2, 0, 1, 2, 0]])  # 30 x 30 relabellings
    gates = torch.tensor([[0.1, 0.2, 0.9, 0.3, 0.4, 0.8, 0.2], [0.5, 0.1, 0.7, 0.6, 0.2, 0.3, 0.75]], dtype=torch.float64)[..., None]
    st = _acc(tokens, gates, n_perm=999, batch=1).selectivity_stats(min_count=1, order=3)
    p, n = _brute_p(tokens, gates, 1)
    assert st["exact"] and st["n_null"] == n <= 999
    assert float(st["p"][0]) == pytest.approx(p, abs=1e-12)


def test_no_claim_at_p_above_alpha_or_on_too_few_ngrams():
    from engram_interp.analysis.gates import gate_corpus, tracks_ngrams
    from engram_interp.claims.sentences import gate_sentence
    from engram_interp.testing import tiny_model

    st = _acc(*_signal_and_noise()).selectivity_stats(min_count=3, order=3)
    assert int(st["groups"]) >= MIN_GROUPS and float(st["p"][1]) > ALPHA
    assert tracks_ngrams(st) == [True, False]  # the noise channel is not claimed
    few = dict(st, groups=torch.tensor(MIN_GROUPS - 1))
    assert tracks_ngrams(few) == [False, False]
    res = gate_corpus(tiny_model("engram"), ["The Milky Way is a galaxy far away."] * 3, n_perm=99)
    assert res.selectivity_groups < MIN_GROUPS and not any(res.tracks_ngrams)
    assert res.too_few == f"too few n-grams ({res.selectivity_groups}; {MIN_GROUPS} seen >= 3 times needed)"
    rec = gate_sentence(res.to_dict(), "tiny")
    assert rec.verdict == "not testable" and "too few n-grams" in rec.sentence


def test_report_runs_the_gates_on_their_own_budget_unless_told_otherwise():
    from argparse import Namespace

    from engram_interp.commands.report import _gate_tokens
    from engram_interp.defaults import DEFAULTS

    assert DEFAULTS.gate_tokens > DEFAULTS.tokens
    assert _gate_tokens(Namespace(gate_tokens=None, max_tokens=DEFAULTS.tokens)) == DEFAULTS.gate_tokens
    assert _gate_tokens(Namespace(gate_tokens=None, max_tokens=300)) == 300  # a smaller --max-tokens is kept
    assert _gate_tokens(Namespace(gate_tokens=5000, max_tokens=300)) == 5000


def test_merged_halves_give_the_same_test_as_one_accumulator():
    """The per-token log travels with merge_state (the all_reduce path): same p, same null."""
    tokens, gates = _signal_and_noise()
    whole = _acc(tokens, gates, n_perm=199)
    first, second = _acc(tokens[:8], gates[:8], n_perm=199), _acc(tokens[8:], gates[8:], n_perm=199)
    first.merge_state(second.state_dict())
    a, b = whole.selectivity_stats(3, 3), first.selectivity_stats(3, 3)
    for key in ("eta2", "p", "perm_mean", "perm_max"):
        torch.testing.assert_close(a[key], b[key], atol=1e-12, rtol=0)
