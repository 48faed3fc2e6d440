"""Engram memory tables read in place: one ``TableSource`` per on-disk layout, rows read on demand.

The memory inspector (``engram_interp.analysis.memory``) needs three things from a model, and no
forward pass: its tokenizer, its hashing (token ids -> table rows of every layer and head) and the
rows themselves. A ``TableSource`` provides exactly these. Tables are never loaded whole: rows are
read on demand (positioned reads at the offsets of the safetensors header; see ``SafetensorsRows``),
so a 94 GiB table costs only the rows asked for.

Layouts (``open_tables(path)`` picks one):

* ``engram-interp``: our ``.ckpt`` (``blocks.{l}.engram.memory.weight``, float32/16);
* ``demo``: a folder with ``config.json`` holding DeepSeek's demo Engram fields (``layer_ids``,
  ``max_ngram_size``, ``n_head_per_ngram``, ``n_embed_per_ngram``, ``engram_vocab_size``, ``seed``,
  ``pad_id``; at the top level or under ``"engram"``), ``tokenizer.json`` and safetensors with
  ``...{l}.engram.multi_head_embedding.embedding.weight``;
* ``deepseek-v4.1``: a folder with ``config.json`` (``engram_*`` fields, under ``text_config`` where
  present), ``tokenizer.json`` and safetensors with ``layers.{L}.engram.embed.weight`` in FP8 E4M3
  plus ``layers.{L}.engram.embed.scale`` (or ``weight_scale_inv``): E8M0 scales, one per 32 columns;
  a row is dequantised as ``fp8 * 2**(e - 127)``;
* ``qwen4-exp-ple``: a Qwen4-Exp folder (``ple_layer_ids``): hashing is transformers' own module
  (see ``engram_interp.memory_ple``).

Every source hashes with the layout's own rule; the demo rule (``engram_interp.model.hashing``) is
shared by the first three. Rows are indexed per head (``0 .. prime-1``) plus the head's offset in
the table (all heads lie back to back).
"""

from __future__ import annotations

import functools
import json
import os
import re
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from engram_interp.errors import EngramInterpError
from engram_interp.model.hashing import layer_multipliers, ngram_hash_ids, table_sizes

__all__ = ["TableSource", "DemoHashSource", "CkptTables", "DemoFolderTables", "V41Tables", "open_tables",
           "SafetensorsRows", "dequantize_e4m3_e8m0"]

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
    from engram_interp.checkpoint import _raw_header

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


class CkptTables(DemoHashSource):
    """Our ``.ckpt``: config, tokenizer and compression from its metadata; ``blocks.{l}.engram.memory.weight``."""

    layout = "engram-interp"

    def __init__(self, path: str | Path):
        from engram_interp.checkpoint import read_info

        info = read_info(path)
        cfg, e = info.config, info.config.engram
        if e is None:
            raise EngramInterpError(f"{path} has no Engram layers ({cfg.kind} model); the memory inspector needs an Engram model")
        tok = info.tokenizer()
        if tok is None:
            raise EngramInterpError(f"{path} has no tokenizer; the memory inspector needs one")
        super().__init__(tokenizer=tok, compression=info.compression, layers=e.layer_ids, max_ngram_size=e.max_ngram_size,
                         n_head_per_ngram=e.n_head_per_ngram, d_head=e.d_head, pad_id=e.pad_id, multipliers=e.multipliers,
                         sizes=e.table_sizes, null_memory=e.null_memory, bos_token_id=cfg.bos_token_id)
        self.name, self.source = Path(path).stem, str(path)
        self._readers = {}
        for l in self.layers:
            r = SafetensorsRows(Path(path), f"blocks.{l}.engram.memory.weight")
            _check_rows(self.source, l, self.table_rows(l), r, self.d_head)
            self._readers[l] = r

    def read_rows(self, layer: int, rows: np.ndarray) -> np.ndarray:
        return self._readers[layer].read(rows)


def _text_config(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        raise EngramInterpError(f"{folder} has no config.json")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise EngramInterpError(f"{path} is not valid JSON: {exc}") from None
    return cfg.get("text_config") or cfg


class DemoFolderTables(DemoHashSource):
    """A folder in the demo's naming: ``config.json`` with the demo's Engram fields, tokenizer.json,
    safetensors with ``...{l}.engram.multi_head_embedding.embedding.weight``."""

    layout = "demo"

    def __init__(self, folder: str | Path):
        from engram_interp.config import EngramConfig
        from engram_interp.tokenizer import build_compression

        folder = Path(folder)
        raw = _text_config(folder)
        raw = raw.get("engram", raw)
        keys = {"layer_ids", "max_ngram_size", "n_head_per_ngram", "n_embed_per_ngram", "engram_vocab_size", "seed", "pad_id"}
        fields = {k: (tuple(v) if isinstance(v, list) else v) for k, v in raw.items() if k in keys}
        e = EngramConfig(**fields)
        tok = _folder_tokenizer(folder)
        comp = build_compression(tok)
        e = e.resolved(comp.n_canonical)
        super().__init__(tokenizer=tok, compression=comp, layers=e.layer_ids, max_ngram_size=e.max_ngram_size,
                         n_head_per_ngram=e.n_head_per_ngram, d_head=e.d_head, pad_id=e.pad_id,
                         multipliers=e.multipliers, sizes=e.table_sizes, bos_token_id=raw.get("bos_token_id"))
        self.name, self.source = folder.name, str(folder)
        found = _find_tensors(folder, r"(\d+)\.engram\.multi_head_embedding\.embedding\.weight$")
        self._readers = {}
        for l in self.layers:
            if l not in found:
                raise EngramInterpError(f"{folder}: no multi_head_embedding table for Engram layer {l}")
            r = SafetensorsRows(*found[l])
            _check_rows(self.source, l, self.table_rows(l), r, self.d_head)
            self._readers[l] = r

    def read_rows(self, layer: int, rows: np.ndarray) -> np.ndarray:
        return self._readers[layer].read(rows)


def _int_list(value, n: int) -> list[int]:
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)] * n


class V41Tables(DemoHashSource):
    """DeepSeek-V4.1's released layout: FP8 E4M3 tables with E8M0 block scales, demo hashing."""

    layout = "deepseek-v4.1"

    def __init__(self, folder: str | Path):
        from engram_interp.tokenizer import build_compression

        folder = Path(folder)
        tc = _text_config(folder)

        def need(*names):
            for n in names:
                if n in tc:
                    return tc[n]
            raise EngramInterpError(f"{folder}/config.json lacks {names[0]}")

        layers = [int(l) for l in need("engram_layer_ids")]
        n, k = int(need("engram_max_ngram_size")), int(need("engram_n_heads"))
        d_head = int(need("engram_head_dim"))
        vocab = _int_list(need("engram_vocab_size"), n - 1)
        pad = int(need("engram_pad_id", "engram_pad_token_id"))
        tok = _folder_tokenizer(folder)
        comp = build_compression(tok)
        v_prime = int(tc.get("engram_compressed_vocab_size", comp.n_canonical))
        if v_prime != comp.n_canonical:
            raise EngramInterpError(f"{folder}: config says engram_compressed_vocab_size={v_prime} but tokenizer.json"
                                    f" compresses to {comp.n_canonical} canonical ids")
        seed = int(tc.get("engram_seed", 0))
        sizes = table_sizes(layers, n, k, vocab)
        declared = tc.get("engram_num_embeddings")
        if declared is not None:
            declared = _int_list(declared, len(layers))
            if declared != [sum(s) for s in sizes]:
                raise EngramInterpError(
                    f"{folder}: engram_num_embeddings {declared} does not match the hashing constants, which give"
                    f" {[sum(s) for s in sizes]} rows (table size does not match the hashing constants)")
        mults = [layer_multipliers(seed, l, n, v_prime) for l in layers]
        super().__init__(tokenizer=tok, compression=comp, layers=layers, max_ngram_size=n, n_head_per_ngram=k,
                         d_head=d_head, pad_id=pad, multipliers=mults, sizes=sizes, bos_token_id=tc.get("bos_token_id"))
        self.name, self.source = folder.name, str(folder)
        weights = _find_tensors(folder, r"layers\.(\d+)\.engram\.embed\.weight$")
        scales = {**_find_tensors(folder, r"layers\.(\d+)\.engram\.embed\.weight_scale_inv$"),
                  **_find_tensors(folder, r"layers\.(\d+)\.engram\.embed\.scale$")}
        self._readers = {}
        for l in layers:
            if l not in weights:
                raise EngramInterpError(f"{folder}: no layers.{l}.engram.embed.weight in its safetensors files")
            f, name = weights[l]
            scale = scales.get(l)
            if scale is not None and scale[0] != f:
                raise EngramInterpError(f"{folder}: the scales of layer {l} are in another file than its table")
            r = SafetensorsRows(f, name, scale[1] if scale else None)
            _check_rows(self.source, l, self.table_rows(l), r, d_head)
            self._readers[l] = r

    def read_rows(self, layer: int, rows: np.ndarray) -> np.ndarray:
        return self._readers[layer].read(rows)


def open_tables(path: str | Path) -> TableSource:
    """The table source for ``path``: a ``.ckpt`` file, or a folder in the demo, DeepSeek-V4.1 or
    Qwen4-Exp layout (chosen from its ``config.json``). One-line user errors otherwise."""
    p = Path(path)
    if not p.exists():
        raise EngramInterpError(f"no such file or folder: {p}")
    if p.is_file():
        return CkptTables(p)
    tc = _text_config(p)
    if any(key.startswith("engram_") for key in tc):
        return V41Tables(p)
    if tc.get("ple_layer_ids"):
        from engram_interp.memory_ple import PLETables

        return PLETables(p)
    if "layer_ids" in tc.get("engram", tc) and "n_head_per_ngram" in tc.get("engram", tc):
        return DemoFolderTables(p)
    raise EngramInterpError(f"{p}/config.json describes no Engram memory (no engram_* / ple_layer_ids / demo Engram fields)")
