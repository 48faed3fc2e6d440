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
    ``real_tokens / n_train_tokens`` when meta.json gives ``real_tokens`` (top level or under "train"),
    else ``real_fraction`` (top level or under "config"). Divided by the distinct real tokens:
    ``real_unique_tokens`` if given, else the real tokens in train.bin.
    """
    def find(key: str):
        for node in (meta, meta.get("train"), meta.get("config")):
            if isinstance(node, dict) and isinstance(node.get(key), (int, float)) and not isinstance(node.get(key), bool):
                return node[key]
        return None

    real_tokens, fraction = find("real_tokens"), find("real_fraction")
    if real_tokens is None and fraction is None:
        return None
    if real_tokens is None:
        real_tokens = fraction * n_train_tokens
    share = real_tokens / n_train_tokens if n_train_tokens else 0.0
    unique = find("real_unique_tokens") or real_tokens
    return tokens_seen * share / unique if unique else None


# ---- a toy data dir for tests and the tiny recipe ------------------------------------------------
def write_toy_data(out_dir: Path, n_train_tokens: int = 60_000, seed: int = 0, vocab_size: int = 400) -> Path:
    """Write a tiny data dir (train.bin, val_real.bin, val_world.bin, meta.json, tokenizer.json).

    Text: sentences of ``engram_interp.testing``'s paragraph in seeded random order ("real") and a
    templated fact world ("world"), tokenized with the tiny BPE. Returns ``out_dir``.
    """
    from engram_interp.testing import _TEXT, tiny_tokenizer

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = tiny_tokenizer(vocab_size)
    (out_dir / "tokenizer.json").write_text(tok.to_str())
    rng = np.random.default_rng(seed)
    sentences = [s.strip() + "." for s in _TEXT.replace("\n", " ").split(".") if s.strip()]
    names = ["Alexander", "Paris", "Rome", "Madrid", "London", "the fox", "the princess", "Wales", "Italy"]

    def real_doc() -> str:
        return " ".join(rng.choice(sentences, size=int(rng.integers(2, 6))))

    def world_doc() -> str:
        return " ".join(f"{rng.choice(names)} visited {rng.choice(names)}." for _ in range(int(rng.integers(2, 5))))

    def stream(n_tokens: int, make) -> np.ndarray:
        ids: list[int] = []
        while len(ids) < n_tokens:
            ids += [0] + tok.encode(make(), add_special_tokens=False).ids
        return np.asarray(ids[:n_tokens], dtype=np.uint16)

    half = n_train_tokens // 2
    train_real, train_world = stream(half, real_doc), stream(n_train_tokens - half, world_doc)
    train = np.concatenate([train_real, train_world])  # the shuffled windows mix the two halves
    train.tofile(out_dir / "train.bin")
    stream(max(2048, n_train_tokens // 20), real_doc).tofile(out_dir / "val_real.bin")
    stream(max(2048, n_train_tokens // 20), world_doc).tofile(out_dir / "val_world.bin")
    meta = {"toy": True, "seed": seed, "real_fraction": 0.5, "real_tokens": int(half),
            "train_tokens": int(n_train_tokens), "tokens_per_source": {"real": int(half), "world": int(n_train_tokens - half)}}
    (out_dir / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return out_dir


if __name__ == "__main__":  # python -m engram_interp.train.data DIR [N_TOKENS]
    import sys

    if len(sys.argv) < 2:
        sys.exit("usage: python -m engram_interp.train.data DIR [N_TOKENS]  (writes a toy data dir)")
    print(write_toy_data(Path(sys.argv[1]), int(float(sys.argv[2])) if len(sys.argv) > 2 else 60_000))
