"""Qwen4-Exp's PLE (per-layer n-gram embedding) exposed as an Engram layer.

Hook points (module ``blocks.{l}.engram``), attached with plain torch hooks on Hugging Face's own
``model.layers.{l}.ple`` submodules, so the forward stays Hugging Face's:

- ``hook_hash_ids`` ``[batch, pos, heads]``: the PLE's own row ids into its n-gram table (head offsets
  included), i.e. the input of ``ple_embedding.ngram_embedding``; heads = (ngram_size-1) x heads_per_ngram.
- ``hook_memory`` ``[batch, pos, ple_embed_dim]``: the concatenated retrieved embeddings.
- ``hook_gate`` ``[batch, pos, hc_count]``: the per-stream gate sigmoid(signed_sqrt(<norm_key(key_proj(e)),
  norm_query(h)> / sqrt(d))), formed from the PLE's own ``norm_key`` / ``norm_query`` outputs. Read-only:
  Hugging Face multiplies it inline, so a hook that returns a changed gate is refused (patch hook_memory
  or hook_out instead).
- ``hook_out`` ``[batch, pos, hc_count, d_model]``: the PLE output that is added to the residual streams.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from transformer_lens.hook_points import HookPoint

from engram_interp.errors import EngramInterpError


class PLEHooks(nn.Module):
    """The four Engram hook points of one PLE layer (see the module docstring for shapes)."""

    def __init__(self) -> None:
        super().__init__()
        self.hook_hash_ids = HookPoint()
        self.hook_memory = HookPoint()
        self.hook_gate = HookPoint()
        self.hook_out = HookPoint()


def attach(ple: nn.Module, hooks: PLEHooks) -> list:
    """Register the torch hooks that feed ``hooks`` from the HF PLE module ``ple``; returns the handles."""
    hc, d = ple.hc_count, ple.hidden_size
    seen: dict[str, torch.Tensor] = {}

    def hash_ids(module, args):
        return (hooks.hook_hash_ids(args[0]),) + tuple(args[1:])

    def memory(module, args, out):
        return hooks.hook_memory(out)

    def keep(key: str):
        def hook(module, args, out):
            if hooks.hook_gate._forward_hooks:  # only kept while someone reads the gate
                seen[key] = out
        return hook

    def output(module, args, out):
        if hooks.hook_gate._forward_hooks:
            gate = gate_from_normed(seen.pop("key"), seen.pop("query"), hc, d)
            if hooks.hook_gate(gate) is not gate:
                raise EngramInterpError("hook_gate is read-only on Qwen4-Exp PLE layers; patch hook_memory or hook_out")
        return hooks.hook_out(out.unflatten(-1, (hc, d))).flatten(-2)

    emb = ple.ple_embedding
    return [
        emb.ngram_embedding.register_forward_pre_hook(hash_ids),
        emb.register_forward_hook(memory),
        ple.norm_key.register_forward_hook(keep("key")),
        ple.norm_query.register_forward_hook(keep("query")),
        ple.register_forward_hook(output),
    ]


def gate_from_normed(key_normed: torch.Tensor, query_normed: torch.Tensor, hc: int, d: int) -> torch.Tensor:
    """The PLE gate ``[..., hc]`` in (0, 1) from the normalised key and query ``[..., hc * d]``."""
    k = key_normed.unflatten(-1, (hc, d))
    q = query_normed.unflatten(-1, (hc, d))
    g = (k * q).sum(-1) / math.sqrt(d)
    return torch.sigmoid(g.abs().clamp_min(1e-6).sqrt() * g.sign())


@dataclass(frozen=True)
class PLEHashing:
    """One PLE layer's hashing: which table rows a token sequence reads.

    ``table_name``: the state-dict name of its n-gram table ``[rows, head_dim]``; ``head_sizes``: the
    prime table size of each head (row ids of head h lie in ``[head_offsets[h], head_offsets[h] +
    head_sizes[h])``); ``ngram_size``, ``heads_per_ngram`` as in the config."""

    layer: int
    table_name: str
    rows: int
    head_dim: int
    ngram_size: int
    heads_per_ngram: int
    head_sizes: tuple[int, ...]
    head_offsets: tuple[int, ...]
    _module: nn.Module

    @torch.no_grad()
    def row_ids(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Token ids ``[batch, pos]`` (a new sequence, no cache) -> row ids ``[batch, pos, heads]``,
        computed by the HF module itself."""
        got: list[torch.Tensor] = []
        emb = self._module
        handle = emb.ngram_embedding.register_forward_pre_hook(lambda m, a: got.append(a[0]))
        try:
            emb(token_ids.to(emb.layer_multipliers.device).long(), None)
        finally:
            handle.remove()
        return got[0]


def hashing(hf_layers: nn.ModuleList, layer: int) -> PLEHashing:
    """The :class:`PLEHashing` of 0-indexed decoder layer ``layer`` (user error when it has no PLE)."""
    ple = getattr(hf_layers[layer], "ple", None) if 0 <= layer < len(hf_layers) else None
    if ple is None:
        raise EngramInterpError(f"layer {layer} has no PLE memory")
    emb = ple.ple_embedding
    return PLEHashing(
        layer=layer, table_name=f"model.layers.{layer}.ple.ple_embedding.ngram_embedding.weight",
        rows=int(emb.ngram_embedding.weight.shape[0]), head_dim=int(emb.ngram_embedding.weight.shape[1]),
        ngram_size=int(emb.ngram_size), heads_per_ngram=int(emb.heads_per_ngram),
        head_sizes=tuple(int(s) for s in emb.head_vocab_sizes), head_offsets=tuple(int(o) for o in emb.head_offsets),
        _module=emb,
    )
