"""Reading the probe files in ``probes/`` for the app.

APP-LOCAL: these readers belong in ``engram_interp.data`` once it ships loaders for the probe
files; the app should then call those instead. They are tolerant of the exact JSONL fields.

* ``texts()``: plain texts for corpus-level analyses (LogitLens KL, gate tables): every ``text`` /
  ``context`` / ``prompt`` field of the JSONL files in ``probes/``, else a small built-in sample;
* ``suites()``: ``{name: [item, ...]}`` for every task-suite JSONL (items with a ``prompt``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from engram_interp.testing import _TEXT  # the tiny tokenizer's training paragraph

TEXT_KEYS = ("text", "context", "passage", "sentence", "prompt")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(item, dict):
                out.append(item)
    return out


def builtin_sentences() -> list[str]:
    return [s.strip() + "." for s in re.split(r"[.;]\s+", _TEXT) if len(s.split()) >= 3]


def texts(folder: Path, limit: int = 2000) -> tuple[list[str], str]:
    """(texts, where they came from)."""
    files = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
    out: list[str] = []
    for path in files:
        for item in _read_jsonl(path):
            for key in TEXT_KEYS:
                if isinstance(item.get(key), str) and item[key].strip():
                    out.append(item[key])
                    break
            if len(out) >= limit:
                break
    if out:
        return out[:limit], f"{len(out[:limit])} texts from {folder}"
    return builtin_sentences(), f"{len(builtin_sentences())} built-in sample sentences ({folder} has no probe files)"


def suites(folder: Path) -> dict[str, list[dict[str, Any]]]:
    """Task suites: every JSONL in ``folder`` whose items have a ``prompt`` (entities_ner excluded)."""
    out = {}
    for path in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
        if path.stem == "entities_ner":
            continue
        items = [i for i in _read_jsonl(path) if isinstance(i.get("prompt"), str)]
        if items:
            out[path.stem] = items
    return out
