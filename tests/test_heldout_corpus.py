"""The default corpus is held-out text only (issue 9, item 9): no default probe paragraph occurs
in the training sources."""

from __future__ import annotations

from pathlib import Path

import pytest

from engram_interp.analysis.common import PROBE_TEXTS, default_texts, read_texts
from engram_interp.data.corpus import decode_docs, default_cache

ROOT = Path(__file__).resolve().parents[1]
SEEN = ROOT / "probes" / "seen"  # text that is in the training mix (Pride and Prejudice, Moby-Dick, ...)


def _norm(text: str) -> str:
    return " ".join(text.split())


def _needles(texts: list[str]) -> list[str]:
    return [_norm(t)[:200] for t in texts if len(_norm(t)) >= 80]


@pytest.fixture
def default_folder_texts(monkeypatch) -> list[str]:
    """What the analyses read by default when no data cache exists: every *.txt of probes/texts/."""
    monkeypatch.setenv("ENGRAM_INTERP_CORPUS", str(PROBE_TEXTS))
    return default_texts()


def test_no_default_paragraph_is_from_the_shipped_training_text(default_folder_texts):
    seen = " \n ".join(_norm(t) for f in sorted(SEEN.glob("*.txt")) for t in read_texts(f))
    assert seen, "probes/seen/ holds the in-training sample"
    leaks = [n for n in _needles(default_folder_texts) if n in seen]
    assert not leaks, f"{len(leaks)} default paragraphs are training text, e.g. {leaks[0][:80]!r}"
    seen_paragraphs = {_norm(t)[:200] for f in SEEN.glob("*.txt") for t in read_texts(f)}
    assert not seen_paragraphs & {_norm(t)[:200] for t in default_folder_texts}


def test_no_default_paragraph_occurs_in_the_training_split_of_the_data_cache(default_folder_texts):
    """Against every ``*.train.txt.xz`` of the data cache (``engram-interp data build``), when one exists."""
    import lzma

    files = sorted(default_cache().glob("*.train.txt.xz"))
    if not files:
        pytest.skip(f"no training split in {default_cache()} (engram-interp data build)")
    needles = _needles(default_folder_texts)
    for f in files:
        train = " \n ".join(_norm(d) for d in decode_docs(lzma.decompress(f.read_bytes())))
        leaks = [n for n in needles if n in train]
        assert not leaks, f"{f.name}: {len(leaks)} default paragraphs occur in training, e.g. {leaks[0][:80]!r}"
