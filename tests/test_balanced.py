"""Chance measured (issue 20 item 4): the candidate prior against a hand count, the flag, and the
balanced design (each item with its candidate-swapped mirrors) on hand cases and the bundled model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import engram_interp as ei
from engram_interp.analysis.ablation import candidate_prior_accuracy
from engram_interp.claims.sentences import ablation_sentences, measured_chance
from engram_interp.cli import main
from engram_interp.data.balanced import balanced_groups, balanced_suites

ROOT = Path(__file__).resolve().parents[1]


def _it(i, prompt, answer, cands, **meta):
    return {"id": f"x{i}", "suite": "s", "prompt": prompt, "answer": answer, "candidates": cands, "meta": meta}


def test_balanced_groups_by_hand():
    items = [_it(0, "The dog", " is", [" is", " are"]), _it(1, "The dogs", " are", [" is", " are"]),
             _it(2, "A cat", " is", [" are", " is"])]
    groups = balanced_groups(items)
    # each anchor + the first item by id whose gold is its other candidate (and whose prompt differs)
    assert [[(g["prompt"], g["answer"]) for g in grp] for grp in groups] == [
        [("The dog", " is"), ("The dogs", " are")], [("The dogs", " are"), ("The dog", " is")],
        [("A cat", " is"), ("The dogs", " are")]]
    assert groups[2][1]["candidates"] == [" are", " is"] and groups[2][1]["id"] == "x2~mirror~x1"
    for grp in groups:  # one candidate set per group, each candidate the gold exactly once
        assert len({tuple(sorted(g["candidates"])) for g in grp}) == 1
        assert sorted(g["answer"] for g in grp) == sorted(grp[0]["candidates"])
    # a candidate that is nobody's gold leaves its anchor without a group; the kind must match
    three = [_it(0, "p", " a", [" a", " b", " c"]), _it(1, "q", " b", [" a", " b"]),
             _it(2, "r", " a", [" a", " b"], relation="x"), _it(3, "t", " b", [" b", " a"], relation="y")]
    # p: " c" is nobody's gold; r, t: no mirror of their own relation; q: p (same kind) has gold " a"
    assert [[g["prompt"] for g in grp] for grp in balanced_groups(three)] == [["q", "p"]]
    out, design = balanced_suites({"s": three, "t": [{"id": "e", "suite": "t", "prompt": "p", "answer": " a"}]})
    assert design["s"] == {"balanced": True, "groups": 1, "items": 2, "anchors": 4, "dropped": 3}
    assert not design["t"]["balanced"] and out["t"][0]["prompt"] == "p" and "reason" in design["t"]


def test_kv_recall_mirrors_ask_every_key_of_the_same_prompt():
    item = {"id": "k", "suite": "kv_recall", "prompt": "Ab: 12\nCd: 345\nEf: 6789\nQuery: Cd\nValue:", "answer": " 345",
            "candidates": [" 12", " 345", " 6789"], "meta": {"n_pairs": 3, "position": 1}}
    (group,) = balanced_groups([item])
    assert [(g["prompt"].split("\n")[-2], g["answer"]) for g in group] == [
        ("Query: Cd", " 345"), ("Query: Ab", " 12"), ("Query: Ef", " 6789")]
    assert all(g["candidates"] == item["candidates"] and g["prompt"].startswith("Ab: 12\nCd: 345\nEf: 6789\n")
               for g in group)
    assert [g["meta"]["position"] for g in group] == [1, 0, 2]
    assert balanced_groups([{**item, "prompt": "Ab: 12\nQuery: Ab\nValue:"}]) == []  # not in the suite's form


def test_measured_chance_flags_a_prior_above_the_uniform_guess():
    # 40 items, prior 0.75: Wilson lower bound 0.598 > 0.5 -> flagged; prior 0.6: 0.446 -> not flagged
    c = measured_chance(0.5, 40, twin_full=0.55, prior=0.75)
    assert c["prior_flagged"] and (c["floor_name"], c["floor"]) == ("candidate prior", 0.75)
    assert not measured_chance(0.5, 40, prior=0.6)["prior_flagged"]
    s = {"n": 40, "full": 0.8, "ablated": 0.5, "retained": 62.5, "ci": [45.0, 80.0]}
    f = ablation_sentences({"m": {"agr": s}}, {"agr": 0.5}, ["m"], prior={"m": {"agr": 0.75}})[0]
    assert "flagged: without the prompt" in f.sentence and "candidate prior 0.75" in f.sentence
    assert f.verdict == "not testable"  # Wilson lower bound of 0.8 over 40 items (0.652) is below the prior 0.75


@pytest.fixture(scope="module")
def engram():
    return ei.load(ROOT / "checkpoints" / "engram.ckpt", device="cpu")


def _agreement(n: int) -> list[dict]:
    lines = (ROOT / "probes" / "agreement.jsonl").read_text().splitlines()[:n]
    return [json.loads(x) for x in lines]


@torch.no_grad()
def test_candidate_prior_and_the_balanced_design_on_the_bundled_model(engram):
    items = _agreement(24)
    # independent reference: the model's log-prob of " is" and " are" after BOS alone
    bos = torch.tensor([[engram.info.bos_token_id]])
    lp = engram(bos)[0, -1].float().log_softmax(-1)
    score = {c: float(lp[engram.encode(c)[0]]) for c in (" is", " are")}
    assert all(len(engram.encode(c)) == 1 for c in score)
    preferred = max(score, key=score.get)
    by_hand = sum(it["answer"] == preferred for it in items) / len(items)
    assert candidate_prior_accuracy(engram, items) == pytest.approx(by_hand, abs=1e-12)
    # balanced: each group asks the same two candidates twice with golds swapped -> exactly one right
    groups = balanced_groups(items)
    assert len(groups) == len(items)
    assert candidate_prior_accuracy(engram, [it for g in groups for it in g]) == 0.5


def test_ablate_balanced_cli_on_the_bundled_checkpoint(tmp_path, capsys):
    suite = tmp_path / "agreement.jsonl"
    suite.write_text("\n".join(json.dumps(it) for it in _agreement(30)) + "\n")
    args = ["ablate", str(ROOT / "checkpoints" / "engram.ckpt"), "--suites", str(suite), "--boot", "50",
            "--device", "cpu", "--quiet", "--json"]
    assert main(args) == 0
    plain = json.loads(capsys.readouterr().out)
    assert main([*args, "--balanced"]) == 0
    bal = json.loads(capsys.readouterr().out)
    assert "balanced" not in plain and bal["balanced"]["agreement"]["groups"] == 30
    assert bal["suites"]["agreement"]["n"] == 60
    c = bal["chance"]["agreement"]
    assert c["candidate prior"] == 0.5 and not c["prior_flagged"] and bal["prior_flagged"] == []
    assert plain["chance"]["agreement"]["candidate prior"] == plain["candidate_prior"]["engram"]["agreement"]
    f = bal["findings"][0]["sentence"]
    assert "balanced design: 30 groups" in f and "candidate prior 0.50" in f
