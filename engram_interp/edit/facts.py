"""Facts to write: the ``--facts`` file and counterfactual facts drawn from the ``facts_world`` suite.

A facts file is JSON lines, one object per fact::

    {"prompt": str, "target": str, "candidates": [str, ...]?, "paraphrases": [str, ...]?,
     "neighbours": [str | {"prompt": str, "answer": str, "candidates": [str, ...]?}, ...]?}

``target`` is the continuation to write (leading space included, as in the task suites); with
``candidates`` efficacy is "target ranked first among them by summed log-probability" (the target is
added when missing), without them "target is the greedy continuation". ``paraphrases`` are other
prompts that should now give the target (generalisation, never trained on); ``neighbours`` are
prompts whose prediction must not move (trained to stay, see ``edit.method``).
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence

from engram_interp.errors import EngramInterpError
from engram_interp.io import loads_strict, quote, read_regular_text

__all__ = ["read_facts", "check_fact", "counterfactual_facts"]

MAX_FACTS = 10_000
FACTS_LIMIT = 64 * 2**20  # bytes


def _strings(v, where: str, what: str) -> list[str]:
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
        raise EngramInterpError(f"{where}: {what!r} must be a list of non-empty strings")
    return list(v)


def check_fact(raw, where: str) -> dict:
    """One fact object (see the module docstring) checked and normalised; a one-line user error naming
    ``where`` otherwise."""
    if not isinstance(raw, dict):
        raise EngramInterpError(f"{where}: a fact must be a JSON object, got {type(raw).__name__}")
    unknown = sorted(set(raw) - {"prompt", "target", "candidates", "paraphrases", "neighbours", "id", "meta", "answer"})
    if unknown:
        raise EngramInterpError(f"{where}: unknown field(s) {quote(unknown)} (a fact has prompt, target, candidates, "
                                "paraphrases, neighbours)")
    for key in ("prompt", "target"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise EngramInterpError(f"{where}: {key!r} must be a non-empty string")
    fact = {"prompt": raw["prompt"], "target": raw["target"]}
    if raw.get("candidates") is not None:
        cands = _strings(raw["candidates"], where, "candidates")
        cands = cands if raw["target"] in cands else [raw["target"], *cands]
        if len(cands) > 1:  # the target alone is no choice: efficacy is then the greedy continuation
            fact["candidates"] = cands
    fact["paraphrases"] = _strings(raw.get("paraphrases") or [], where, "paraphrases")
    neighbours = []
    for j, n in enumerate(raw.get("neighbours") or []):
        if isinstance(n, str) and n:
            neighbours.append({"prompt": n})
        elif isinstance(n, dict) and isinstance(n.get("prompt"), str) and n["prompt"]:
            neighbours.append({k: n[k] for k in ("prompt", "answer", "candidates") if k in n})
        else:
            raise EngramInterpError(f"{where}: neighbours[{j}] must be a prompt or {{prompt, answer?, candidates?}}")
    fact["neighbours"] = neighbours
    for key in ("id", "answer", "meta"):
        if key in raw:
            fact[key] = raw[key]
    return fact


def read_facts(path: str | os.PathLike) -> list[dict]:
    """The facts of a JSON-lines file (blank lines skipped), each checked by :func:`check_fact`."""
    text = read_regular_text(path, "facts file", FACTS_LIMIT)
    facts = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{quote(os.fspath(path))} line {i}"
        facts.append(check_fact(loads_strict(line, where), where))
        if len(facts) > MAX_FACTS:
            raise EngramInterpError(f"{quote(os.fspath(path))} holds more than {MAX_FACTS:,} facts")
    if not facts:
        raise EngramInterpError(f"{quote(os.fspath(path))} holds no facts (one JSON object per line)")
    return facts


def counterfactual_facts(items: Sequence[dict], n: int, seed: int = 0) -> list[dict]:
    """``n`` counterfactual facts from ``facts_world`` suite items: for ``n`` people (drawn with ``seed``)
    their cloze item, with a wrong candidate as the target; as the paraphrase, the held-out question
    of the same attribute about the same person (``world.EVAL_QUESTIONS``, the suite's question
    format); as a neighbour, the person's question item of another attribute (its gold answer must
    stay). ``meta.gold``: the suite's answer the edit overrides."""
    from engram_interp.data.world import EVAL_QUESTIONS

    by_person: dict[int, list[dict]] = {}
    for it in items:
        if it.get("suite") == "facts_world" and it.get("candidates"):
            by_person.setdefault(it["meta"]["person_index"], []).append(it)
    people = sorted(p for p, its in by_person.items() if any(i["meta"]["phrasing"] == "cloze" for i in its))
    if n > len(people):
        raise EngramInterpError(f"asked for {n} counterfactual facts; the items hold {len(people)} people with a cloze item")
    rng = random.Random(f"counterfactual:{seed}")
    facts = []
    for p in sorted(rng.sample(people, n)):
        cloze = next(i for i in by_person[p] if i["meta"]["phrasing"] == "cloze")
        others = [i for i in by_person[p] if i is not cloze]
        target = rng.choice([c for c in cloze["candidates"] if c != cloze["answer"]])
        attr, name = cloze["meta"]["attribute"], cloze["meta"]["name"]
        same = [f"Question: {q.format(n=name)}\nAnswer:" for q in EVAL_QUESTIONS[attr]]
        neigh = [{"prompt": i["prompt"], "answer": i["answer"], "candidates": i["candidates"]} for i in others
                 if i["meta"]["attribute"] != attr]
        facts.append({"id": cloze["id"], "prompt": cloze["prompt"], "target": target, "candidates": list(cloze["candidates"]),
                      "paraphrases": same, "neighbours": neigh, "meta": {**cloze["meta"], "gold": cloze["answer"]}})
    return facts
