"""Causal multi-head self-attention with RoPE."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformer_lens.hook_points import HookPoint

from engram_interp.config import ModelConfig
from engram_interp.model.layers import apply_rotary, rotary_tables


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.d_head = cfg.n_heads, cfg.d_head
        self.W_QKV = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.W_O = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        cos, sin = rotary_tables(cfg.max_seq_len, cfg.d_head, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.hook_q = HookPoint()  # [batch, pos, head, d_head], after RoPE
        self.hook_k = HookPoint()  # [batch, pos, head, d_head], after RoPE
        self.hook_v = HookPoint()  # [batch, pos, head, d_head]
        self.hook_pattern = HookPoint()  # [batch, head, query_pos, key_pos]
        self.hook_z = HookPoint()  # [batch, pos, head, d_head]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, pos, d_model = x.shape
        if pos > self.rope_cos.shape[0]:
            raise ValueError(f"sequence of {pos} tokens exceeds max_seq_len={self.rope_cos.shape[0]}")
        q, k, v = self.W_QKV(x).view(batch, pos, 3, self.n_heads, self.d_head).unbind(2)
        cos, sin = self.rope_cos[:pos], self.rope_sin[:pos]
        q = self.hook_q(apply_rotary(q, cos, sin))
        k = self.hook_k(apply_rotary(k, cos, sin))
        v = self.hook_v(v)
        qh, kh, vh = (t.transpose(1, 2) for t in (q, k, v))  # [batch, head, pos, d_head]
        if self.hook_pattern.fwd_hooks or self.hook_pattern.bwd_hooks:
            # explicit path, so the pattern can be read or edited; same maths as the fused kernel
            scores = qh @ kh.transpose(-1, -2) / math.sqrt(self.d_head)
            causal = torch.ones(pos, pos, dtype=torch.bool, device=x.device).tril()
            scores = scores.float().masked_fill(~causal, float("-inf"))
            pattern = self.hook_pattern(scores.softmax(-1).to(v.dtype))
            z = pattern @ vh
        else:
            z = F.scaled_dot_product_attention(qh, kh, vh, is_causal=True)
        z = self.hook_z(z.transpose(1, 2))  # [batch, pos, head, d_head]
        return self.W_O(z.reshape(batch, pos, d_model))
