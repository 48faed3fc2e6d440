"""``model.cfg`` with TransformerLens's field names, for backends that have no config of their own."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engram_interp.errors import EngramInterpError


@dataclass(frozen=True)
class TLConfig:
    """The fields of TL's ``HookedTransformerConfig`` that TL code and notebooks read, for one model.
    Built fresh on every ``model.cfg`` (so ``device`` and ``dtype`` are current); read-only."""

    n_layers: int
    d_model: int
    d_vocab: int
    n_heads: int | None  # None when no layer has softmax attention
    d_head: int | None
    n_ctx: int
    device: torch.device
    dtype: torch.dtype
    model_name: str
    original_architecture: str
    default_prepend_bos: bool
    n_branches: int = 1  # residual streams (ours; 1 for every TL model)
    d_mlp: int | None = None
    normalization_type: str = "RMS"
    attn_only: bool = False
    positional_embedding_type: str = "rotary"

    @property
    def d_vocab_out(self) -> int:
        return self.d_vocab


def tl_config(model) -> TLConfig:
    """``model`` (an :class:`~engram_interp.interface.InterpModel`) -> its :class:`TLConfig`: sizes from
    ``model.info``, heads from the first layer with a per-head output projection (``attn_output_weight``)."""
    info = model.info
    heads = d_head = None
    for layer in range(info.n_layers):
        try:
            heads, d_head, _ = model.attn_output_weight(layer).shape
            break
        except EngramInterpError:  # a layer without softmax attention (GatedDeltaNet)
            continue
    w_u = model.unembed_weight()
    return TLConfig(n_layers=info.n_layers, d_model=info.d_model, d_vocab=info.vocab_size, n_heads=heads, d_head=d_head,
                    n_ctx=info.max_seq_len, device=model.device, dtype=w_u.dtype, model_name=info.name,
                    original_architecture=info.architecture, default_prepend_bos=info.bos_token_id is not None,
                    n_branches=info.n_branches)
