"""checkpoints/recipes/pilots/README.md states the pilot cards' figures (no figure typed by hand)."""

from __future__ import annotations

import json
from pathlib import Path

from engram_interp.data.suite_files import read_suites, subsample_suites
from engram_interp.claims.sentences import chance_level

PILOTS = Path(__file__).resolve().parents[1] / "checkpoints" / "recipes" / "pilots"
ROOT = PILOTS.parents[2]


def test_pilot_table_equals_the_cards():
    text = (PILOTS / "README.md").read_text(encoding="utf-8")
    cards = {n: json.loads((PILOTS / f"card-{n}.json").read_text()) for n in ("moe-2m", "engram-2m", "moe-8m")}
    rows = {line.split("|")[1].split("(")[0].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in text.splitlines() if line.startswith("| ") and not line.startswith("| suite")}
    assert len(rows) == 5
    for suite, (chance, *measured) in rows.items():
        assert measured == [f"{c['suites'][suite]['accuracy']:.3f}" for c in cards.values()], suite
        assert all(set(c["suites"]) == set(rows) for c in cards.values())
        if suite != "facts_world":  # the pilot's facts_world is the 300-person one (README), not probes/'s
            items = subsample_suites(read_suites(ROOT / "probes" / f"{suite}.jsonl"), 200, seed=0)[suite]
            assert chance == f"{chance_level(items):.3f}", suite
    for n, card in cards.items():
        assert card["settings"]["max_items"] == 200 and card["provenance"]["data"]["meta"]["config"]["people"] == 300
        assert f"{card['val_loss']['real']:.3f}" in text and f"{card['val_loss']['world']:.3f}" in text
    assert cards["moe-8m"]["provenance"]["tokens"] == 4 * cards["moe-2m"]["provenance"]["tokens"]
    assert cards["engram-2m"]["provenance"]["tokens"] == cards["moe-2m"]["provenance"]["tokens"]
    assert [c["provenance"]["kind"] for c in cards.values()] == ["moe", "engram", "moe"]
