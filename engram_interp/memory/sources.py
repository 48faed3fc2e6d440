"""What every Engram table layout shares: the ``TableSource`` interface, positioned row reads from
safetensors files (``SafetensorsRows``), FP8 E4M3 / E8M0 dequantisation and the demo hashing rule.

The layouts themselves are in ``engram_interp.memory.tables`` (ours, demo, DeepSeek-V4.1) and
``engram_interp.memory.ple`` (Qwen4-Exp PLE).
"""

from __future__ import annotations

import functools
import os
import re
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from engram_interp.errors import EngramInterpError
from engram_interp.model.hashing import ngram_hash_ids

__all__ = ["TableSource", "DemoHashSource", "SafetensorsRows", "dequantize_e4m3_e8m0"]

SCALE_BLOCK = 32  # columns per E8M0 scale in the V4.1 layout
_SPAN_GAP = 16  # rows read as one slice when they lie at most this far apart
_SPAN_MAX = 1024  # ... and the slice is at most this many rows long
_GROUP_ROWS = 4096  # rows (gaps included) dequantised at once


class TableSource(ABC):
    """What the memory inspector needs from one model: tokenizer, hashing, table rows.

    ``layers``: Engram layers (0-indexed blocks). ``head_sizes(l)``: rows of every hash head of layer
    ``l`` (order-major: orders 2..N, then heads 0..K-1). ``read_rows(l, rows)``: float32 ``[m, d_head]``
    for global row indices (head offset added).
    """

    name: str
    source: str
    layout: str
    layers: tuple[int, ...]
    max_ngram_size: int
    n_head_per_ngram: int
    d_head: int
    null_memory: bool = False  # Engram-null: every n-gram reads row 0 of each head
    bos_token_id: int | None = None

    @property
    def n_heads(self) -> int:
        """Hash heads per layer: (N-1) * K."""
        return (self.max_ngram_size - 1) * self.n_head_per_ngram

    @abstractmethod
    def head_sizes(self, layer: int) -> list[int]:
        """Rows of each hash head of ``layer`` (order-major)."""

    def offsets(self, layer: int) -> np.ndarray:
        """int64 ``[n_heads]``: first table row of each head of ``layer``."""
        sizes = np.asarray(self.head_sizes(layer), dtype=np.int64)
        return np.cumsum(sizes) - sizes

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Raw token ids of ``text`` (no BOS, no special tokens added)."""

    @abstractmethod
    def decode_token(self, token_id: int) -> str:
        """One raw token as display text."""

    @abstractmethod
    def contexts(self, raw_ids: Sequence[int]) -> np.ndarray:
        """int64 ``[p, N]`` for one sequence: column j is the id the hash reads at ``t - j`` (after
        the layout's own compression / padding / segmenting). Two positions with equal first n
        columns share their order-n rows in every head: this is the n-gram's identity."""

    @abstractmethod
    def rows(self, layer: int, contexts: np.ndarray) -> np.ndarray:
        """int64 ``[m, n_heads]``: each context's row in every head of ``layer`` (within the head,
        ``0 .. head_sizes[h]-1``; 0 everywhere for Engram-null)."""

    @abstractmethod
    def read_rows(self, layer: int, rows: np.ndarray) -> np.ndarray:
        """float32 ``[m, d_head]``: the table rows at global indices ``rows`` (dequantised)."""

    def table_rows(self, layer: int) -> int:
        """Total rows of ``layer``'s table (sum of its head sizes)."""
        return int(sum(self.head_sizes(layer)))


# ----------------------------------------------------------------------------- reading rows
def dequantize_e4m3_e8m0(weight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """FP8 E4M3 ``[m, d]`` times E8M0 block scales ``[m, d/32]`` (uint8 exponents or
    ``float8_e8m0fnu``) -> float32 ``[m, d]``: ``w * 2**(e - 127)``."""
    m, d = weight.shape
    e = scale.view(torch.uint8) if scale.dtype != torch.uint8 else scale
    if e.shape != (m, -(-d // SCALE_BLOCK)):
        raise EngramInterpError(f"FP8 scales have shape {tuple(e.shape)}; rows of width {d} need {(m, -(-d // SCALE_BLOCK))}")
    factor = torch.exp2(e.to(torch.float32) - 127.0).repeat_interleave(SCALE_BLOCK, dim=1)[:, :d]
    return weight.to(torch.float32) * factor


_DTYPES = {"F8_E4M3": torch.float8_e4m3fn, "F8_E8M0": torch.float8_e8m0fnu, "U8": torch.uint8, "BF16": torch.bfloat16,
           "F16": torch.float16, "F32": torch.float32, "F64": torch.float64}


@functools.lru_cache(maxsize=64)
def _cached_header(path: str, mtime_ns: int, size: int) -> tuple[dict, int]:
    from engram_interp.model.weights import _raw_header

    header, data, _ = _raw_header(path)
    return header, data


def _header(path: Path) -> tuple[dict, int]:
    """A safetensors file's checked header and data offset, parsed once per file version (a sharded
    table has hundreds of tensors in one file)."""
    try:
        st = path.stat()
    except OSError as exc:
        raise EngramInterpError(f"cannot read {path}: {exc.strerror or exc}") from None
    return _cached_header(str(path), st.st_mtime_ns, st.st_size)


class SafetensorsRows:
    """Row reader for one 2-D tensor of a safetensors file (optionally with FP8 block scales): only
    the requested rows are read, grouped into short contiguous slices.

    The slices are positioned reads (``os.pread``) at the offsets of the safetensors header, not
    slices of ``safe_open``: those are views of a memory map of the whole file, and every page they
    touch stays resident (with the page cache's large folios, about half a MiB per row read), so
    resident memory would grow with the number of rows read. Reading bytes keeps it flat."""

    def __init__(self, path: Path, name: str, scale_name: str | None = None):
        self.path, self.name, self.scale_name = Path(path), name, scale_name
        header, self._data = _header(self.path)
        self._w = self._entry(header, name)
        self.shape, self.dtype = self._w[1], self._w[0]
        if len(self.shape) != 2:
            raise EngramInterpError(f"{path}: {name} has shape {list(self.shape)}; a memory table is [rows, dim]")
        self._s = self._entry(header, scale_name) if scale_name else None
        if self.dtype == torch.float8_e4m3fn and self._s is None:
            raise EngramInterpError(f"{path}: {name} is FP8 (E4M3) but has no scales (.scale or .weight_scale_inv)")
        self._fd = os.open(self.path, os.O_RDONLY)

    def _entry(self, header: dict, name: str) -> tuple:
        e = header.get(name)
        if e is None:
            raise EngramInterpError(f"{self.path} has no tensor {name}")
        if e["dtype"] not in _DTYPES:
            raise EngramInterpError(f"{self.path}: {name} has dtype {e['dtype']}; memory tables are {sorted(_DTYPES)}")
        return _DTYPES[e["dtype"]], tuple(int(x) for x in e["shape"]), int(e["data_offsets"][0])

    def __del__(self):
        fd = getattr(self, "_fd", None)
        if fd is not None:
            os.close(fd)

    def _rows(self, entry: tuple, lo: int, hi: int) -> torch.Tensor:
        dtype, shape, offset = entry
        width = shape[1] * dtype.itemsize
        buf = bytearray(os.pread(self._fd, (hi - lo) * width, self._data + offset + lo * width))
        return torch.frombuffer(buf, dtype=torch.uint8).view(dtype).reshape(hi - lo, shape[1])

    def read(self, rows: np.ndarray) -> np.ndarray:
        """float32 ``[len(rows), dim]`` in the order of ``rows``."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        out = np.empty((rows.size, self.shape[1]), dtype=np.float32)
        if rows.size == 0:
            return out
        if rows.min() < 0 or rows.max() >= self.shape[0]:
            raise EngramInterpError(f"{self.path}: row {int(rows.max())} is outside {self.name} ({self.shape[0]} rows)")
        order = np.argsort(rows, kind="stable")
        srt = rows[order]
        starts, lo = [0], int(srt[0])
        for j in range(1, srt.size):  # group nearby rows into short contiguous slices
            if srt[j] - srt[j - 1] > _SPAN_GAP or srt[j] - lo >= _SPAN_MAX:
                starts.append(j)
                lo = int(srt[j])
        bounds = list(zip(starts, starts[1:] + [srt.size]))
        groups, cur, cur_rows = [], [], 0
        for a, b in bounds:  # dequantise at most _GROUP_ROWS rows at a time
            span = int(srt[b - 1] - srt[a]) + 1
            if cur and cur_rows + span > _GROUP_ROWS:
                groups.append(cur)
                cur, cur_rows = [], 0
            cur.append((a, b))
            cur_rows += span
        groups.append(cur)
        for group in groups:
            blocks, scales, picks, base = [], [], [], 0
            for a, b in group:
                lo, hi = int(srt[a]), int(srt[b - 1]) + 1
                blocks.append(self._rows(self._w, lo, hi))
                if self._s is not None:
                    scales.append(self._rows(self._s, lo, hi))
                picks.append(srt[a:b] - lo + base)
                base += hi - lo
            block = torch.cat(blocks)
            if self._s is not None:
                block = dequantize_e4m3_e8m0(block, torch.cat(scales))
            a0, b1 = group[0][0], group[-1][1]
            out[order[a0:b1]] = block.to(torch.float32).numpy()[np.concatenate(picks)]
        return out


# ----------------------------------------------------------------------- the demo hashing rule
class DemoHashSource(TableSource):
    """Sources that hash as DeepSeek's demo (and V4.1): tokenizer compression, canonical pad before
    the sequence start, multiplicative-XOR mix, one prime per head (``model.hashing``)."""

    def __init__(self, *, tokenizer, compression, layers, max_ngram_size, n_head_per_ngram, d_head, pad_id,
                 multipliers, sizes, null_memory=False, bos_token_id=None):
        self.tokenizer, self.compression = tokenizer, compression
        self.layers = tuple(int(l) for l in layers)
        self.max_ngram_size, self.n_head_per_ngram, self.d_head = int(max_ngram_size), int(n_head_per_ngram), int(d_head)
        self.canonical_pad = int(compression.table[int(pad_id)])
        self._mults = {l: torch.tensor(np.asarray(m, dtype=np.int64)) for l, m in zip(self.layers, multipliers)}
        self._sizes = {l: [int(s) for s in sz] for l, sz in zip(self.layers, sizes)}
        self.null_memory, self.bos_token_id = bool(null_memory), bos_token_id

    def head_sizes(self, layer: int) -> list[int]:
        return self._sizes[layer]

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode_token(self, token_id: int) -> str:
        from engram_interp.tokenizer import display_token

        return display_token(self.tokenizer, int(token_id))

    def contexts(self, raw_ids: Sequence[int]) -> np.ndarray:
        canon = self.compression.table[np.asarray(raw_ids, dtype=np.int64)]
        n, p = self.max_ngram_size, len(canon)
        padded = np.concatenate([np.full(n - 1, self.canonical_pad, dtype=np.int64), canon])
        return np.stack([padded[n - 1 - j: n - 1 - j + p] for j in range(n)], axis=1)

    def rows(self, layer: int, contexts: np.ndarray) -> np.ndarray:
        ctx = torch.as_tensor(np.ascontiguousarray(contexts[:, ::-1]), dtype=torch.long)  # oldest first
        primes = torch.tensor(self._sizes[layer], dtype=torch.long)
        rows = ngram_hash_ids(ctx, self._mults[layer], primes, self.n_head_per_ngram, self.canonical_pad)[:, -1]
        return np.zeros_like(rows.numpy()) if self.null_memory else rows.numpy()


def _find_tensors(folder: Path, pattern: str) -> dict[int, tuple[Path, str]]:
    """``{layer: (file, tensor name)}`` for tensors whose name matches ``pattern`` (group 1 = layer),
    over every ``*.safetensors`` file of ``folder`` (headers only)."""
    from safetensors import safe_open

    rx, found = re.compile(pattern), {}
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as st:
            for key in st.keys():
                m = rx.search(key)
                if m:
                    found[int(m.group(1))] = (f, key)
    return found


def _folder_tokenizer(folder: Path):
    from tokenizers import Tokenizer

    path = folder / "tokenizer.json"
    if not path.is_file():
        raise EngramInterpError(f"{folder} has no tokenizer.json; the memory inspector needs the tokenizer beside the tables")
    return Tokenizer.from_file(str(path))


def _check_rows(source: str, layer: int, want: int, reader: SafetensorsRows, d_head: int) -> None:
    if reader.shape[0] < want or reader.shape[0] > want + 1024:  # tables may be padded a little
        raise EngramInterpError(
            f"{source}: layer {layer}'s table has {reader.shape[0]} rows but its hashing constants give {want}"
            " (table size does not match the hashing constants)")
    if reader.shape[1] != d_head:
        raise EngramInterpError(f"{source}: layer {layer}'s table rows have width {reader.shape[1]}, the config says {d_head}")
