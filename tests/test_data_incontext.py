"""In-context suites (name_copy, kv_recall): schema, the answer is in the prompt, training exercises
never contain an evaluation prompt (and the leak filter would drop one that did), stream mixing."""

from __future__ import annotations

import json
from pathlib import Path

from engram_interp.data.incontext import incontext_doc, incontext_items
from engram_interp.data.leakage import LeakFilter, needles_from_probes
from engram_interp.data.stream import world_doc
from engram_interp.data.suite_files import validate_item
from engram_interp.data.world import World

ROOT = Path(__file__).resolve().parents[1]
WORLD = World(0, 2000)


def test_items_follow_the_schema_and_the_answer_is_in_context():
    items = incontext_items(WORLD, n=60, seed=0)
    for it in items["name_copy"]:
        validate_item(it)
        first, rest = it["meta"]["name"].split(" ", 1)
        assert it["prompt"].endswith(" " + first) and it["answer"] == " " + rest
        assert it["prompt"].count(it["meta"]["name"]) == 1  # stated exactly once
        assert not set(it["meta"]["name"].split()) & WORLD.name_parts  # never a trained name
    for it in items["kv_recall"]:
        validate_item(it)
        key = it["prompt"].rsplit("Query: ", 1)[1].split("\n")[0]
        assert f"\n{key}:{it['answer']}\n" in "\n" + it["prompt"]
        assert len(it["candidates"]) == it["meta"]["n_pairs"]
    assert incontext_items(WORLD, n=60, seed=0) == items  # seeded
    assert incontext_items(WORLD, n=60, seed=1) != items


def test_training_exercises_never_hold_an_eval_prompt(tmp_path):
    items = incontext_items(WORLD, n=200, seed=0)
    for name, rows in items.items():
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    leak = LeakFilter(needles_from_probes(tmp_path))
    assert len(leak) == 400
    docs = [incontext_doc(i, WORLD, seed=0) for i in range(300)]
    assert all(leak.leaks(d) is None for d in docs)
    planted = docs[0] + "\n\n" + items["kv_recall"][7]["prompt"] + items["kv_recall"][7]["answer"]
    assert leak.leaks(planted) == items["kv_recall"][7]["prompt"]  # the filter would drop it


def test_stream_mixing_replaces_world_documents():
    assert [world_doc(WORLD, i, 0) for i in range(20)] == [WORLD.doc(i, seed=0) for i in range(20)]
    mixed = [world_doc(WORLD, i, 0, 0.3) for i in range(400)]
    n_ic = sum(d != WORLD.doc(i, seed=0) for i, d in enumerate(mixed))
    assert 80 <= n_ic <= 160  # ~30% of 400
    assert all(world_doc(WORLD, i, 0, 1.0) == incontext_doc(i, WORLD, 0) for i in range(10))


def test_committed_suites_are_the_generator_output():
    world = World(0, 20000)
    fresh = incontext_items(world, seed=0)
    for name, rows in fresh.items():
        committed = [json.loads(x) for x in (ROOT / "probes" / f"{name}.jsonl").read_text().splitlines()]
        assert committed == rows
