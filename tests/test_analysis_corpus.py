"""The default analysis corpus: the data cache's held-out documents when a cache exists, else probes/texts/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engram_interp.analysis.common import PROBE_TEXTS, default_corpus_path, default_texts, read_texts
from engram_interp.data.corpus import MANIFEST, encode_docs, write_xz
from engram_interp.errors import EngramInterpError


def _cache(root: Path, sources: dict[str, tuple[str, list[str], list[str]]]) -> Path:
    """A minimal built cache: {name: (kind, train docs, val docs)} written with the corpus writers."""
    root.mkdir(parents=True, exist_ok=True)
    entries = []
    for name, (kind, train, val) in sources.items():
        write_xz(root / f"{name}.train.txt.xz", encode_docs(train))
        write_xz(root / f"{name}.val.txt.xz", encode_docs(val))
        entries.append({"source": name, "kind": kind})
    (root / MANIFEST).write_text(json.dumps({"format_version": 1, "sources": entries}))
    return root


@pytest.fixture
def no_env(monkeypatch, tmp_path):
    monkeypatch.delenv("ENGRAM_INTERP_CORPUS", raising=False)
    monkeypatch.setenv("ENGRAM_INTERP_CACHE", str(tmp_path / "no-cache-here"))


def test_falls_back_to_probe_texts(no_env):
    assert default_corpus_path() == PROBE_TEXTS
    assert default_texts() == [t for f in sorted(PROBE_TEXTS.glob("*.txt")) for t in read_texts(f)]


def test_reads_validation_docs_of_the_data_cache(no_env, tmp_path, monkeypatch):
    cache = _cache(tmp_path / "data", {
        "austen": ("prose", ["train A"], ["val A1", "val A2", "val A3"]),
        "gcide": ("reference", ["train G"], ["val G1"]),
        "kjv": ("prose", ["train K"], ["val K1\nsecond paragraph"]),
    })
    monkeypatch.setenv("ENGRAM_INTERP_CACHE", str(cache))
    assert default_corpus_path() == cache
    # prose sources only, val split only, round-robin across sources; documents kept whole
    assert default_texts() == ["val A1", "val K1\nsecond paragraph", "val A2", "val A3"]
    monkeypatch.setenv("ENGRAM_INTERP_CORPUS", str(tmp_path / "data"))  # the explicit variable may name a cache too
    assert default_texts()[0] == "val A1"


def test_reference_only_cache_and_empty_cache(no_env, tmp_path, monkeypatch):
    monkeypatch.setenv("ENGRAM_INTERP_CACHE", str(_cache(tmp_path / "ref", {"gcide": ("reference", ["t"], ["v G"])})))
    assert default_texts() == ["v G"]
    monkeypatch.setenv("ENGRAM_INTERP_CACHE", str(_cache(tmp_path / "empty", {"austen": ("prose", ["t"], [])})))
    with pytest.raises(EngramInterpError, match="no validation documents"):
        default_texts()
