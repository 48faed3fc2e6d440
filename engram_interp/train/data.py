"""Token-stream batching: fixed-length windows drawn from flat uint16 token files.

A data dir (made by ``engram-interp data tokenize``) holds ``train.bin``, ``val_real.bin``,
``val_world.bin`` (uint16 ids, documents concatenated, each starting with <|bos|>) and ``meta.json``.

Training order depends only on (seed, step): epoch e uses ``numpy.random.default_rng([seed, e])`` to
draw a window offset in [0, seq_len) and a permutation of the non-overlapping windows at that offset;
global sample i = step * batch_size + row is window ``perm_e[i mod n_windows]`` of epoch
``i // n_windows``. Every arm of a recipe therefore sees the same batches, and a resumed run needs no
data-loader state. Validation uses fixed, evenly spaced windows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from engram_interp.errors import EngramInterpError

TRAIN_FILE = "train.bin"
VAL_FILES = {"real": "val_real.bin", "world": "val_world.bin"}  # source -> file
META_FILE = "meta.json"


def open_tokens(path: Path) -> np.ndarray:
    """A read-only uint16 memmap of a token file."""
    if not path.is_file():
        raise EngramInterpError(f"no token file {path} (make the data dir with `engram-interp data tokenize`)")
    if path.stat().st_size < 4 or path.stat().st_size % 2:
        raise EngramInterpError(f"{path} is not a uint16 token file (size {path.stat().st_size} bytes)")
    return np.memmap(path, dtype=np.uint16, mode="r")


def read_meta(data_dir: Path) -> dict[str, Any]:
    """meta.json of a data dir ({} when it has none)."""
    path = data_dir / META_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise EngramInterpError(f"{path} is not valid JSON: {exc}") from None


class TokenStream:
    """Seeded, resumable batches of ``[batch_size, seq_len]`` windows from one token file."""

    def __init__(self, path: Path, seq_len: int, batch_size: int, seed: int):
        self.path, self.seq_len, self.batch_size, self.seed = Path(path), seq_len, batch_size, seed
        self.tokens = open_tokens(self.path)
        self.n_tokens = int(self.tokens.shape[0])
        self.n_windows = (self.n_tokens - (seq_len - 1)) // seq_len  # windows that fit at any offset < seq_len
        if self.n_windows < 1:
            raise EngramInterpError(f"{path} holds {self.n_tokens} tokens: too few for one {seq_len}-token window")
        self._epochs: dict[int, tuple[int, np.ndarray]] = {}

    def _epoch(self, epoch: int) -> tuple[int, np.ndarray]:
        if epoch not in self._epochs:
            rng = np.random.default_rng([self.seed, epoch])
            offset = int(rng.integers(self.seq_len))
            self._epochs = {k: v for k, v in self._epochs.items() if k >= epoch - 1}  # keep at most two
            self._epochs[epoch] = (offset, rng.permutation(self.n_windows))
        return self._epochs[epoch]

    def starts(self, step: int) -> np.ndarray:
        """Token offsets of the windows of optimizer step ``step`` ([batch_size] int64)."""
        samples = step * self.batch_size + np.arange(self.batch_size)
        out = np.empty(self.batch_size, dtype=np.int64)
        for row, i in enumerate(samples):
            offset, perm = self._epoch(int(i // self.n_windows))
            out[row] = offset + int(perm[i % self.n_windows]) * self.seq_len
        return out

    def batch(self, step: int) -> np.ndarray:
        """Token ids of step ``step``: [batch_size, seq_len] int64."""
        return np.stack([self.tokens[s : s + self.seq_len] for s in self.starts(step)]).astype(np.int64)

    def epochs(self, steps: int) -> float:
        """Passes over the file after ``steps`` steps (tokens seen / tokens in the file)."""
        return steps * self.batch_size * self.seq_len / self.n_tokens


def val_windows(path: Path, seq_len: int, max_tokens: int) -> np.ndarray:
    """Fixed validation windows: up to max_tokens // seq_len evenly spaced windows, [n, seq_len] int64."""
    tokens = open_tokens(path)
    n_tokens = int(tokens.shape[0])
    if n_tokens < seq_len:
        raise EngramInterpError(f"{path} holds {n_tokens} tokens: too few for one {seq_len}-token window")
    n = max(1, min(max_tokens // seq_len, n_tokens // seq_len))
    starts = np.linspace(0, n_tokens - seq_len, n).round().astype(np.int64)
    return np.stack([tokens[s : s + seq_len] for s in starts]).astype(np.int64)


def real_text_epochs(meta: dict[str, Any], tokens_seen: int, n_train_tokens: int) -> float | None:
    """Epochs of REAL text after ``tokens_seen`` training tokens, or None if meta.json cannot say.

    real tokens seen = tokens_seen * (real share of train.bin), the share being
    ``real_tokens / n_train_tokens`` when meta.json gives ``real_tokens`` (top level or under "train")
    or ``train_tokens_by_family.real`` (``data tokenize``), else ``real_fraction`` (top level or under
    "config"). Divided by the distinct real tokens: ``real_unique_tokens`` / ``unique_real_tokens`` if
    given, else the real tokens in train.bin.
    """
    def find(key: str):
        for node in (meta, meta.get("train"), meta.get("config")):
            if isinstance(node, dict) and isinstance(node.get(key), (int, float)) and not isinstance(node.get(key), bool):
                return node[key]
        return None

    real_tokens, fraction = find("real_tokens"), find("real_fraction")
    family = meta.get("train_tokens_by_family")  # the meta.json of `engram-interp data tokenize`
    if real_tokens is None and isinstance(family, dict) and isinstance(family.get("real"), (int, float)):
        real_tokens = family["real"]
    if real_tokens is None and fraction is None:
        return None
    if real_tokens is None:
        real_tokens = fraction * n_train_tokens
    share = real_tokens / n_train_tokens if n_train_tokens else 0.0
    unique = find("real_unique_tokens") or find("unique_real_tokens") or real_tokens
    return tokens_seen * share / unique if unique else None


# ---- a micro data dir for tests and the tiny recipe, through the real data pipeline ------------------
SAMPLE_TEXT = Path(__file__).resolve().parents[2] / "probes" / "seen" / "public_domain.txt"


def write_toy_data(out_dir: Path, n_train_tokens: int = 60_000, seed: int = 0, vocab_size: int = 512,
                   text: Path = SAMPLE_TEXT, probes: Path | None = None, people: int = 200) -> Path:
    """A micro data dir made by the real pipeline (the same functions as ``engram-interp data``):

    ``data build --text`` on ``text`` (documents of ~400 characters, 20% held out) into
    ``out_dir/corpus``, ``data tokenizer`` (BPE of ``vocab_size`` on it plus 50 kB of world text)
    to ``out_dir/tokenizer.json``, ``data tokenize`` (``n_train_tokens``, a world of ``people``,
    one worker) to ``out_dir``. ``probes``: suite dir for the leak check and real-fact sentences
    (default: none). Returns ``out_dir``.
    """
    from engram_interp.data.bpe import train_tokenizer
    from engram_interp.data.corpus import build_corpus
    from engram_interp.data.sources import text_file_source
    from engram_interp.data.stream import StreamConfig, write_stream

    out_dir = Path(out_dir)
    cache, tokenizer = out_dir / "corpus", out_dir / "tokenizer.json"
    build_corpus(cache, extra=[text_file_source(text, doc_chars=400)], val_fraction=0.2, seed=seed, force=True,
                 progress=False)
    train_tokenizer(cache, tokenizer, vocab_size=vocab_size, world_mb=0.05, force=True)
    cfg = StreamConfig(tokens=n_train_tokens, seed=seed, people=people, workers=1,
                       val_world_tokens=max(2048, n_train_tokens // 20))
    write_stream(cache, tokenizer, out_dir, cfg, probes=probes, force=True, progress=False)
    return out_dir


if __name__ == "__main__":  # python -m engram_interp.train.data DIR [N_TOKENS]
    import sys

    if len(sys.argv) < 2:
        sys.exit("usage: python -m engram_interp.train.data DIR [N_TOKENS]  (writes a micro data dir)")
    print(write_toy_data(Path(sys.argv[1]), int(float(sys.argv[2])) if len(sys.argv) > 2 else 60_000))
