"""Task-suite files: the item schema, reading (validated, one line per bad item) and writing JSONL
suites, subsampling and overlength checks. The suites themselves are built in ``engram_interp.data.suites``."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engram_interp.errors import EngramInterpError
from engram_interp.io import atomic_write_text, loads_strict, quote, read_regular_text

REQUIRED = ("id", "suite", "prompt", "answer", "meta")


def validate_item(item: dict) -> None:
    """Raise ValueError unless ``item`` follows the schema."""
    for k in REQUIRED:
        if k not in item:
            raise ValueError(f"item {item.get('id')}: missing {k!r}")
    if not isinstance(item["prompt"], str) or not item["prompt"]:
        raise ValueError(f"item {item['id']}: empty prompt")
    if not isinstance(item["answer"], str) or not item["answer"].startswith(" ") or not item["answer"].strip():
        raise ValueError(f"item {item['id']}: answer must be a non-empty string starting with a space")
    if "candidates" in item:
        c = item["candidates"]
        if not isinstance(c, list) or item["answer"] not in c or len(set(c)) != len(c):
            raise ValueError(f"item {item['id']}: candidates must be distinct and contain the answer")
    if not isinstance(item["meta"], dict):
        raise ValueError(f"item {item['id']}: meta must be an object")


def _item(suite: str, i: int, prompt: str, answer: str, meta: dict, candidates: list[str] | None = None) -> dict:
    item = {"id": f"{suite}-{i:05d}", "suite": suite, "prompt": prompt, "answer": answer}
    if candidates is not None:
        item["candidates"] = candidates
    item["meta"] = meta
    return item


def write_jsonl(path: Path, items: list[dict]) -> None:
    """Validate every item and write one JSON object per line (UTF-8, sorted meta keys)."""
    for it in items:
        validate_item(it)
    atomic_write_text(path, "".join(json.dumps(it, ensure_ascii=False) + "\n" for it in items), force=True)


DEFAULT_SUITES = Path(__file__).resolve().parents[2] / "probes"  # the bundled suites (default of every command)


def _suite_item(raw: Any, where: str, stem: str, line: int) -> dict:
    """One JSONL line's object -> a checked item (see :func:`read_suites`)."""
    if not isinstance(raw, dict):
        raise EngramInterpError(f"{where}: expected a JSON object with 'prompt' and 'answer'")
    for key in ("prompt", "answer"):
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise EngramInterpError(f"{where}: {key!r} must be a non-empty string, got {quote(raw.get(key))}")
    for key, value in [("prompt", raw["prompt"]), ("answer", raw["answer"]), *(("candidates", c) for c in
                                                                           raw.get("candidates") or [] if isinstance(c, str))]:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise EngramInterpError(f"{where}: {key!r} is not valid UTF-8 text (a lone surrogate)") from None
    item = dict(raw)
    item["id"] = str(item.get("id", f"{stem}:{line}"))
    item["suite"] = str(item.get("suite") or stem)
    cands = item.get("candidates")
    if cands is not None:
        if not isinstance(cands, list) or not all(isinstance(c, str) and c.strip() for c in cands):
            raise EngramInterpError(f"{where}: 'candidates' must be a list of non-empty strings, got {quote(cands)}")
        if len(set(cands)) != len(cands):
            raise EngramInterpError(f"{where}: 'candidates' has duplicates")
        if not set(cands) - {item["answer"]}:
            raise EngramInterpError(f"{where}: 'candidates' needs at least one candidate besides the answer")
        if item["answer"] not in cands:
            raise EngramInterpError(f"{where}: the answer {quote(item['answer'], 60)} is not among its candidates "
                                    "(the candidates must include the gold answer)")
        item["candidates"] = cands
    return item


def read_suites(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> dict[str, list[dict]]:
    """The one suite reader: JSONL files (or folders of them) -> ``{suite name: [items]}``.

    In a folder, every ``*.jsonl`` whose first item has a ``prompt`` is read (probe sets such as
    ``entities_ner.jsonl`` are skipped). Items keep all their fields; ``prompt`` and ``answer`` must
    be non-empty strings. ``suite`` defaults to the file stem, ``id`` to ``stem:line``; when
    ``candidates`` is given it must be a list of distinct non-empty strings, and the answer is
    prepended if missing (at least two candidates in all). Raises EngramInterpError for a missing
    path, a file that is not UTF-8, a malformed line, or no items at all.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files: list[tuple[Path, str]] = []
    for p in map(Path, paths):
        if p.is_dir():
            for f in sorted(p.glob("*.jsonl")):
                text = read_regular_text(f, "suite file")
                first = next((line for line in text.splitlines() if line.strip()), "")
                try:
                    if "prompt" in json.loads(first):
                        files.append((f, text))
                except (json.JSONDecodeError, TypeError, ValueError, RecursionError):
                    continue
        elif p.exists():
            files.append((p, read_regular_text(p, "suite file")))
        else:
            raise EngramInterpError(f"no such suite file or folder: {p}")
    out: dict[str, list[dict]] = {}
    for f, text in files:
        for i, line in enumerate(text.splitlines()):
            if not line.strip():
                continue
            where = f"{f}:{i + 1}"
            try:
                raw = loads_strict(line, where)
            except EngramInterpError:
                raise EngramInterpError(f"{where}: expected a JSON object with 'prompt' and 'answer'") from None
            item = _suite_item(raw, where, f.stem, i + 1)
            out.setdefault(item["suite"], []).append(item)
    if not any(out.values()):
        raise EngramInterpError("the task suites hold no items")
    return out


def overlong_items(model, suites: dict[str, list[dict]]) -> dict[str, int]:
    """Per suite, how many items do not fit the model's context (BOS + prompt + the longest of
    answer and candidates > ``model.info.max_seq_len``; scoring cuts their prompts from the left).
    Returns ``{suite: count}`` for the suites with at least one."""
    limit = model.info.max_seq_len - (1 if model.info.bos_token_id is not None else 0)
    out = {}
    for name, items in suites.items():
        n = 0
        for it in items:
            cont = max((len(model.encode(c)) for c in it.get("candidates") or [it["answer"]]), default=0)
            n += len(model.encode(it["prompt"])) + cont > limit
        if n:
            out[name] = n
    return out


def subsample_suites(suites: dict[str, list[dict]], max_items: int | None, seed: int = 0) -> dict[str, list[dict]]:
    """At most ``max_items`` items per suite, drawn without replacement by ``Random(f"{seed}:{suite}")``
    and kept in file order (every item when ``max_items`` is None or not smaller)."""
    import random

    out = {}
    for name, items in suites.items():
        if max_items is None or len(items) <= max_items:
            out[name] = list(items)
        else:
            keep = sorted(random.Random(f"{seed}:{name}").sample(range(len(items)), max_items))
            out[name] = [items[i] for i in keep]
    return out
