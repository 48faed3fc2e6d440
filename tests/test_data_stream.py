"""Tokenize round trip on a tiny cache built in a tmp dir, and the eval-leak filter."""

import json
from pathlib import Path

import numpy as np
import pytest

from engram_interp.data import corpus
from engram_interp.data.leakage import LeakFilter, needles_from_probes
from engram_interp.data.stream import StreamConfig, load_stream, write_stream

LEAK = "The national government of Freedonia sits in the city of"


def test_leak_filter():
    f = LeakFilter([LEAK, "Zyx Quorb Plent", "ab"])
    assert f.leaks("blah. " + LEAK + " Fredville.") == LEAK
    assert f.leaks("He met Zyx Quorb Plent there.") == "Zyx Quorb Plent"
    assert f.leaks("The national government of Freedonia sits in Fredville.") is None
    assert f.filter(["x ab y", "nothing"]) == (["nothing"], 1)


@pytest.fixture()
def tiny(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    docs = [f"Real document {i} about whales, ships and the sea, number {i}." for i in range(40)]
    docs.append("A leaky page: " + LEAK + " Fredville.")
    split = corpus.split_docs(docs, "tiny", 0.1, 0)
    corpus.write_xz(cache / "tiny.train.txt.xz", corpus.encode_docs(split.train))
    corpus.write_xz(cache / "tiny.val.txt.xz", corpus.encode_docs(split.val))
    (cache / corpus.MANIFEST).write_text(json.dumps({"sources": [{"source": "tiny"}]}))
    probes = tmp_path / "probes"
    probes.mkdir()
    item = {"id": "facts_real-00000", "suite": "facts_real", "prompt": LEAK, "answer": " Fredville",
            "meta": {"relation": "country_capital", "subject": "Freedonia", "value": "Fredville"}}
    (probes / "facts_real.jsonl").write_text(json.dumps(item) + "\n")
    from engram_interp.data.bpe import SPECIAL_TOKENS, new_bpe
    from tokenizers import pre_tokenizers, trainers

    tok = new_bpe()
    tok.train_from_iterator(docs * 3, trainers.BpeTrainer(vocab_size=400, special_tokens=list(SPECIAL_TOKENS),
                                                          initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                          show_progress=False))
    tok.save(str(tmp_path / "tok.json"))
    return cache, tmp_path / "tok.json", probes, split, tok


def test_tokenize_roundtrip_and_no_leak(tiny, tmp_path):
    cache, tok_path, probes, split, tok = tiny
    cfg = StreamConfig(tokens=6000, real_fraction=0.5, fact_fraction=0.05, seed=1, people=200, workers=2,
                       val_world_tokens=500)
    meta = write_stream(cache, tok_path, tmp_path / "out", cfg, probes=probes, progress=False)
    train = load_stream(tmp_path / "out", "train")
    assert train.dtype == np.uint16 and len(train) == 6000 and train[0] == 0
    docs = [tok.decode(list(d)) for d in np.split(np.asarray(train), np.flatnonzero(np.asarray(train) == 0))[1:]]
    real = set(split.train)
    n_real = sum(d in real for d in docs[:-1])
    assert n_real > 0
    assert not any(LEAK in d for d in docs)
    train_leaky = "A leaky page: " + LEAK + " Fredville." in split.train
    assert meta["leak_check"]["dropped_docs"].get("tiny", 0) == int(train_leaky)
    assert any(d.startswith("Question:") or "was born" in d or "birthday" in d for d in docs)  # world docs mixed in
    assert any("Freedonia" in d for d in docs)  # real-fact sentences in TRAIN phrasings
    fam = meta["train_tokens_by_family"]
    assert sum(fam.values()) >= 6000 and abs(fam["real"] / 6000 - 0.5) < 0.1
    assert meta["real_epochs"] > 1 and meta["unique_real_tokens"] > 0
    val_real = np.asarray(load_stream(tmp_path / "out", "val_real"))
    vdocs = [tok.decode(list(d)) for d in np.split(val_real, np.flatnonzero(val_real == 0))[1:]]
    assert sorted(vdocs) == sorted(split.val)
    assert len(load_stream(tmp_path / "out", "val")) == len(val_real) + meta["files"]["val_world.bin"]["tokens"]
    # same seed -> identical bytes, whatever the worker count
    write_stream(cache, tok_path, tmp_path / "out2", StreamConfig(**{**cfg.__dict__, "workers": 1}), probes=probes,
                 progress=False)
    assert (tmp_path / "out" / "train.bin").read_bytes() == (tmp_path / "out2" / "train.bin").read_bytes()
    assert needles_from_probes(probes) == [LEAK]


def test_tokenize_refuses_a_world_other_than_the_suites(tiny, tmp_path):
    """probes/facts_world.jsonl names the world it was built for; a stream of another world is refused
    before any work (its closed-book facts would be about people the stream barely mentions)."""
    from engram_interp.data.suites import facts_world_items
    from engram_interp.data.world import DEFAULT_PEOPLE, World
    from engram_interp.errors import EngramInterpError

    cache, tok_path, probes, _, _ = tiny
    items = facts_world_items(World(0, 40), n_people=5)
    (probes / "facts_world.jsonl").write_text("".join(json.dumps(x) + "\n" for x in items))
    cfg = StreamConfig(tokens=2000, people=200, workers=1, val_world_tokens=200)
    with pytest.raises(EngramInterpError, match="--people 40"):
        write_stream(cache, tok_path, tmp_path / "bad", cfg, probes=probes, progress=False)
    assert not (tmp_path / "bad").exists()
    ok = StreamConfig(tokens=2000, people=40, workers=1, val_world_tokens=200)
    assert write_stream(cache, tok_path, tmp_path / "ok", ok, probes=probes, progress=False)["config"]["people"] == 40
    # the committed suites and the CLI default describe the same world
    first = json.loads((Path(__file__).resolve().parents[1] / "probes" / "facts_world.jsonl").open().readline())
    assert first["meta"]["world_people"] == DEFAULT_PEOPLE == StreamConfig(tokens=1).people
