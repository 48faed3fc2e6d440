"""Per-head attention output on Hugging Face models: ``blocks.{l}.attn.hook_z``, the input of ``o_proj``
split into heads, as TransformerLens's ``hook_z``. With the per-head ``W_O`` it gives each head's write
into the residual stream (``ActivationCache.stack_head_results``, ``get_full_resid_decomposition``)."""

from __future__ import annotations

import torch
from torch import nn
from transformer_lens.hook_points import HookPoint


class AttnHooks(nn.Module):
    """The hook point under ``blocks.{l}.attn`` of a layer with standard (softmax) attention."""

    def __init__(self) -> None:
        super().__init__()
        self.hook_z = HookPoint()  # [batch, pos, head, d_head]: attention output of each head, before o_proj


def has_z(layer: nn.Module) -> bool:
    """Whether the decoder layer has an attention with a linear ``o_proj`` (GatedDeltaNet layers have none)."""
    attn = getattr(layer, "self_attn", None)
    return attn is not None and isinstance(getattr(attn, "o_proj", None), nn.Linear)


def attach(layer: nn.Module, hooks: AttnHooks, n_heads: int) -> list:
    """Route ``o_proj``'s input through ``hooks.hook_z`` (as ``[batch, pos, head, d_head]``); returns the handles."""
    def pre(module, args):
        z = hooks.hook_z(args[0].unflatten(-1, (n_heads, -1)))
        return (z.flatten(-2),) + tuple(args[1:])

    return [layer.self_attn.o_proj.register_forward_pre_hook(pre)]


def output_weight(layer: nn.Module, n_heads: int) -> torch.Tensor:
    """``o_proj`` per head: ``[n_heads, d_head, d_model]`` (its bias, if any, is not split)."""
    w = layer.self_attn.o_proj.weight  # [d_model, n_heads * d_head]
    return w.T.reshape(n_heads, -1, w.shape[0])
