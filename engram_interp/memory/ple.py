"""Qwen4-Exp PLE tables as a ``TableSource``: hashing by transformers' own n-gram module.

Qwen4-Exp's Per-Layer Embedding is an Engram-style hashed n-gram memory with its own rule
(splitmix64 multipliers, n-th prime after a base per global head, contexts cut at EOS, no tokenizer
compression). Nothing of it is reimplemented here: for every PLE layer we build transformers'
``Qwen4ExpTextNGramEmbedding`` on the meta device (so no table is allocated), give it its real
integer buffers from transformers' own builders, and swap its embedding for a stub that returns the
row indices the module computed. Rows are then read from the checkpoint's
``...layers.{i}.ple.ple_embedding.ngram_embedding.weight`` through safetensors slices.

``layers`` are 0-indexed blocks (``ple_layer_ids`` in the config are 1-indexed).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from engram_interp.errors import EngramInterpError
from engram_interp.memory.sources import SafetensorsRows, TableSource, _folder_tokenizer

__all__ = ["PLETables", "ple_ngram_module"]


class _RowIds(nn.Module):
    """Stands in for the n-gram embedding: returns the row indices it is asked for, ``[..., 1]``."""

    def __init__(self):
        super().__init__()
        self.register_buffer("weight", torch.zeros(0), persistent=False)  # the module reads weight.device

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return ids.unsqueeze(-1)


def ple_ngram_module(text_config, layer_idx: int):
    """transformers' ``Qwen4ExpTextNGramEmbedding`` of block ``layer_idx`` (0-indexed), table-free:
    calling it on ids ``[b, p]`` returns the global table rows ``[b, p, (N-1)*K]`` (offsets added)."""
    from transformers.models.qwen4_exp import modeling_qwen4_exp as hf

    index = text_config.ple_layer_ids.index(layer_idx + 1)
    with torch.device("meta"):
        module = hf.Qwen4ExpTextNGramEmbedding(text_config, text_config.ple_embed_dim, layer_idx, index)
    module.layer_multipliers = hf._build_layer_multipliers(module.unigram_vocab_size, module.ngram_size,
                                                           module.ple_layer_index, module.seed)
    module.ngram_heads_vocab_sizes = torch.tensor(module.head_vocab_sizes, dtype=torch.long)
    module.ngram_heads_offsets = torch.tensor(module.head_offsets, dtype=torch.long)
    module.ngram_embedding = _RowIds()
    return module


def _ple_tensors(folder: Path) -> dict[int, list[tuple[int, Path, str]]]:
    """``{block: [(shard index, file, tensor name)]}`` of the n-gram tables; transformers saves each
    table as ``ngram_embedding.shard_{i}.weight`` row blocks (or one ``ngram_embedding.weight``)."""
    from safetensors import safe_open

    rx = re.compile(r"layers\.(\d+)\.ple\.ple_embedding\.ngram_embedding\.(?:shard_(\d+)\.)?weight$")
    found: dict[int, list] = {}
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as st:
            for key in st.keys():
                m = rx.search(key)
                if m:
                    found.setdefault(int(m.group(1)), []).append((int(m.group(2) or 0), f, key))
    return found


class ShardedRows:
    """One table stored as consecutive row blocks (each a ``SafetensorsRows``)."""

    def __init__(self, parts: list[SafetensorsRows]):
        widths = {p.shape[1] for p in parts}
        if len(widths) != 1:
            raise EngramInterpError(f"the row blocks of {parts[0].name} have different widths {sorted(widths)}")
        self.parts = parts
        self.starts = np.cumsum([0] + [p.shape[0] for p in parts])
        self.shape = (int(self.starts[-1]), widths.pop())

    def read(self, rows: np.ndarray) -> np.ndarray:
        """float32 ``[len(rows), dim]`` in the order of ``rows``."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if rows.size and (rows.min() < 0 or rows.max() >= self.shape[0]):
            raise EngramInterpError(f"row {int(rows.max())} is outside the table ({self.shape[0]} rows)")
        out = np.empty((rows.size, self.shape[1]), dtype=np.float32)
        part = np.searchsorted(self.starts, rows, side="right") - 1
        for i in np.unique(part):
            sel = part == i
            out[sel] = self.parts[i].read(rows[sel] - self.starts[i])
        return out


class PLETables(TableSource):
    """A Qwen4-Exp folder (config.json with ``ple_layer_ids``, tokenizer.json, safetensors)."""

    layout = "qwen4-exp-ple"

    def __init__(self, folder: str | Path):
        from transformers import AutoConfig

        folder = Path(folder)
        try:
            cfg = AutoConfig.from_pretrained(str(folder))
        except (OSError, ValueError) as exc:
            raise EngramInterpError(f"{folder}/config.json is not a readable Qwen4-Exp config: {exc}") from None
        tc = getattr(cfg, "text_config", None) or cfg
        if not getattr(tc, "ple_layer_ids", None):
            raise EngramInterpError(f"{folder} has no PLE layers (ple_layer_ids is empty)")
        self.config = tc
        self.name, self.source = folder.name, str(folder)
        self.layers = tuple(int(p) - 1 for p in tc.ple_layer_ids)
        self.max_ngram_size, self.n_head_per_ngram = int(tc.ngram_size), int(tc.heads_per_ngram)
        self.d_head = int(tc.ple_embed_dim) // self.n_heads
        self.bos_token_id = None  # PLE contexts start with EOS, not BOS
        self.tokenizer = _folder_tokenizer(folder)
        self._modules = {l: ple_ngram_module(tc, l) for l in self.layers}
        self.eos = int(self._modules[self.layers[0]].eos_token_id)
        found = _ple_tensors(folder)
        self._readers = {}
        for l in self.layers:
            if l not in found:
                raise EngramInterpError(f"{folder}: no ple_embedding table for block {l} (ple layer id {l + 1})")
            r = ShardedRows([SafetensorsRows(f, name) for _, f, name in sorted(found[l])])
            want = self._modules[l].total_vocab_size
            if not want <= r.shape[0] < want + int(tc.make_ngram_vocab_size_divisible_by) or r.shape[1] != self.d_head:
                raise EngramInterpError(f"{folder}: block {l}'s table is {list(r.shape)}; its hashing constants give"
                                        f" {want} rows of width {self.d_head} (table size does not match the hashing constants)")
            self._readers[l] = r

    def head_sizes(self, layer: int) -> list[int]:
        return [int(s) for s in self._modules[layer].head_vocab_sizes]

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode_token(self, token_id: int) -> str:
        from engram_interp.tokenizer import display_token

        return display_token(self.tokenizer, int(token_id))

    def contexts(self, raw_ids: Sequence[int]) -> np.ndarray:
        """The ids transformers' module reads at ``t - j`` (EOS before the start and across EOS)."""
        m = self._modules[self.layers[0]]
        ids = torch.as_tensor(list(raw_ids), dtype=torch.long).unsqueeze(0)
        hist = torch.cat([ids.new_full((1, self.max_ngram_size - 1), self.eos), ids], dim=1)
        cols = [m._shift_right_ignore_eos(hist, j)[0, -ids.shape[1]:] for j in range(self.max_ngram_size)]
        return torch.stack(cols, dim=1).numpy()

    def rows(self, layer: int, contexts: np.ndarray) -> np.ndarray:
        seqs = torch.as_tensor(np.ascontiguousarray(contexts[:, ::-1]), dtype=torch.long)  # oldest first
        m = self._modules[layer]
        glob = m(seqs, None)[:, -1]  # the context's last position reads exactly these ids
        return (glob - m.ngram_heads_offsets).numpy()

    def read_rows(self, layer: int, rows: np.ndarray) -> np.ndarray:
        return self._readers[layer].read(rows)
