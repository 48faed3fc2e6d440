"""Hashing and compression against docs/ENGRAM.md known answers and independent recomputation."""

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models

from engram_interp.model.hashing import is_prime, layer_multipliers, ngram_hash_ids, table_sizes
from engram_interp.testing import tiny_model
from engram_interp.tokenizer import build_compression


def test_demo_prime_walk():
    sizes = table_sizes([1, 15], 3, 8, [646400, 646400])
    assert sizes[0][:3] == [646403, 646411, 646421]
    assert sizes[0][8] == 646537  # order 3 of layer 1
    assert sizes[1][0] == 646631  # layer 15 continues the global walk
    assert sum(sizes[0]) == 10_344_164 and sum(sizes[1]) == 10_348_242


def test_deepseek_v41_prime_walk():
    sizes = table_sizes([1, 14], 4, 8, [16_000_000] * 3)
    assert sizes[0][:3] == [16000057, 16000079, 16000081]
    assert sum(sizes[0]) == 384_006_168 and sum(sizes[1]) == 384_016_682
    flat = [p for layer in sizes for p in layer]
    assert len(set(flat)) == len(flat) and all(is_prime(p) for p in flat)


def test_multipliers_known_answer():
    assert layer_multipliers(0, 1, 4, 99_092).tolist() == [76632096046245, 4839876093313, 35959672319349, 73987337458391]


def test_is_prime_against_sieve():
    n = 5000
    sieve = np.ones(n, bool)
    sieve[:2] = False
    for i in range(2, int(n**0.5) + 1):
        sieve[i * i :: i] = False
    assert [is_prime(i) for i in range(n)] == sieve.tolist()


def _reference_hash(ids, mults, primes, k_heads, pad):
    """Pure-Python integer recomputation of docs/ENGRAM.md section 3."""
    out = []
    for row in ids:
        out_row = []
        for t in range(len(row)):
            hashes = []
            for n in range(2, len(mults) + 1):
                mix = 0
                for j in range(n):
                    x = row[t - j] if t - j >= 0 else pad
                    mix ^= x * mults[j]
                for k in range(k_heads):
                    hashes.append(mix % primes[(n - 2) * k_heads + k])
            out_row.append(hashes)
        out.append(out_row)
    return out


def test_hash_hook_equals_independent_int64_recomputation():
    model = tiny_model("engram")
    tokens = model.to_tokens(["Alexander the Great was a king.", "By the way"])
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_hash_ids"))
    table = model.compression.table
    pad = int(table[model.cfg.engram.pad_id])
    canonical = [[int(table[t]) for t in row] for row in tokens.tolist()]
    for i, layer in enumerate(model.cfg.engram.layer_ids):
        mults = list(model.cfg.engram.multipliers[i])
        primes = list(model.cfg.engram.table_sizes[i])
        ref = _reference_hash(canonical, mults, primes, model.cfg.engram.n_head_per_ngram, pad)
        got = cache[f"blocks.{layer}.engram.hook_hash_ids"]
        assert got.dtype == torch.int64
        assert got.tolist() == ref


def test_hash_no_overflow_at_largest_canonical_id():
    v = 99_092
    mults = torch.tensor(layer_multipliers(0, 1, 4, v))
    primes = torch.tensor(table_sizes([1], 4, 2, [1000] * 3)[0])
    ids = torch.tensor([[v - 1, v - 2, v - 1, v - 3]])
    got = ngram_hash_ids(ids, mults, primes, 2, pad_id=0)
    ref = _reference_hash(ids.tolist(), mults.tolist(), primes.tolist(), 2, 0)
    assert got.tolist() == ref and (got >= 0).all()


def test_compression_hand_computed():
    vocab = {"<|pad|>": 0, "Hello": 1, "hello": 2, "HÉLLO": 3, "ﬁsh": 4, "fish": 5, " ": 6, "  ": 7, "\t": 8, "x": 9}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|pad|>"))
    comp = build_compression(tok)
    # hello-variants merge; the ligature 'ﬁ' NFKC-folds to 'fi'; whitespace runs collapse to a kept ' '
    assert comp.table.tolist() == [0, 1, 1, 1, 2, 2, 3, 3, 3, 4]
    assert comp.n_canonical == 5
    assert comp.reduction == pytest.approx(0.5)


def test_compression_byte_level_partial_tokens_keep_raw_string():
    model = tiny_model("engram")
    tok = model.tokenizer
    comp = model.compression
    # every single-byte token that decodes to U+FFFD keeps its own raw-string key -> distinct canonical ids
    partial = [i for i in range(tok.get_vocab_size()) if "\ufffd" in tok.decode([i], skip_special_tokens=False)]
    assert partial, "a byte-level vocabulary has partial UTF-8 tokens"
    assert len({int(comp.table[i]) for i in partial}) == len(partial)
    # case variants merge: 'The' and 'the' map to the same canonical id when both exist
    vocab = tok.get_vocab()
    if "The" in vocab and "the" in vocab:
        assert comp.table[vocab["The"]] == comp.table[vocab["the"]]
    assert 0 < comp.n_canonical < comp.vocab_size
