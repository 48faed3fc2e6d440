"""In-context suites a small model can learn, and the training documents that teach them.

Two tasks, built from the generated world's vocabulary of pseudo-words (``world.syllable_word``)
so that the answer can only come from the prompt, never from memory:

- ``name_copy``: a short passage introduces an unseen three-part name once ("Draventh Mol Kasperu
  was born in Lima."); a later sentence starts the name again with its first part and the answer
  is the rest (" Mol Kasperu"). Greedy exact match. This is the induction-head skill.
- ``kv_recall``: 3-6 lines "Key: value" of unseen pseudo-word keys and 3-4 digit values, then
  "Query: KEY\\nValue:" and the answer is the value of that key (" 4821"); candidates are the
  values listed in the prompt (rank scoring), so chance is 1 / number of pairs.

:func:`incontext_items` writes the evaluation items (``data suites``-style JSONL);
:func:`incontext_doc` renders training documents in the same formats from a disjoint seed space
(``"incontext-train:..."`` vs ``"incontext-eval:..."``), so no eval prompt is ever trained on; the
stream's leak filter checks it as well (:data:`LEAK_SUITES`). Chance level and the scoring rule
of each suite are in :data:`SCORING`.
"""

from __future__ import annotations

import random

from engram_interp.data.world import CITIES, MAJORS, World, syllable_word, unseen_name

__all__ = ["SCORING", "LEAK_SUITES", "incontext_items", "incontext_doc", "name_copy_item", "kv_recall_item"]

SCORING = {
    "name_copy": "greedy exact match of the rest of a name stated once earlier in the prompt",
    "kv_recall": "rank 1 among the values listed in the prompt (summed log-prob); chance = 1 / pairs",
}
LEAK_SUITES = tuple(SCORING)  # their prompts must never appear in training documents

_OPENERS = ("{n} was born in {c}.", "{n} studied {m}.", "{n} moved to {c} last year.", "{n} works as a teacher in {c}.",
            "Yesterday {n} gave a talk about {m}.")
_LATER = ("Friends say that {f}", "Last summer {f}", "Everyone agrees that {f}", "In the end {f}", "Later that day {f}")


def name_copy_item(rng: random.Random, world: World) -> tuple[str, str, dict]:
    """One ``(prompt, answer, meta)`` of the name-copy task: the name appears once, its first part
    starts a later sentence, the answer is the space-led rest of the name."""
    name = unseen_name(rng, world)
    first, rest = name.split(" ", 1)
    city, major = rng.choice(CITIES), rng.choice(MAJORS)
    intro = rng.choice(_OPENERS).format(n=name, c=city, m=major)
    filler = rng.choice(("It was a quiet week.", "The weather was mild.", "Nothing else happened.", ""))
    later = rng.choice(_LATER).format(f=first)
    prompt = " ".join(x for x in (intro, filler, later) if x)
    return prompt, " " + rest, {"name": name, "distance_sentences": 2 if filler else 1}


def kv_recall_item(rng: random.Random, n_pairs: int | None = None) -> tuple[str, str, dict, list[str]]:
    """One ``(prompt, answer, meta, candidates)`` of key-value recall over ``n_pairs`` (3-6) pairs."""
    n = n_pairs or rng.randint(3, 6)
    keys: list[str] = []
    while len(keys) < n:
        k = syllable_word(rng, rng.choice((2, 3)))
        if k not in keys:
            keys.append(k)
    values = [str(v) for v in rng.sample(range(100, 10000), n)]
    asked = rng.randrange(n)
    lines = [f"{k}: {v}" for k, v in zip(keys, values)]
    prompt = "\n".join(lines) + f"\nQuery: {keys[asked]}\nValue:"
    return prompt, " " + values[asked], {"n_pairs": n, "position": asked}, [" " + v for v in values]


def incontext_items(world: World, n: int = 400, seed: int = 0) -> dict[str, list[dict]]:
    """Evaluation items ``{"name_copy": [...], "kv_recall": [...]}``, ``n`` each, schema of
    ``engram_interp.data.suites`` (seed space ``incontext-eval``)."""
    from engram_interp.data.suite_files import _item

    rng = random.Random(f"incontext-eval:{seed}")
    copy, recall = [], []
    for i in range(n):
        p, a, meta = name_copy_item(rng, world)
        copy.append(_item("name_copy", i, p, a, meta))
        p, a, meta, cands = kv_recall_item(rng)
        recall.append(_item("kv_recall", i, p, a, meta, cands))
    return {"name_copy": copy, "kv_recall": recall}


def incontext_doc(index: int, world: World, seed: int = 0) -> str:
    """Training document ``index``: 2-4 exercises of both tasks with their answers filled in
    (seed space ``incontext-train``, disjoint from the evaluation items)."""
    rng = random.Random(f"incontext-train:{seed}:{index}")
    parts = []
    for _ in range(rng.randint(2, 4)):
        if rng.random() < 0.5:
            p, a, _ = name_copy_item(rng, world)
            parts.append(p + a + ".")
        else:
            p, a, _, _ = kv_recall_item(rng)
            parts.append(p + a)
    return "\n\n".join(parts)
