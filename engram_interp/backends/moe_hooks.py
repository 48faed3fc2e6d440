"""Routing hooks on Hugging Face mixture-of-experts layers, under the names our own MoE layers use
(docs/HOOKS.md): ``blocks.{l}.mlp.hook_router_scores`` ``[batch, pos, expert]``,
``blocks.{l}.mlp.hook_expert_ids`` ``[batch, pos, top_k]`` (int64) and
``blocks.{l}.mlp.hook_expert_weights`` ``[batch, pos, top_k]``.

In transformers 5 every MoE family we open (Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE, DeepSeek-V3) routes
through one module, ``layer.mlp.gate``, that returns ``(router_logits, top_k_weights, top_k_index)`` for
the flattened tokens; the experts then run on that index and those weights. A forward hook on the gate
passes the three through our hook points (reshaped to ``[batch, pos, ...]``) and hands the experts what
the hooks return, so a hook that edits ``hook_expert_ids`` or ``hook_expert_weights`` changes which
experts run and how much each contributes.

``hook_router_scores`` is the router's own affinity: softmax over the experts of the logits (Mixtral,
Qwen-MoE, OLMoE) or their sigmoid (DeepSeek-V3, whose experts are chosen on sigmoid scores plus a
load-balancing bias, within groups), float32. Per-expert outputs (``hook_expert_out``) are not
provided: transformers' expert modules sum the experts internally.
"""

from __future__ import annotations

import torch
from torch import nn
from transformer_lens.hook_points import HookPoint

SIGMOID_ROUTERS = ("DeepseekV3TopkRouter",)


class RouterHooks(nn.Module):
    """The routing hook points of one MoE layer (``blocks.{l}.mlp``)."""

    def __init__(self) -> None:
        super().__init__()
        self.hook_router_scores = HookPoint()  # [batch, pos, expert] float32
        self.hook_expert_ids = HookPoint()  # [batch, pos, top_k] int64
        self.hook_expert_weights = HookPoint()  # [batch, pos, top_k]


def is_moe(layer: nn.Module) -> bool:
    """Does this decoder layer route its FFN through a transformers 5 top-k router (``mlp.gate``)?"""
    mlp = getattr(layer, "mlp", None)
    gate = getattr(mlp, "gate", None)
    return mlp is not None and hasattr(mlp, "experts") and isinstance(gate, nn.Module) and hasattr(gate, "top_k")


def moe_summary(layer: nn.Module) -> dict:
    """``info`` facts of one MoE layer: routed experts, experts per token, shared experts, router kind."""
    mlp = layer.mlp
    gate = mlp.gate
    shared = getattr(mlp, "shared_expert", None) or getattr(mlp, "shared_experts", None)
    return {"experts": int(getattr(gate, "num_experts", 0) or mlp.experts.num_experts), "top_k": int(gate.top_k),
            "shared_experts": shared is not None,
            "router": "sigmoid" if type(gate).__name__ in SIGMOID_ROUTERS else "softmax"}


def attach(layer: nn.Module, hooks: RouterHooks) -> list:
    """Torch hooks that route ``layer.mlp.gate``'s outputs through ``hooks``; returns their handles."""
    mlp, gate = layer.mlp, layer.mlp.gate
    sigmoid = type(gate).__name__ in SIGMOID_ROUTERS
    shape: list[tuple[int, int]] = []

    def record_shape(module, args):
        if not args:
            return
        x = args[0]
        shape[:] = [tuple(x.shape[:-1]) if x.dim() == 3 else (1, x.shape[0])]

    def route(module, args, out):
        logits, weights, ids = out
        b, p = shape[0] if shape else (1, logits.shape[0])
        affinity = logits.float().sigmoid() if sigmoid else torch.softmax(logits.float(), dim=-1)
        hooks.hook_router_scores(affinity.reshape(b, p, -1))
        new_ids = hooks.hook_expert_ids(ids.reshape(b, p, -1)).reshape(ids.shape)
        new_weights = hooks.hook_expert_weights(weights.reshape(b, p, -1)).reshape(weights.shape)
        return logits, new_weights.to(weights.dtype), new_ids.to(ids.dtype)

    return [mlp.register_forward_pre_hook(record_shape), gate.register_forward_hook(route)]
