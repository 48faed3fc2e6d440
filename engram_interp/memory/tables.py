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
  (see ``engram_interp.memory.ple``).

Every source hashes with the layout's own rule; the demo rule (``engram_interp.model.hashing``) is
shared by the first three. Rows are indexed per head (``0 .. prime-1``) plus the head's offset in
the table (all heads lie back to back).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from engram_interp.errors import EngramInterpError
from engram_interp.model.hashing import layer_multipliers, table_sizes
from engram_interp.memory.ple import PLETables
from engram_interp.memory.sources import (DemoHashSource, SafetensorsRows, TableSource, _check_rows,
                                          _find_tensors, _folder_tokenizer)

__all__ = ["CkptTables", "DemoFolderTables", "V41Tables", "open_tables"]


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
        return PLETables(p)
    if "layer_ids" in tc.get("engram", tc) and "n_head_per_ngram" in tc.get("engram", tc):
        return DemoFolderTables(p)
    raise EngramInterpError(f"{p}/config.json describes no Engram memory (no engram_* / ple_layer_ids / demo Engram fields)")
