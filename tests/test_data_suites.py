"""Suite schema and the committed probes/*.jsonl files."""

import json
import random
from pathlib import Path

import pytest

from engram_interp.data import suite_files, suites
from engram_interp.data.facts import RELATIONS, Fact, fact_doc
from engram_interp.data.world import World
from engram_interp.errors import EngramInterpError

PROBES = Path(__file__).resolve().parents[1] / "probes"


def test_validate_item_rejects_bad_items():
    ok = {"id": "x-1", "suite": "x", "prompt": "p", "answer": " a", "candidates": [" a", " b"], "meta": {}}
    suite_files.validate_item(ok)
    for bad in ({**ok, "answer": "a"}, {**ok, "candidates": [" b", " c"]}, {**ok, "candidates": [" a", " a"]},
                {k: v for k, v in ok.items() if k != "meta"}, {**ok, "prompt": ""}):
        with pytest.raises(ValueError):
            suite_files.validate_item(bad)


@pytest.mark.parametrize("name", [*suites.SUITES])
def test_committed_suite_files_follow_schema(name):
    path = PROBES / f"{name}.jsonl"
    items = suite_files.read_suites(path)[name]
    assert len(items) >= 100
    ids = set()
    for it in items:
        suite_files.validate_item(it)
        assert it["suite"] == name and it["id"] not in ids
        ids.add(it["id"])


def test_entities_ner_offsets_point_at_entity_ends():
    recs = [json.loads(line) for line in (PROBES / "entities_ner.jsonl").read_text().splitlines()]
    assert len(recs) >= 100
    for r in recs:
        assert r["entity_end_positions"] == [e[1] - 1 for e in r["entities"]]
        for start, end, _, text in r["entities"]:
            assert r["text"][start:end] == text


def test_generators_are_seeded_and_correct():
    w = World(0, 300)
    a = suites.facts_world_items(w, n_people=20, seed=1)
    assert a == suites.facts_world_items(w, n_people=20, seed=1)
    for it in a:
        p = w.people[it["meta"]["person_index"]]
        assert it["answer"] == " " + getattr(p, it["meta"]["attribute"]) and p.name in it["prompt"]
    for it in suites.reading_items(w, n=30, seed=1):
        passage = it["prompt"].split("\nQuestion:")[0]
        assert it["answer"].strip() in passage  # open book: answer verbatim in the passage
        assert it["meta"]["entity"] not in {p.name for p in w.people}
    ob = suites.open_book_items(w, n=40, seed=1)
    assert ob == suites.open_book_items(w, n=40, seed=1)
    for it in ob:
        passage = it["prompt"].split("\nQuestion:")[0]
        assert it["answer"].strip() in passage and passage.count(".") >= 1
        assert [c for c in it["candidates"] if c.strip() in it["prompt"]] == [it["answer"]]  # only the gold is stated
        assert it["meta"]["entity"] not in {p.name for p in w.people}
    for it in suites.copying_items(["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta", "iota", "kappa",
                                    "lam", "mu", "nu", "xi"], n=10):
        seq, given = it["prompt"].split("\n")
        assert seq == given + it["answer"]
    ag = suites.agreement_items(n=50)
    assert all(it["answer"] == (" are" if it["meta"]["subject_plural"] else " is") for it in ag)


def test_real_fact_training_docs_use_train_phrasings_only():
    facts = [Fact("country_capital", "France", "Paris"), Fact("element_name", "Fe", "iron")]
    items = suites.facts_real_items(facts)
    text = "\n".join(fact_doc(facts, random.Random(i)) for i in range(300))
    assert "Paris" in text and "iron" in text
    for it in items:
        assert it["prompt"] not in text
    for spec in RELATIONS.values():
        assert not set(spec["eval_cloze"]) & set(spec["train"])


def test_read_suites_files_and_folders(tmp_path):
    p = tmp_path / "facts.jsonl"
    p.write_text(json.dumps({"id": "a", "prompt": "x", "answer": " y", "candidates": [" y", " z"], "meta": {"k": 1}}) + "\n"
                 + json.dumps({"prompt": "p", "answer": " q", "suite": "other"}) + "\n")
    s = suite_files.read_suites([p])
    assert set(s) == {"facts", "other"}
    assert s["facts"][0]["candidates"] == [" y", " z"] and s["facts"][0]["meta"] == {"k": 1}  # fields kept
    assert s["other"][0]["id"] == "facts:2" and "candidates" not in s["other"][0]
    (tmp_path / "entities_ner.jsonl").write_text(json.dumps({"text": "t", "entity_end_positions": [0]}) + "\n")
    assert set(suite_files.read_suites(tmp_path)) == {"facts", "other"}  # the folder skips non-suite probe sets
    with pytest.raises(EngramInterpError):
        suite_files.read_suites([tmp_path / "missing.jsonl"])
    (tmp_path / "bad.jsonl").write_text('{"prompt": "x"}\n')
    with pytest.raises(EngramInterpError, match="bad.jsonl:1"):
        suite_files.read_suites(tmp_path / "bad.jsonl")


def test_committed_probes_folder_reads_every_suite():
    assert set(suite_files.read_suites(PROBES)) == set(suites.SUITES)


@pytest.mark.parametrize("name", [*suites.SUITES])
def test_scoring_text_names_the_rule_score_items_applies(name):
    """score_items ranks an item that lists candidates and decodes greedily one that does not; the
    documented rule of each committed suite (SCORING, shown in cards and docs) must say the same."""
    items = suite_files.read_suites(PROBES / f"{name}.jsonl")[name]
    ranked = {bool(it.get("candidates")) for it in items}
    assert len(ranked) == 1, "a suite mixes ranked and greedy items"
    text = suites.SCORING[name]
    if ranked.pop():
        assert text.startswith("rank"), text
        assert "greedy" not in text, text
    else:
        assert text.startswith("greedy"), text
