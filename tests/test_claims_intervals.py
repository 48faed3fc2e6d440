"""Intervals that can fail (issue 20 item 2): a bootstrap without spread is a point, never a claim;
layers picked out of many go through Holm's correction; no claim at p > alpha; a minimum sample."""

from __future__ import annotations

import pytest
import torch

from engram_interp.analysis.ablation import AblationAccumulator
from engram_interp.analysis.alignment import AlignmentVerdict
from engram_interp.claims.sentences import ablation_sentences, alignment_sentence, layer_tests, lens_sentences
from engram_interp.claims.verdict import Control, degenerate, one_sided_p, spread_text, verdict

# z for one-sided p = 0.01, 0.02, 0.03, 0.04 (normal quantiles, 4 decimals)
Z = [2.3263, 2.0537, 1.8808, 1.7507]


def test_near_zero_relative_width_is_no_spread():
    # the bundled CKA soft alignment of a saturated top-k row: 3.5001 [3.4998, 3.5004]
    assert degenerate([3.4998, 3.5004], 3.5001)
    assert not degenerate([1.483, 1.500], 1.491)  # 1% of the value: it varies
    assert not degenerate([0.0008, 0.0012], 0.001)  # small values are judged relative to themselves
    assert degenerate([0.0, 0.0], 0.0) and not degenerate([-0.01, 0.01], 0.0)
    assert spread_text(3.5001, [3.4998, 3.5004]) == "3.50 (a point: no spread measured)"
    assert spread_text(1.491, [1.483, 1.500]) == "1.49 [1.48, 1.50]"
    v, why = verdict(3.5001, [3.4998, 3.5004], [Control("untrained twin", 1.0, [0.9, 1.1])])
    assert v == "not established" and why.startswith("no spread measured")
    # a band over seeds (min..max) is judged on exact zero width: seeds that scatter a little still count
    twin = [Control("untrained twin", 1.0, [0.9, 1.1])]
    assert verdict(3.5001, [3.4998, 3.5004], twin, across_seeds=True, n_seeds=3)[0] == "reproduced"
    v, why = verdict(3.5, [3.5, 3.5], twin, across_seeds=True, n_seeds=3)
    assert v == "not established" and why.startswith("no spread measured")


def test_degenerate_ablation_bootstrap_is_a_point_in_the_sentence():
    # an ablation that changes no item: every replicate retains exactly 100%
    acc = AblationAccumulator(n_boot=200, seed=0)
    scores = torch.tensor([1.0, 0.0, 1.0, 1.0] * 10)
    acc.update(scores, scores)
    r = acc.result()
    assert r["ci"] == [100.0, 100.0] and degenerate(r["ci"], r["retained"])
    twin = {"agreement": {"n": 40, "full": 0.5, "ablated": 0.3, "retained": 60.0, "ci": [40.0, 80.0]}}
    tables = {"m": {"agreement": r}, "m~twin": twin}
    f = ablation_sentences(tables, {"agreement": 0.5}, ["m"])[0]
    assert "retained % 100 (a point: no spread measured)" in f.sentence and "[100, 100]" not in f.sentence
    # the real bootstrap of a varying ablation keeps its interval
    acc = AblationAccumulator(n_boot=200, seed=0)
    acc.update(scores, torch.tensor([1.0, 0.0, 0.0, 1.0] * 10))
    assert not degenerate(acc.result()["ci"], acc.result()["retained"])


def test_alignment_without_spread_is_stated_as_a_point():
    v = AlignmentVerdict(layer=1, a=7.5002, ci=(7.4997, 7.5008), attainable=(1.0, 7.0),
                         references={"twin": ("e~twin", 4.0, 3.0, 5.0)}, verdict="above")
    f = alignment_sentence(v, "engram", "moe", 3, n_batches=40)
    assert "7.50 (a point: no spread measured)" in f.sentence and f.verdict == "not established"
    assert "no spread measured" in f.reason
    few = alignment_sentence(v, "engram", "moe", 3, n_batches=4)
    assert few.verdict == "not testable" and "too few minibatches (4; 10 needed)" in few.sentence


def _curves(diffs: list[float], n_tokens: int = 1000) -> list[dict]:
    """Engram KL 1.0 with SEM 0 at every layer; the control KL 1 + diff with SEM 1: z = diff."""
    n = len(diffs)
    e = {"name": "e", "layers": list(range(n + 1)), "kl": [1.0] * n + [0.0], "kl_sem": [0.0] * (n + 1), "n_tokens": n_tokens}
    c = {"name": "c", "layers": list(range(n + 1)), "kl": [1.0 + d for d in diffs] + [0.0], "kl_sem": [1.0] * (n + 1),
         "n_tokens": n_tokens}
    return [e, c]


def test_holm_picks_fewer_layers_than_uncorrected():
    curves = _curves(Z)
    ps, raw, kept = layer_tests({c["name"]: c for c in curves}, "e", "c")
    assert ps == pytest.approx([0.01, 0.02, 0.03, 0.04], abs=1e-5)
    # by hand: every p <= 0.05 uncorrected; Holm over m = 4: 0.01 <= 0.05/4 yes, 0.02 <= 0.05/3 no -> stop
    assert raw == [0, 1, 2, 3] and kept == [0]
    s = lens_sentences(curves, "e", "c", None)[0].sentence
    assert "Holm-corrected over the 4 layers" in s and "lower than the control's at layer(s) 0 " in s
    assert "(uncorrected p <= 0.05: 0, 1, 2, 3)" in s


def test_no_claim_at_p_above_alpha():
    curves = _curves([1.0, 0.5, -1.0, 0.0])  # one-sided p = 0.159, 0.309, 0.841, 0.5
    _, raw, kept = layer_tests({c["name"]: c for c in curves}, "e", "c")
    assert raw == [] and kept == []
    assert "lower than the control's at no layer" in lens_sentences(curves, "e", "c", None)[0].sentence
    assert one_sided_p(1.0, 1.0) == pytest.approx(0.158655, abs=1e-6)
    beaten = [Control("untrained twin", 0.0, None)]
    assert verdict(1.0, [0.9, 1.1], beaten, across_seeds=True, n_seeds=3, p=0.049)[0] == "reproduced"
    v, why = verdict(1.0, [0.9, 1.1], beaten, across_seeds=True, n_seeds=3, p=0.2)
    assert v == "not established" and "p = 0.2 is above alpha = 0.05" in why


def test_a_sentence_needs_its_minimum_sample():
    f = lens_sentences(_curves(Z, n_tokens=120), "e", "c", None)[0]
    assert f.verdict == "not testable" and "too few tokens (120; 500 needed)" in f.sentence
    s = {"n": 20, "full": 0.9, "ablated": 0.5, "retained": 55.0, "ci": [40.0, 70.0]}
    f = ablation_sentences({"m": {"agreement": s}}, {"agreement": 0.5}, ["m"])[0]
    assert f.verdict == "not testable" and "too few items (20; 30 needed)" in f.sentence
