"""A balanced design for multiple-choice suites: every item together with its candidate-swapped mirrors.

A model can score above the uniform guess on a multiple-choice suite without reading the prompt,
when its prior over the candidates (their log-prob after BOS alone) happens to favour the gold
answers: " is" over " are", a frequent city over a rare one. A balanced group removes that bias by
construction: k items that share one candidate set C (k = |C|), each candidate the gold answer of
exactly one of them. With the prompt removed every item of a group is the same question, so a
model that ranks by its prior alone gets at most one item of the group right: at most 1 / k, the
uniform guess.

The group of an anchor item A (gold a, candidates C) is A and, for each other candidate c in C, a
mirror: an item of the same suite and kind (the same ``meta`` relation / attribute / phrasing /
condition where the items carry one) whose gold is c and whose prompt differs from A's, asked with
the candidates C. An anchor for which some candidate is nobody's gold has no balanced group and is
left out. A suite "allows" the design when at least one anchor has its group (agreement: every
singular item mirrors a plural one; closed-book facts: the distractors are other facts' answers).
Key-value recall builds its mirrors from the prompt itself: the same pairs, the query asking each
key in turn (:data:`REWRITES`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

__all__ = ["KIND_KEYS", "REWRITES", "mirror_kind", "balanced_groups", "balanced_suites"]

KIND_KEYS = ("relation", "attribute", "phrasing", "condition", "variant")  # meta fields a mirror must share


def mirror_kind(item: dict) -> tuple:
    """What a mirror of ``item`` must share with it: its suite and the ``meta`` fields of :data:`KIND_KEYS`."""
    meta = item.get("meta") or {}
    return (item.get("suite"),) + tuple((k, str(meta[k])) for k in KIND_KEYS if k in meta)


_PAIR = re.compile(r"^(.+): (\d+)$")


def _kv_recall(item: dict) -> list[dict] | None:
    """The mirrors of a key-value recall item (``data.incontext.kv_recall_item``): its prompt with the
    query asking each other key, that key's value the gold; None when the prompt is not in that form."""
    lines = item["prompt"].split("\n")
    if len(lines) < 3 or lines[-1] != "Value:" or not lines[-2].startswith("Query: "):
        return None
    pairs = [_PAIR.match(x) for x in lines[:-2]]
    if not all(pairs) or [" " + m.group(2) for m in pairs] != list(item["candidates"]):
        return None
    head = "\n".join(lines[:-2])
    return [{**item, "id": f"{item.get('id', '')}~mirror~{j}", "prompt": f"{head}\nQuery: {m.group(1)}\nValue:",
             "answer": " " + m.group(2), "meta": {**(item.get("meta") or {}), "position": j}}
            for j, m in enumerate(pairs) if " " + m.group(2) != item["answer"]]


REWRITES: dict[str, Callable[[dict], list[dict] | None]] = {"kv_recall": _kv_recall}  # mirrors from the prompt


def balanced_groups(anchors: Sequence[dict], pool: Sequence[dict] | None = None) -> list[list[dict]]:
    """The balanced group of every anchor that has one (module doc), in anchor order. Mirrors are drawn
    from ``pool`` (default: the anchors themselves; pass the whole suite when the anchors are a
    subsample), the first by id among the items of the same kind whose gold is the candidate. Each
    group's items carry the anchor's candidates and ``meta["group"]`` (the anchor's id); a mirror's id is
    ``ANCHOR~mirror~ITEM``. Items without candidates, or with the gold not among them, are no anchors."""
    pool = list(anchors if pool is None else pool)
    by_gold: dict[tuple, list[dict]] = {}
    for it in sorted(pool, key=lambda x: str(x.get("id", ""))):
        if it.get("candidates"):
            by_gold.setdefault((mirror_kind(it), it["answer"]), []).append(it)
    groups = []
    for i, a in enumerate(anchors):
        cands = a.get("candidates")
        if not cands or a["answer"] not in cands or len(set(cands)) != len(cands):
            continue
        gid = str(a.get("id", i))
        group = [{**a, "meta": {**(a.get("meta") or {}), "group": gid}}]
        rewrite = REWRITES.get(a.get("suite"))
        made = rewrite(a) if rewrite else None
        if made is not None:
            groups.append(group + [{**m, "meta": {**m["meta"], "group": gid}} for m in made])
            continue
        for c in cands:
            if c == a["answer"]:
                continue
            m = next((x for x in by_gold.get((mirror_kind(a), c), []) if x["prompt"] != a["prompt"]), None)
            if m is None:
                break
            group.append({**m, "id": f"{gid}~mirror~{m.get('id', '')}", "candidates": list(cands),
                          "meta": {**(m.get("meta") or {}), "group": gid}})
        else:
            groups.append(group)
    return groups


def balanced_suites(suites: dict[str, list[dict]], pools: dict[str, list[dict]] | None = None,
                    ) -> tuple[dict[str, list[dict]], dict[str, dict]]:
    """Each suite replaced by its balanced groups (flattened) where it allows one, else kept as it is.
    Returns ``(suites, design)`` with ``design[suite] = {"balanced": bool, "groups", "items", "anchors",
    "dropped"}`` (anchors without a complete group) and, for a suite kept as it is, ``"reason"``."""
    out, design = {}, {}
    for name, items in suites.items():
        groups = balanced_groups(items, (pools or {}).get(name))
        ranked = sum(1 for it in items if it.get("candidates"))
        info = {"balanced": bool(groups), "groups": len(groups), "items": sum(map(len, groups)),
                "anchors": ranked, "dropped": ranked - len(groups)}
        if groups:
            out[name] = [it for g in groups for it in g]
        else:
            out[name] = items
            info["reason"] = ("no candidates to balance" if not ranked else
                              "no item has a mirror for every candidate (a candidate is no other item's gold)")
        design[name] = info
    return out, design
