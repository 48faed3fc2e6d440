"""Small building blocks: RMSNorm (hooked), embedding, unembedding, SwiGLU, rotary tables."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformer_lens.hook_points import HookPoint


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x^2) + eps) * w, statistics always recomputed on the input, in float32."""

    def __init__(self, d: int, eps: float):
        super().__init__()
        self.eps = eps
        self.w = nn.Parameter(torch.ones(d))
        self.hook_scale = HookPoint()  # [batch, pos, 1]: 1 / RMS
        self.hook_normalized = HookPoint()  # [batch, pos, d]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        scale = self.hook_scale(torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps))
        return self.hook_normalized((x32 * scale).to(x.dtype) * self.w)


class Embed(nn.Module):
    def __init__(self, vocab: int, d: int):
        super().__init__()
        self.W_E = nn.Parameter(torch.empty(vocab, d))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.embedding(tokens, self.W_E)  # [batch, pos, d_model]


class Unembed(nn.Module):
    def __init__(self, d: int, vocab: int):
        super().__init__()
        self.W_U = nn.Parameter(torch.empty(d, vocab))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.W_U  # [batch, pos, vocab]


class SwiGLU(nn.Module):
    """down(SiLU(gate(x)) * up(x)); the shared experts of a MoE layer are one wide SwiGLU."""

    def __init__(self, d: int, hidden: int):
        super().__init__()
        self.W_gate = nn.Linear(d, hidden, bias=False)
        self.W_up = nn.Linear(d, hidden, bias=False)
        self.W_down = nn.Linear(hidden, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.W_down(F.silu(self.W_gate(x)) * self.W_up(x))


def rotary_tables(max_len: int, d_head: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin tables [max_len, d_head // 2] for rotate-half RoPE."""
    inv_freq = 1.0 / theta ** (torch.arange(0, d_head, 2, dtype=torch.float64) / d_head)
    angles = torch.outer(torch.arange(max_len, dtype=torch.float64), inv_freq)
    return angles.cos().float(), angles.sin().float()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [batch, pos, head, d_head]; cos/sin [pos, d_head // 2]."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    cos, sin = cos[:, None, :].to(x.dtype), sin[:, None, :].to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
