"""Token-stream batching: seeded, step-addressable, every window once per epoch; fixed val windows."""

from __future__ import annotations

import numpy as np
import pytest

from engram_interp.errors import EngramInterpError
from engram_interp.train.data import TokenStream, real_text_epochs, val_windows


@pytest.fixture
def token_file(tmp_path):
    path = tmp_path / "train.bin"
    np.arange(1000, dtype=np.uint16).tofile(path)  # token id == position: windows are easy to check
    return path


def test_batches_depend_on_seed_and_step_only(token_file):
    a = TokenStream(token_file, seq_len=10, batch_size=4, seed=3)
    b = TokenStream(token_file, seq_len=10, batch_size=4, seed=3)
    steps = [5, 0, 40, 5, 24]  # any order, as after a resume
    for s in steps:
        np.testing.assert_array_equal(a.batch(s), b.batch(s))
    assert not np.array_equal(a.batch(0), TokenStream(token_file, 10, 4, seed=4).batch(0))
    x = a.batch(7)
    assert x.shape == (4, 10) and x.dtype == np.int64
    np.testing.assert_array_equal(x - x[:, :1], np.tile(np.arange(10), (4, 1)))  # contiguous windows


def test_each_window_once_per_epoch(token_file):
    s = TokenStream(token_file, seq_len=10, batch_size=3, seed=0)
    assert s.n_windows == (1000 - 9) // 10 == 99
    starts = np.concatenate([s.starts(k) for k in range(33)])  # 99 samples = one epoch
    offset = starts[0] % 10
    assert np.all(starts % 10 == offset) and len(set(starts.tolist())) == 99
    assert starts.max() + 10 <= 1000
    nxt = np.concatenate([s.starts(k) for k in range(33, 66)])
    assert len(set(nxt.tolist())) == 99 and not np.array_equal(nxt, starts)


def test_val_windows_fixed(tmp_path, token_file):
    w = val_windows(token_file, seq_len=10, max_tokens=50)
    assert w.shape == (5, 10) and w[0, 0] == 0 and w[-1, -1] == 999
    np.testing.assert_array_equal(w, val_windows(token_file, 10, 50))
    small = tmp_path / "small.bin"
    np.arange(5, dtype=np.uint16).tofile(small)
    with pytest.raises(EngramInterpError, match="too few"):
        val_windows(small, 10, 50)
    with pytest.raises(EngramInterpError, match="too few"):
        TokenStream(small, 10, 2, 0)
    with pytest.raises(EngramInterpError, match="no token file"):
        TokenStream(tmp_path / "missing.bin", 10, 2, 0)


def test_real_text_epochs():
    assert real_text_epochs({}, 100, 1000) is None
    assert real_text_epochs({"real_fraction": 0.5}, 2000, 1000) == pytest.approx(2.0)
    # 300 real tokens in a 1000-token file, 100 of them distinct (real text upsampled 3x)
    assert real_text_epochs({"train": {"real_tokens": 300}, "real_unique_tokens": 100}, 1000, 1000) == pytest.approx(3.0)
    assert real_text_epochs({"config": {"real_fraction": 0.25}}, 400, 1000) == pytest.approx(0.4)
    stream_meta = {"config": {"real_fraction": 0.5}, "train_tokens_by_family": {"real": 600}, "unique_real_tokens": 200}
    assert real_text_epochs(stream_meta, 1000, 1000) == pytest.approx(3.0)  # 600 real of 1000 seen, 200 distinct
