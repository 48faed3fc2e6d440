"""Corpus cache: split, serialization, manifest and --force logic, on a fake source (no network)."""

import hashlib
import json
import lzma
from pathlib import Path

import pytest

from engram_interp.data import corpus
from engram_interp.data.sources import Source
from engram_interp.errors import EngramInterpError

DOCS = [f"Document number {i}. It has some words in it." for i in range(50)]


def _fake_sources(monkeypatch, extra_fail=False):
    good = Source("fake", "npm", ("fake@1.0.0",), "public domain", "inline", lambda root: list(DOCS))
    bad = Source("broken", "npm", ("broken@0",), "none", "inline", lambda root: [])
    monkeypatch.setattr(corpus, "by_name", lambda names: [good, bad] if extra_fail else [good])

    def fetcher(source, downloads):
        if source.name == "broken":
            raise RuntimeError("registry unreachable")
        return Path(downloads), {p: p.split("@")[-1] for p in source.packages}

    return fetcher


def test_split_is_seeded_by_document_and_disjoint():
    a = corpus.split_docs(DOCS, "fake", 0.1, seed=0)
    b = corpus.split_docs(DOCS, "fake", 0.1, seed=0)
    c = corpus.split_docs(DOCS, "fake", 0.1, seed=1)
    assert a == b and a != c
    assert len(a.val) == 5 and len(a.train) == 45
    assert not set(a.val) & set(a.train) and sorted(a.val + a.train) == sorted(DOCS)


def test_encode_decode_roundtrip():
    docs = ["one\n\ntwo", "three \x1e four"]
    assert corpus.decode_docs(corpus.encode_docs(docs)) == ["one\n\ntwo", "three  four"]
    assert corpus.decode_docs(b"") == []


def test_build_writes_manifest_and_refuses_overwrite(tmp_path, monkeypatch):
    fetcher = _fake_sources(monkeypatch, extra_fail=True)
    cache = tmp_path / "data"
    with pytest.warns(UserWarning, match="skipping source broken"):
        m = corpus.build_corpus(cache, tmp_path / "dl", fetcher=fetcher, val_fraction=0.1, progress=False)
    (entry,) = m["sources"]
    assert entry["source"] == "fake" and entry["packages"] == {"fake@1.0.0": "1.0.0"}
    assert entry["n_docs"] == 50 and entry["n_docs_val"] == 5
    assert m["skipped"][0]["source"] == "broken"
    train = corpus.read_docs(cache, "fake", "train")
    val = corpus.read_docs(cache, "fake", "val")
    assert sorted(train + val) == sorted(DOCS)
    raw = lzma.decompress((cache / "fake.train.txt.xz").read_bytes()) + b"\n\x1e\n" + \
        lzma.decompress((cache / "fake.val.txt.xz").read_bytes())
    assert entry["sha256"] == hashlib.sha256(raw).hexdigest()
    assert entry["bytes"] == len(raw) - 3
    assert json.loads((cache / "manifest.json").read_text()) == m
    with pytest.raises(EngramInterpError, match="--force"):
        corpus.build_corpus(cache, tmp_path / "dl", fetcher=fetcher, progress=False)
    with pytest.warns(UserWarning):
        corpus.build_corpus(cache, tmp_path / "dl", fetcher=fetcher, force=True, progress=False)


def test_budget_drops_source(tmp_path, monkeypatch):
    fetcher = _fake_sources(monkeypatch)
    with pytest.warns(UserWarning, match="budget"):
        m = corpus.build_corpus(tmp_path / "c", tmp_path / "dl", fetcher=fetcher, budget_mib=1e-6, progress=False)
    assert m["sources"] == [] and "budget" in m["skipped"][0]["reason"]
    assert not list((tmp_path / "c").glob("*.xz"))


def test_build_from_a_local_text_file(tmp_path, capsys):
    """`engram-interp data build --text FILE`: a user's text file is a source, read in place."""
    from engram_interp.cli import main

    text = tmp_path / "My Book.txt"
    paras = [f"Paragraph {i} of the book,\nhard-wrapped here. " + "Words and more words. " * 10 for i in range(30)]
    text.write_text("\n\n".join(paras), encoding="utf-8")
    cache = tmp_path / "cache"
    assert main(["data", "build", "--cache", str(cache), "--text", str(text), "--doc-chars", "600",
                 "--val-fraction", "0.2"]) == 0
    assert "text_my_book" in capsys.readouterr().out
    m = corpus.load_manifest(cache)
    (entry,) = m["sources"]
    assert entry["source"] == "text_my_book" and entry["registry"] == "local" and entry["url"] == str(text.resolve())
    assert entry["packages"] == {"My Book.txt": "sha256:" + hashlib.sha256(text.read_bytes()).hexdigest()[:16]}
    train, val = corpus.read_docs(cache, "text_my_book", "train"), corpus.read_docs(cache, "text_my_book", "val")
    assert len(val) == entry["n_docs_val"] >= 1 and len(train) + len(val) == entry["n_docs"] > 5
    joined = "\n\n".join(train + val)
    assert "hard-wrapped" in joined and "book,\nhard" not in joined  # hard wraps joined, paragraphs kept
    assert sorted(p.split(" of the book")[0] for p in joined.split("\n\n")) == sorted(f"Paragraph {i}" for i in range(30))
    assert corpus.validation_docs(cache) == val
