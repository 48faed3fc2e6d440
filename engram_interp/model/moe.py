"""DeepSeekMoE: shared experts + top-k routed SwiGLU experts with auxiliary-loss-free balancing.

    h' = sum(shared experts(h)) + sum_{i in topK} g_i * expert_i(h)   (the residual add is the block's)
    s_i = sigmoid(h . e_i);  top-K chosen on s_i + b_i;  g_i = chosen s_i renormalised.
After each optimiser step ``update_balance()`` does b_i += gamma * sign(mean_load - load_i).
Dispatch is sparse: tokens are sorted by expert and each expert runs only on its own tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformer_lens.hook_points import HookPoint

from engram_interp.config import ModelConfig
from engram_interp.model.layers import SwiGLU


class MoE(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        moe = cfg.moe
        assert moe is not None
        self.top_k, self.n_experts, self.gamma = moe.top_k, moe.n_routed_experts, moe.balance_rate
        d, h, n = cfg.d_model, moe.d_expert, moe.n_routed_experts
        self.shared_experts = SwiGLU(d, h * moe.n_shared_experts) if moe.n_shared_experts else None
        self.router = nn.Parameter(torch.empty(n, d))  # expert centroids e_i
        self.W_gate = nn.Parameter(torch.empty(n, d, h))
        self.W_up = nn.Parameter(torch.empty(n, d, h))
        self.W_down = nn.Parameter(torch.empty(n, h, d))
        self.register_buffer("balance_bias", torch.zeros(n))  # b_i: selection only, never gets gradients
        self.register_buffer("load", torch.zeros(n), persistent=False)  # tokens per expert since last update
        self.hook_router_scores = HookPoint()  # [batch, pos, expert]: s_i
        self.hook_expert_ids = HookPoint()  # [batch, pos, top_k]
        self.hook_expert_weights = HookPoint()  # [batch, pos, top_k]: g_i
        # [batch, pos, top_k, d_model]: g_i * expert_i(h) per chosen slot (order of hook_expert_ids);
        # only materialised while a hook is attached (direct logit attribution per expert)
        self.hook_expert_out = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, pos, d = x.shape
        scores = self.hook_router_scores(torch.sigmoid(x.float() @ self.router.float().T))
        expert_ids = self.hook_expert_ids(torch.topk(scores + self.balance_bias, self.top_k, dim=-1).indices)
        weights = scores.gather(-1, expert_ids)
        weights = self.hook_expert_weights(weights / weights.sum(-1, keepdim=True))
        if self.training:
            self.load += torch.bincount(expert_ids.flatten(), minlength=self.n_experts).to(self.load.dtype)

        flat_x = x.reshape(-1, d)
        flat_ids = expert_ids.reshape(-1)  # [tokens * top_k]
        order = torch.argsort(flat_ids, stable=True)
        token_of = order // self.top_k  # which token each sorted slot belongs to
        counts = torch.bincount(flat_ids, minlength=self.n_experts).tolist()
        slot_weights = weights.reshape(-1)[order].to(x.dtype)
        out = torch.zeros_like(flat_x)
        slots = flat_x.new_zeros(flat_ids.numel(), d) if self.hook_expert_out._forward_hooks else None
        start = 0
        for e, count in enumerate(counts):
            if count == 0:
                continue
            idx = token_of[start : start + count]
            xe = flat_x[idx]
            ye = (F.silu(xe @ self.W_gate[e]) * (xe @ self.W_up[e])) @ self.W_down[e]
            weighted = ye * slot_weights[start : start + count, None]
            out.index_add_(0, idx, weighted)
            if slots is not None:
                slots[order[start : start + count]] = weighted
            start += count
        out = out.view(batch, pos, d)
        if slots is not None:
            self.hook_expert_out(slots.view(batch, pos, self.top_k, d))
        if self.shared_experts is not None:
            out = out + self.shared_experts(x)
        return out

    @torch.no_grad()
    def update_balance(self) -> None:
        """Auxiliary-loss-free balancing step; call once per optimiser step while training."""
        if self.load.sum() > 0:
            self.balance_bias += self.gamma * torch.sign(self.load.mean() - self.load)
        self.load.zero_()
