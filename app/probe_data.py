"""Reading the probe files in ``probes/`` for the app.

APP-LOCAL: these readers belong in ``engram_interp.data`` once it ships loaders for the probe
files; the app should then call those instead. They are tolerant of the exact JSONL fields.

* ``texts()``: plain texts for corpus-level analyses (LogitLens KL, gate tables): every ``text`` /
  ``context`` / ``prompt`` field of the JSONL files in ``probes/``, else a small built-in sample;
* ``entity_texts()``: (text, [(start, end) character spans]) from ``probes/entities_ner.jsonl``;
* ``suites()``: ``{name: [item, ...]}`` for every task-suite JSONL (items with a ``prompt``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from engram_interp.testing import _TEXT  # the tiny tokenizer's training paragraph

BUILTIN_ENTITIES = ("Alexander the Great", "Macedon", "The Milky Way", "Princess of Wales", "London", "France",
                    "Paris", "Italy", "Rome", "New York")
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


def _spans(item: dict[str, Any], text: str) -> list[tuple[int, int]]:
    spans = []
    for key in ("entities", "spans", "ents"):
        for ent in item.get(key) or []:
            if isinstance(ent, dict) and "start" in ent and "end" in ent:
                spans.append((int(ent["start"]), int(ent["end"])))
            elif isinstance(ent, (list, tuple)) and len(ent) >= 2 and all(isinstance(x, int) for x in ent[:2]):
                spans.append((int(ent[0]), int(ent[1])))
            elif isinstance(ent, dict) and isinstance(ent.get("text"), str):
                spans += [(m.start(), m.end()) for m in re.finditer(re.escape(ent["text"]), text)]
            elif isinstance(ent, str):
                spans += [(m.start(), m.end()) for m in re.finditer(re.escape(ent), text)]
    for c in item.get("entity_end_positions") or []:  # the library's format: offset of each final char
        if isinstance(c, int):
            spans.append((c, c + 1))
    if not spans and isinstance(item.get("entity"), str):
        spans = [(m.start(), m.end()) for m in re.finditer(re.escape(item["entity"]), text)]
    return [(s, e) for s, e in spans if 0 <= s < e <= len(text)]


def entity_texts(folder: Path) -> tuple[list[tuple[str, list[tuple[int, int]]]], str]:
    """(texts with named-entity character spans, where they came from)."""
    path = folder / "entities_ner.jsonl"
    out = []
    if path.is_file():
        for item in _read_jsonl(path):
            text = next((item[k] for k in TEXT_KEYS if isinstance(item.get(k), str)), None)
            if text:
                spans = _spans(item, text)
                if spans:
                    out.append((text, spans))
        if out:
            return out, f"{len(out)} texts with named entities from {path}"
    for sent in builtin_sentences():
        spans = [(m.start(), m.end()) for ent in BUILTIN_ENTITIES for m in re.finditer(re.escape(ent), sent)]
        if spans:
            out.append((sent, spans))
    return out, f"{len(out)} built-in sample sentences ({path} not found)"


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
