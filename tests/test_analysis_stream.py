"""Large texts are tokenized in bounded pieces: the pieces join back to the text, piece-wise token ids
equal whole-text token ids, the memory inspector hashes the same n-grams across a piece boundary, and a
huge single line is read only as far as ``max_tokens`` needs."""

from __future__ import annotations

import numpy as np
import pytest

import engram_interp as ei
from engram_interp.analysis import common
from engram_interp.analysis.common import encode_pieces, encode_windows, text_pieces
from engram_interp.analysis.memory import _positions
from engram_interp.analysis.progress import count_tokens
from engram_interp.memory import open_tables
from engram_interp.testing import tiny_model

PROSE = ("It was the best of times, it was the worst of times.  The capital of France is Paris;\n"
         "the capital of Italy is Rome.\tAlexander the Great was a king of Macedon. ") * 40


@pytest.fixture(scope="module")
def engram(tmp_path_factory):
    model = tiny_model("engram")
    return model, ei.save(model, tmp_path_factory.mktemp("stream") / "engram.ckpt")


@pytest.mark.parametrize("size", [1, 7, 64, 1000])
def test_pieces_join_back_and_respect_the_size(size):
    for text in (PROSE, "x" * 300, "  leading and trailing  ", "", "a b"):
        pieces = list(text_pieces(text, size))
        assert "".join(pieces) == text
        assert all(len(p) <= size for p in pieces)
        # every cut but a forced one (no whitespace in reach) falls just before a whitespace run
        for left, right in zip(pieces, pieces[1:]):
            assert right[0].isspace() and not left[-1].isspace() or len(left) == size


def test_piecewise_ids_equal_whole_text_ids(engram, monkeypatch):
    model, _ = engram
    whole = model.encode(PROSE)
    monkeypatch.setattr(common, "PIECE_CHARS", 97)
    assert len(list(text_pieces(PROSE, 97))) > 20
    assert [i for ids in encode_pieces(model.encode, PROSE) for i in ids] == whole
    # windows over pieces are the windows of the whole token list
    limit = 31
    bos = model.info.bos_token_id
    got = list(encode_windows(model, PROSE, limit + 1))
    want = [([bos] + whole[s:s + limit], s) for s in range(0, len(whole), limit)]
    assert got == want


def test_memory_hashes_the_same_ngrams_across_piece_boundaries(engram, monkeypatch):
    _, path = engram
    source = open_tables(path)
    seq = ([source.bos_token_id] if source.bos_token_id is not None else []) + source.encode(PROSE)
    skip = len(seq) - len(source.encode(PROSE))
    want_ctx = source.contexts(seq)[skip:]
    monkeypatch.setattr(common, "PIECE_CHARS", 53)
    chunks = list(_positions(source, [PROSE], None, 10**9, False, {"texts": 0}))
    ctx = np.concatenate([c for c, _ in chunks])
    np.testing.assert_array_equal(ctx, want_ctx)
    raw = np.concatenate([r for _, r in chunks])
    assert raw.shape[0] == len(want_ctx)
    # raw n-gram ids: column j is the id j positions back, -1 before the text (BOS included as an id)
    n = source.max_ngram_size
    padded = [-1] * (n - 1) + seq
    for t in (0, 1, 57, len(want_ctx) - 1):
        assert raw[t].tolist() == [padded[n - 1 + skip + t - j] for j in range(n)]


def test_a_huge_single_line_is_read_only_as_far_as_needed(engram, monkeypatch):
    """Regression: the whole line used to be tokenized at once (10 MB: ~2 GB) before max_tokens applied."""
    model, path = engram
    line = "the capital of France is Paris and " * 300_000  # ~10 MB, one line
    encoded = []

    def counting(encode):
        def wrapped(text):
            encoded.append(len(text))
            return encode(text)
        return wrapped

    monkeypatch.setattr(model, "encode", counting(model.encode))
    assert count_tokens(model, [line], 500) == 500
    assert sum(encoded) <= 2 * common.PIECE_CHARS
    encoded.clear()
    windows = encode_windows(model, line, 64)
    next(windows)
    assert sum(encoded) <= common.PIECE_CHARS
    encoded.clear()
    source = open_tables(path)
    monkeypatch.setattr(source, "encode", counting(source.encode))
    got = sum(len(c) for c, _ in _positions(source, [line], 700, 10**9, False, {"texts": 0}))
    assert got == 700
    assert sum(encoded) <= 2 * common.PIECE_CHARS
