"""Keep evaluation items out of the training stream.

:class:`LeakFilter` answers "does this training document contain any eval needle verbatim?"
quickly for thousands of needles: each needle is indexed under one of its interior words (the
longest), so a document is only compared (with ``in``) against needles whose key word it contains.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

# Suites whose prompts (and named unseen entities) must never occur in training documents.
# entities/idioms/agreement/copying probe corpus statistics or in-context skills: their short
# prompts ("United") occur in any English text by design.
LEAK_CHECKED_SUITES = ("facts_real", "facts_world", "reading", "open_book", "name_copy", "kv_recall")  # + data/incontext.py

_WORD = re.compile(r"\w+")


def needles_from_probes(probes: Path) -> list[str]:
    """Prompts of the leak-checked suites in ``probes/`` plus every ``meta["entity"]`` of the
    ``reading`` and ``open_book`` suites (names that must never be trained on). Missing files give no needles."""
    needles: list[str] = []
    for suite in LEAK_CHECKED_SUITES:
        path = Path(probes) / f"{suite}.jsonl"
        if not path.exists():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            needles.append(item["prompt"])
            if suite in ("reading", "open_book") and item.get("meta", {}).get("entity"):
                needles.append(item["meta"]["entity"])
    return sorted(set(needles))


class LeakFilter:
    """Verbatim substring test of documents against a fixed set of needles."""

    def __init__(self, needles: Iterable[str]):
        self.by_key: dict[str, list[str]] = {}
        self.unkeyed: list[str] = []
        for n in set(needles):
            if not n.strip():
                continue
            words = _WORD.findall(n)
            # the first/last word of a needle may be a fragment of a longer word in the document,
            # so only interior words (or a lone word when the needle is short) are safe keys
            interior = words[1:-1] if len(words) > 2 else []
            if interior:
                self.by_key.setdefault(max(interior, key=len), []).append(n)
            else:
                self.unkeyed.append(n)
        self.keys = frozenset(self.by_key)

    def __len__(self) -> int:
        return sum(map(len, self.by_key.values())) + len(self.unkeyed)

    def leaks(self, doc: str) -> str | None:
        """The first needle found verbatim in ``doc``, or None."""
        for n in self.unkeyed:
            if n in doc:
                return n
        if not self.by_key:
            return None
        for w in self.keys.intersection(_WORD.findall(doc)):
            for n in self.by_key[w]:
                if n in doc:
                    return n
        return None

    def filter(self, docs: list[str]) -> tuple[list[str], int]:
        """``(kept documents, number dropped)``."""
        kept = [d for d in docs if self.leaks(d) is None]
        return kept, len(docs) - len(kept)
