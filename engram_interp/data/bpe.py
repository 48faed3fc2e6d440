"""Train the project's cased byte-level BPE tokenizer on the corpus cache (``tokenizers``)."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path

from engram_interp.data.corpus import load_manifest, read_docs
from engram_interp.data.world import World
from engram_interp.errors import EngramInterpError

SPECIAL_TOKENS = ("<|bos|>", "<|eos|>", "<|pad|>")  # ids 0, 1, 2: the Engram demo's pad_id=2 is our pad
BOS_ID, EOS_ID, PAD_ID = 0, 1, 2


def new_bpe():
    """An untrained cased byte-level BPE (GPT-2 style pre-tokenization, no normalizer)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return tok


def training_texts(cache: Path, world_mb: float = 4.0, seed: int = 0) -> Iterator[str]:
    """Every train-split document of the cache, then ``world_mb`` MB of generated-world documents
    (so fictional names and the question/answer format get merges too)."""
    for entry in load_manifest(cache)["sources"]:
        yield from read_docs(cache, entry["source"], "train")
    world = World(0)
    budget = world_mb * 1e6
    rng = random.Random(seed)
    while budget > 0:
        doc = world.doc(rng.randrange(1 << 30), seed=10_000 + seed)
        budget -= len(doc)
        yield doc


def train_tokenizer(cache: Path, out: Path, vocab_size: int = 8192, world_mb: float = 4.0, force: bool = False,
                    min_frequency: int = 2) -> dict:
    """Train the BPE on the cache and save it to ``out`` (tokenizer JSON). Returns a summary dict
    (vocab size, seconds, bytes per token on the validation split, and the special-token ids)."""
    from tokenizers import pre_tokenizers, trainers

    out = Path(out)
    if out.exists() and not force:
        raise EngramInterpError(f"{out} exists; pass --force to retrain it")
    tok = new_bpe()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=True,
                                  special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    t0 = time.time()
    tok.train_from_iterator(training_texts(cache, world_mb), trainer=trainer)
    seconds = time.time() - t0
    for i, s in enumerate(SPECIAL_TOKENS):
        if tok.token_to_id(s) != i:
            raise RuntimeError(f"special token {s} got id {tok.token_to_id(s)}, expected {i}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(out))
    return {"path": str(out), "vocab_size": tok.get_vocab_size(), "train_seconds": round(seconds, 1),
            "special_tokens": {s: i for i, s in enumerate(SPECIAL_TOKENS)},
            "bytes_per_token_val": bytes_per_token(tok, cache)}


def bytes_per_token(tok, cache: Path, split: str = "val") -> dict[str, float]:
    """UTF-8 bytes per token on each source's ``split`` documents (higher = better compression)."""
    out = {}
    for entry in load_manifest(cache)["sources"]:
        docs = read_docs(cache, entry["source"], split)
        n_tok = sum(len(e.ids) for e in tok.encode_batch(docs))
        out[entry["source"]] = round(sum(len(d.encode()) for d in docs) / max(n_tok, 1), 3)
    return out


def load_tokenizer(path: Path):
    """Load a tokenizer JSON and check the special-token contract (bos 0, eos 1, pad 2)."""
    from tokenizers import Tokenizer

    path = Path(path)
    if not path.exists():
        raise EngramInterpError(f"tokenizer {path} not found (train it with `engram-interp data tokenizer`)")
    tok = Tokenizer.from_file(str(path))
    for i, s in enumerate(SPECIAL_TOKENS):
        if tok.token_to_id(s) != i:
            raise EngramInterpError(f"{path}: special token {s} must have id {i}, has {tok.token_to_id(s)}")
    return tok

