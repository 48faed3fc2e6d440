"""Findings stated against their nulls (issue 9, items 3, 4 and 10): the soft alignment's attainable
range, default k and verdict against the Engram-null control; gate selectivity against a
permutation baseline with an adjusted value; a ``source`` field in the JSON outputs."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

import engram_interp as ei
from engram_interp.analysis.alignment import alignment_verdicts
from engram_interp.claims.sentences import alignment_sentence
from engram_interp.analysis.cka import default_k, soft_alignment, soft_alignment_range
from engram_interp.cli import main
from engram_interp.testing import tiny_model
from test_cli_analysis import _json  # noqa: E402 - the CLI-to-JSON helper of the analysis-command tests

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
    sentence = alignment_sentence(overlap, "engram", "moe", 2).sentence
    assert "not established" in sentence and "1.50 [1.40, 1.95]" in sentence and "0.5 to 2.5" in sentence


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("findings")
    paths = {kind: ei.save(tiny_model(kind, seed=i), d / f"{kind}.ckpt", provenance={"test": True})
             for i, kind in enumerate(("engram", "moe"))}
    paths["null"] = ei.save(tiny_model("engram-null", seed=2), d / "engram-null.ckpt", provenance={"test": True})
    items = [{"id": "mc", "suite": "mc", "prompt": "The capital of France is", "answer": " Paris",
              "candidates": [" Paris", " Rome", " Madrid"]},
             {"id": "g", "suite": "gen", "prompt": "Alexander the", "answer": " Great"}]
    paths["suite"] = d / "suite.jsonl"
    paths["suite"].write_text("\n".join(json.dumps(x) for x in items) + "\n")
    paths["corpus"] = d / "corpus.txt"
    paths["corpus"].write_text("\n\n".join([TEXT, "The capital of France is Paris. It was the best of times."] * 3))
    return paths


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
    assert table.count("Verdict: not established") == len(d["engram_layers_a"]) > 0


# ---- item 4: gate selectivity against its permutation baseline --------------------------------------
def _grams(tokens: torch.Tensor) -> list[tuple[int, int, int]]:
    return [tuple(tokens[b, t - 2: t + 1].tolist()) for b in range(tokens.shape[0]) for t in range(2, tokens.shape[1])]


def _reference_stats(tokens, gates, min_count):
    """eta^2 and omega^2 of channel 0 from the raw per-token values (float64, by hand)."""
    import collections

    groups = collections.defaultdict(list)
    for g, (b, t) in zip(_grams(tokens), [(b, t) for b in range(tokens.shape[0]) for t in range(2, tokens.shape[1])]):
        groups[g].append(float(gates[b, t, 0]))
    groups = {k: v for k, v in groups.items() if len(v) >= min_count}
    vals = [x for v in groups.values() for x in v]
    n, g = len(vals), len(groups)
    grand = sum(vals) / n
    ss_t = sum((x - grand) ** 2 for x in vals)
    ss_b = sum(len(v) * (sum(v) / len(v) - grand) ** 2 for v in groups.values())
    ms_w = (ss_t - ss_b) / (n - g)
    return ss_b / ss_t, (ss_b - (g - 1) * ms_w) / (ss_t + ms_w), n, g


def _accumulate(tokens, gates, n_perm=19, seed=0):
    from engram_interp.analysis.gates import GateNgramAccumulator

    acc = GateNgramAccumulator(gates.shape[-1], 16, orders=(3,), n_perm=n_perm, seed=seed)
    mask = torch.ones_like(tokens, dtype=torch.bool)
    for b in range(0, tokens.shape[0], 4):  # several batches: the shuffles stay within each batch
        acc.update(tokens[b:b + 4], mask[b:b + 4], gates[b:b + 4])
    return acc


def test_selectivity_matches_a_by_hand_reference_and_the_null_is_flagged():
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 12, (16, 120), generator=gen)  # 1,728 possible 3-grams in ~1,900 tokens: small groups
    noise = torch.rand(16, 120, 1, generator=gen, dtype=torch.float64)
    acc = _accumulate(tokens, noise)
    st = acc.selectivity_stats(min_count=2, order=3)
    eta2, omega2, n, g = _reference_stats(tokens, noise, 2)
    assert float(st["eta2"][0]) == pytest.approx(eta2, abs=1e-10)
    assert float(st["omega2"][0]) == pytest.approx(omega2, abs=1e-10)
    assert (int(st["tokens"]), int(st["groups"])) == (n, g)
    # pure noise: eta^2 is large by construction, but no larger than shuffled labels give
    assert eta2 > 0.3
    assert float(st["perm_mean"][0]) == pytest.approx((g - 1) / (n - 1), abs=0.05)  # the null expectation
    assert float(st["p"][0]) > 0.05 and abs(omega2) < 0.1


def test_selectivity_signal_beats_every_shuffle():
    gen = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 6, (16, 120), generator=gen)
    grams = torch.zeros(16, 120, 1, dtype=torch.float64)
    effect = torch.rand(6, 6, 6, generator=gen, dtype=torch.float64)
    grams[:, 2:, 0] = effect[tokens[:, :-2], tokens[:, 1:-1], tokens[:, 2:]]
    gates = 0.3 * grams + torch.rand(16, 120, 1, generator=gen, dtype=torch.float64)
    st = _accumulate(tokens, gates).selectivity_stats(min_count=3, order=3)
    assert float(st["p"][0]) == pytest.approx(1 / 20)
    assert float(st["eta2"][0]) > float(st["perm_max"][0]) and float(st["omega2"][0]) > 0.02


def test_gate_corpus_reports_the_baseline_and_ranks_by_omega2(ckpts, capsys):
    d = _json(capsys, ["gates", str(ckpts["engram"]), "--corpus", str(ckpts["corpus"]), "--device", "cpu", "--quiet",
                       "--json", "--min-count", "2"])
    C = len(d["channels"])
    for key in ("selectivity_omega2", "selectivity_perm_mean", "selectivity_perm_max", "selectivity_p", "tracks_ngrams"):
        assert len(d[key]) == C, key
    om = {tuple(c): o for c, o in zip(d["channels"], d["selectivity_omega2"])}
    ranked = [om[tuple(c)] for c in d["branch_ranking"]]
    assert ranked == sorted(ranked, reverse=True)
    assert d["source"]["corpus"] == str(ckpts["corpus"]) and d["source"]["tokens"] == d["n_tokens"]


# ---- item 6: report with the Engram-null control -----------------------------------------------------
def test_report_takes_the_control_and_states_findings_against_it(ckpts, capsys, tmp_path):
    out = tmp_path / "rep"
    rc = main(["report", str(ckpts["engram"]), str(ckpts["moe"]), str(ckpts["null"]), "--out", str(out),
               "--corpus", str(ckpts["corpus"]), "--suites", str(ckpts["suite"]), "--device", "cpu", "--quiet",
               "--cka-batch", "16", "--max-tokens", "300"])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    res = json.loads((out / "results.json").read_text())
    assert [m["name"] for m in res["logit_lens"]["models"]] == ["engram", "moe", "engram-null"]
    assert res["cka"]["references"]["control"]["name"] == "engram-null"
    assert res["gates_control"][0]["name"] == "engram-null"
    assert [m["name"] for m in res["ablation"]["models"]] == ["engram", "moe", "engram-null"]
    assert res["source"]["corpus"] == str(ckpts["corpus"]) and res["source"]["seed"] == 0
    found = res["findings"]
    assert all(set(f) >= {"finding", "verdict", "sentence", "effect", "interval", "controls"} for f in found)
    assert {f["verdict"] for f in found} <= {"not established", "not testable"}  # one seed claims nothing
    # the twin is on by default in the report and is a control of every finding that has one
    assert all("untrained twin" in {c["name"] for c in f["controls"]} for f in found if f["controls"])
    assert res["logit_lens"]["models"][0]["name"] == "engram"
    text = " ".join(f["sentence"] for f in found)
    assert "Engram-null engram-null" in text
    assert "uniform guess 0.33" in text and "untrained twin" in text  # chance: assumed and measured
    html = (out / "report.html").read_text()
    assert "Findings (each against its controls)" in html and "Gate selectivity (control): engram-null" in html
    assert "retains 100% under ablation by construction" in html


def test_cka_table_shows_intervals_engram_layers_and_corpus(ckpts, capsys):
    assert main(["cka", str(ckpts["engram"]), str(ckpts["moe"]), "--corpus", str(ckpts["corpus"]), "--device", "cpu",
                 "--quiet", "--cka-batch", "16"]) == 0
    table = capsys.readouterr().out
    assert str(ckpts["corpus"]) in table and "95% CI" in table
    rows = [line for line in table.splitlines() if line[:5].strip().rstrip("*").isdigit()]
    assert len(rows) == 5 and [r[4] == "*" for r in rows] == [False, True, True, False, False]  # tiny Engram layers 1, 2
    assert all(r.count("[") == 2 for r in rows)  # soft alignment and diagonal CKA, each with its interval


def test_every_analysis_json_has_a_source(ckpts, capsys):
    common = ["--device", "cpu", "--quiet", "--json", "--seed", "5"]
    lens = _json(capsys, ["logit-lens", str(ckpts["engram"]), "--corpus", str(ckpts["corpus"]), "--max-tokens", "100", *common])
    assert lens["source"] == {"corpus": str(ckpts["corpus"]), "tokens": 100, "seed": 5}
    gm = _json(capsys, ["gates", str(ckpts["engram"]), "--text", TEXT, *common])
    assert gm["source"]["corpus"] == "--text" and gm["source"]["tokens"] == len(gm["tokens"])
    abl = _json(capsys, ["ablate", str(ckpts["engram"]), "--suites", str(ckpts["suite"]), "--boot", "20", *common])
    assert abl["source"] == {"corpus": str(ckpts["suite"]), "tokens": 2, "seed": 5, "unit": "items"}
