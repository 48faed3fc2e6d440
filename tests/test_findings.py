"""Findings stated against their nulls (issue 9, items 3, 4 and 10): the soft alignment's attainable
range, default k and verdict against the Engram-null control; gate selectivity against a
permutation baseline with an adjusted value; a ``source`` field in the JSON outputs."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

import engram_interp as ei
from engram_interp.analysis.alignment import alignment_sentence, alignment_verdicts
from engram_interp.analysis.cka import default_k, soft_alignment, soft_alignment_range
from engram_interp.cli import main
from engram_interp.testing import tiny_model

TEXT = "Alexander the Great was a king of Macedon. The Milky Way is a galaxy. By the way, the Princess of Wales visited London."


# ---- item 3: soft alignment ------------------------------------------------------------------------
@pytest.mark.parametrize("k,n", [(5, 9), (2, 9), (1, 4), (3, 13), (4, 4)])
def test_attainable_range_is_the_range_of_k_index_means(k, n):
    """With equal top-k weights the index is the mean of k distinct indices: brute force over all subsets."""
    means = [sum(c) / k for c in itertools.combinations(range(n), k)]
    assert soft_alignment_range(k, n) == pytest.approx((min(means), max(means)))
    flat = torch.full((n, n), 0.8, dtype=torch.float64) + 1e-3 * torch.rand(n, n, dtype=torch.float64)
    a = soft_alignment(flat, k)  # nearly flat CKA: every row inside the range (up to the 1e-3 ripple)
    lo, hi = soft_alignment_range(k, n)
    assert (a >= lo - 0.01).all() and (a <= hi + 0.01).all()


def test_issue_case_k5_of_9_points_is_squeezed_and_default_k_adapts():
    assert soft_alignment_range(5, 9) == (2.0, 6.0)  # the "about 2 to 6" of the issue
    assert default_k(9) == 2 and default_k(31) == 5 and default_k(3) == 1
    assert soft_alignment(torch.eye(9, dtype=torch.float64) * 0.5 + 0.5).shape == (9,)


def _res(a, lo, hi, refs=None, layers=(1,)):
    n = 4
    pad = lambda v: [0.0] * 1 + [v] + [0.0] * (n - 2)  # noqa: E731 - the value sits at layer 1
    d = {"name_a": "engram", "soft_alignment": pad(a), "soft_alignment_ci": [pad(lo), pad(hi)], "k": 2,
         "engram_layers_a": list(layers), "soft_alignment_range": [0.5, 2.5], "references": {}}
    for kind, (v, l, h) in (refs or {}).items():
        d["references"][kind] = {"name": kind, "soft_alignment": pad(v), "soft_alignment_ci": [pad(l), pad(h)], "k": 2}
    return d


def test_verdicts_need_to_clear_every_reference_interval():
    assert alignment_verdicts(_res(2.0, 1.9, 2.1))[0].verdict == "not established"  # no control at all
    above = alignment_verdicts(_res(2.0, 1.9, 2.1, {"control": (1.5, 1.4, 1.6)}))[0]
    assert above.verdict == "above"
    overlap = alignment_verdicts(_res(2.0, 1.9, 2.1, {"control": (1.5, 1.4, 1.95)}))[0]
    assert overlap.verdict == "not established" and "overlaps" in overlap.reason
    # beats the control but not the second baseline seed: not established
    two = alignment_verdicts(_res(2.0, 1.9, 2.1, {"control": (1.5, 1.4, 1.6), "noise": (1.8, 1.6, 2.0)}))[0]
    assert two.verdict == "not established"
    assert alignment_verdicts(_res(1.0, 0.9, 1.1, {"control": (1.5, 1.4, 1.6)}))[0].verdict == "below"
    sentence = alignment_sentence(overlap, "engram", "moe", 2)
    assert "not established" in sentence and "1.50 [1.40, 1.95]" in sentence and "0.5 to 2.5" in sentence


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("findings")
    paths = {kind: ei.save(tiny_model(kind, seed=i), d / f"{kind}.ckpt", provenance={"test": True})
             for i, kind in enumerate(("engram", "moe"))}
    paths["corpus"] = d / "corpus.txt"
    paths["corpus"].write_text("\n\n".join([TEXT, "The capital of France is Paris. It was the best of times."] * 3))
    return paths


def _json(capsys, argv):
    rc = main(argv)
    out = capsys.readouterr().out
    assert rc == 0, out
    return json.loads(out)


def test_cka_cli_control_reference_and_source(ckpts, capsys):
    """The control given as A itself has A's very interval: no shift may be stated."""
    argv = ["cka", str(ckpts["engram"]), str(ckpts["moe"]), "--corpus", str(ckpts["corpus"]), "--device", "cpu",
            "--quiet", "--cka-batch", "16", "--control", str(ckpts["engram"]), "--seed", "3"]
    d = _json(capsys, argv + ["--json"])
    assert d["k"] == default_k(5) and d["soft_alignment_range"] == list(soft_alignment_range(d["k"], 5))
    ref = d["references"]["control"]
    assert ref["soft_alignment"] == pytest.approx(d["soft_alignment"], nan_ok=True)
    assert d["source"] == {"corpus": str(ckpts["corpus"]), "tokens": d["n_examples"], "seed": 3}
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert table.count("shift not established") == len(d["engram_layers_a"]) > 0
