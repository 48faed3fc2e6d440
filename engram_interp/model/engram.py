"""The Engram module: hashed n-gram memory read in O(1), fused through a context-aware gate.

For one layer, with canonical ids x and residual h (M branches; M = 1 for a plain residual):
    rows    = hash(x_t, x_{t-1}, ..., x_{t-n+1}) per order n and head k    (hashing.py)
    e_t     = concat_{n,k} table[rows + head offset]                      [batch, pos, d_mem]
    v_t     = W_V e_t ;  k_t^(m) = W_K^(m) e_t                             (d_mem -> d_model)
    s^(m)   = <RMSNorm_q^(m)(h_t^(m)), RMSNorm_k^(m)(k_t^(m))> / sqrt(d_model)
    alpha^(m) = sigmoid(sign(s) * sqrt(max(|s|, 1e-6)))   (signed sqrt: demo default; switch)
    u^(m)   = alpha^(m) * v_t
    Y^(m)   = u^(m) + SiLU(CausalDepthwiseConv1d(RMSNorm_c^(m)(u^(m))))  (kernel 4, dilation N; switch)
The block then does h^(m) <- h^(m) + Y^(m). Parameter names follow the maths; ``DEMO_NAMES`` maps
the official demo module's state-dict names onto them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformer_lens.hook_points import HookPoint

from engram_interp.config import ModelConfig
from engram_interp.model.hashing import ngram_hash_ids


class Engram(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_id: int, canonical_pad_id: int, table_device=None):
        super().__init__()
        e = cfg.engram
        assert e is not None and e.table_sizes is not None and e.multipliers is not None, "resolve the config first"
        i = e.layer_ids.index(layer_id)
        d, m = cfg.d_model, cfg.n_branches
        self.layer_id, self.n_branches, self.d_model = layer_id, m, d
        self.n_head_per_ngram, self.null_memory = e.n_head_per_ngram, e.null_memory
        self.signed_sqrt_gate, self.use_conv = e.signed_sqrt_gate, e.use_conv
        self.canonical_pad_id = canonical_pad_id
        self.capacity: int | None = None  # rows kept per head at inference (None: the whole table); engram_capacity
        sizes = torch.tensor(e.table_sizes[i], dtype=torch.long)
        self.register_buffer("primes", sizes, persistent=False)  # [(N-1)*K]
        self.register_buffer("offsets", torch.cumsum(sizes, 0) - sizes, persistent=False)  # head offsets
        self.register_buffer("multipliers", torch.tensor(e.multipliers[i], dtype=torch.long), persistent=False)

        # all heads back to back; table_device="meta" allocates nothing (checkpoint.load maps the rows from the file)
        rows = sum(e.table_sizes[i])
        self.memory = nn.Embedding(rows, e.d_head) if table_device is None else \
            nn.Embedding(rows, e.d_head, _weight=torch.empty(rows, e.d_head, device=table_device))  # no init pass
        self.W_V = nn.Linear(e.d_mem, d, bias=e.proj_bias)
        self.W_K = nn.ModuleList([nn.Linear(e.d_mem, d, bias=e.proj_bias) for _ in range(m)])
        self.key_norm = nn.ModuleList([nn.RMSNorm(d) for _ in range(m)])  # demo norm1 (eps: dtype eps)
        self.query_norm = nn.ModuleList([nn.RMSNorm(d) for _ in range(m)])  # demo norm2
        if e.use_conv:
            self.conv_dilation, self.kernel_size = e.max_ngram_size, e.kernel_size
            self.conv = nn.Conv1d(m * d, m * d, e.kernel_size, groups=m * d, bias=False, dilation=e.max_ngram_size)
            self.conv_norm = nn.ModuleList([nn.RMSNorm(d, eps=1e-5) for _ in range(m)])

        self.hook_hash_ids = HookPoint()  # [batch, pos, (N-1)*K] int64
        self.hook_memory = HookPoint()  # [batch, pos, d_mem]: e_t
        self.hook_gate = HookPoint()  # [batch, pos, branch]: alpha_t
        self.hook_out = HookPoint()  # resid shape: Y

    def hash_ids(self, canonical_ids: torch.Tensor) -> torch.Tensor:
        """[batch, pos] canonical ids -> [batch, pos, (N-1)*K] table rows (0 everywhere for Engram-null).
        With ``capacity`` k set, every head keeps only its first k rows: row r becomes r mod k (a head
        with at most k rows is unchanged), so k = 1 makes every n-gram of a head read one row."""
        ids = ngram_hash_ids(canonical_ids, self.multipliers, self.primes, self.n_head_per_ngram, self.canonical_pad_id)
        if self.capacity is not None:
            ids = torch.remainder(ids, self.capacity)
        return torch.zeros_like(ids) if self.null_memory else ids

    def forward(self, h: torch.Tensor, canonical_ids: torch.Tensor) -> torch.Tensor:
        """h: [batch, pos, d_model] or [batch, pos, branch, d_model]; returns Y of the same shape."""
        single = h.dim() == 3
        hb = h.unsqueeze(2) if single else h  # [batch, pos, branch, d_model]
        batch, pos = canonical_ids.shape
        rows = self.hook_hash_ids(self.hash_ids(canonical_ids))
        e_t = self.hook_memory(self.memory(rows + self.offsets).flatten(-2))  # [batch, pos, d_mem]
        v = self.W_V(e_t)  # [batch, pos, d_model]
        scores = []
        for m in range(self.n_branches):
            k = self.key_norm[m](self.W_K[m](e_t))
            q = self.query_norm[m](hb[:, :, m])
            scores.append((k * q).sum(-1) / math.sqrt(self.d_model))
        s = torch.stack(scores, dim=-1)  # [batch, pos, branch]
        if self.signed_sqrt_gate:
            s = s.sign() * s.abs().clamp_min(1e-6).sqrt()
        alpha = self.hook_gate(torch.sigmoid(s))
        u = alpha.unsqueeze(-1) * v.unsqueeze(2)  # [batch, pos, branch, d_model]
        y = u + self._short_conv(u) if self.use_conv else u
        return self.hook_out(y.squeeze(2) if single else y)

    def _short_conv(self, u: torch.Tensor) -> torch.Tensor:
        batch, pos, m, d = u.shape
        normed = torch.cat([self.conv_norm[i](u[:, :, i]) for i in range(m)], dim=-1)  # [batch, pos, m*d]
        left = (self.kernel_size - 1) * self.conv_dilation  # causal: pad the past only
        y = self.conv(F.pad(normed.transpose(1, 2), (left, 0)))  # [batch, m*d, pos]
        return F.silu(y).transpose(1, 2).reshape(batch, pos, m, d)


def demo_names(n_branches: int) -> dict[str, str]:
    """Official demo state-dict names -> ours, for one Engram layer."""
    names = {
        "multi_head_embedding.embedding.weight": "memory.weight",
        "value_proj.weight": "W_V.weight",
        "value_proj.bias": "W_V.bias",
        "short_conv.conv.weight": "conv.weight",
    }
    for m in range(n_branches):
        names |= {
            f"key_projs.{m}.weight": f"W_K.{m}.weight",
            f"key_projs.{m}.bias": f"W_K.{m}.bias",
            f"norm1.{m}.weight": f"key_norm.{m}.weight",
            f"norm2.{m}.weight": f"query_norm.{m}.weight",
            f"short_conv.norms.{m}.weight": f"conv_norm.{m}.weight",
        }
    return names
