"""The one verdict function, its statistics and the untrained twin (issue 20)."""

from __future__ import annotations

import math

import pytest
import torch

import engram_interp as ei
from engram_interp.claims.verdict import Control, degenerate, holm, min_permutations, permutation_p, verdict


def test_degenerate_bootstrap_is_detected_and_never_a_claim():
    # a_j = 1.50 [1.50, 1.50] vs 1.49 [1.49, 1.49]: zero width on both sides (the bundled CKA page)
    assert degenerate([1.5, 1.5], 1.5) and degenerate(None) and degenerate([float("nan"), 1.0])
    assert not degenerate([1.4, 1.6], 1.5)
    v, why = verdict(1.50, [1.50, 1.50], [Control("untrained twin", 1.49, [1.49, 1.49])], across_seeds=True, n_seeds=3)
    assert v == "not established" and "no spread" in why


def test_permutation_p_has_its_floor_and_blocks_claims_above_alpha():
    assert permutation_p(5.0, [0.0] * 999) == pytest.approx(1 / 1000)
    assert permutation_p(5.0, [0.0] * 19) == pytest.approx(1 / 20)  # 19 shuffles cannot reach p < 0.05
    assert permutation_p(0.0, [1.0, 2.0, 3.0]) == 1.0
    assert permutation_p(2.0, [1.0, 2.0, 3.0, 4.0], exact=True) == 0.75
    assert math.isnan(permutation_p(1.0, []))
    assert min_permutations(0.05) >= 999
    rng = torch.Generator().manual_seed(0)
    null = torch.rand(999, generator=rng).tolist()
    for obs in (0.0, 0.5, 0.999, 2.0):
        assert permutation_p(obs, null) >= 1 / 1000


def test_holm_against_hand_computed_case():
    # m = 4: sorted 0.001 <= 0.0125 yes, 0.01 <= 0.0167 yes, 0.03 <= 0.025 no -> stop
    assert holm([0.03, 0.001, 0.2, 0.01]) == [False, True, False, True]
    assert holm([float("nan"), 0.001]) == [False, True]


def test_verdict_needs_every_control_and_seeds():
    twin = lambda: Control("untrained twin", 0.5, [0.4, 0.6])  # noqa: E731
    null = lambda v: Control("Engram-null", v, [v - 0.05, v + 0.05])  # noqa: E731
    assert verdict(1.0, [0.9, 1.1], [twin(), null(0.6)], across_seeds=True, n_seeds=3)[0] == "reproduced"
    # one seed: a within-seed interval never carries the claim alone
    assert verdict(1.0, [0.9, 1.1], [twin(), null(0.6)])[0] == "not established"
    # the Engram-null control covers it
    assert verdict(1.0, [0.9, 1.1], [twin(), null(1.0)], across_seeds=True, n_seeds=3)[0] == "not established"
    # the twin is required but missing
    v, why = verdict(1.0, [0.9, 1.1], [null(0.6)], required=("untrained twin",), across_seeds=True, n_seeds=3)
    assert v == "not established" and "twin" in why
    # lower is the paper's side
    cs = [twin()]
    assert verdict(0.2, [0.1, 0.3], cs, direction=-1, across_seeds=True, n_seeds=3)[0] == "reproduced"
    assert cs[0].beaten and cs[0].margin == pytest.approx(-0.3)
    assert verdict(1.0, [0.9, 1.1], [twin()], direction=-1, across_seeds=True, n_seeds=3)[0] == "not reproduced"
    assert verdict(1.0, [0.9, 1.1], [twin()], testable=False, untestable_reason="near chance")[0] == "not testable"


def test_untrained_twin_of_a_ckpt_is_seeded_and_differs():
    from engram_interp.testing import tiny_model

    m = tiny_model()
    a, b, c = ei.untrained_twin(m, 1), ei.untrained_twin(m, 1), ei.untrained_twin(m, 2)
    assert type(a) is type(m) and a.cfg == m.cfg
    pa, pb, pc = (torch.cat([p.flatten() for p in x.parameters()]) for x in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)
    assert not torch.equal(pa, torch.cat([p.flatten() for p in m.parameters()]))
    assert a("Alexander the Great").shape == m("Alexander the Great").shape


def test_untrained_twin_of_a_qwen4_exp_folder(tmp_path):
    from engram_interp.backends.testing import tiny_qwen4_exp_folder

    h = ei.load(str(tiny_qwen4_exp_folder(tmp_path / "q")), device="cpu")
    t = ei.untrained_twin(h, 0)
    assert t.info.engram_layers == h.info.engram_layers and t.info.architecture == h.info.architecture
    assert not torch.equal(next(t.hf.parameters()), next(h.hf.parameters()))
    assert t("hello world").shape == h("hello world").shape
