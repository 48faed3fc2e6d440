"""mHC: Manifold-Constrained Hyper-Connections (Xie et al. 2025) around one sublayer.

The residual is M streams X [batch, pos, M, d]. From x~ = RMSNorm(flatten(X)):
    H_pre  = sigmoid(a_pre * x~ W_pre + b_pre)              [batch, pos, M]  reads the sublayer input
    H_post = 2 * sigmoid(a_post * x~ W_post + b_post)       [batch, pos, M]  writes its output back
    H_res  = SinkhornKnopp(exp(a_res * x~ W_res + b_res))   [batch, pos, M, M] doubly stochastic
    X'     = H_res X + H_post^T F(sum_m H_pre[m] X_m)
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformer_lens.hook_points import HookPoint


def sinkhorn_knopp(positive: torch.Tensor, iters: int) -> torch.Tensor:
    """Alternate row / column normalisation of [..., M, M] positive matrices."""
    mat = positive
    for _ in range(iters):
        mat = mat / mat.sum(-1, keepdim=True)
        mat = mat / mat.sum(-2, keepdim=True)
    return mat


class HyperConnection(nn.Module):
    def __init__(self, d_model: int, n_branches: int, sinkhorn_iters: int, eps: float):
        super().__init__()
        m = n_branches
        self.m, self.iters, self.eps = m, sinkhorn_iters, eps
        self.norm_w = nn.Parameter(torch.ones(m * d_model))
        self.W = nn.Linear(m * d_model, m + m + m * m, bias=False)  # [W_pre | W_post | W_res]
        self.alpha = nn.Parameter(torch.full((3,), 0.01))  # a_pre, a_post, a_res (small init)
        self.b_pre = nn.Parameter(torch.full((m,), math.log(1.0 / (m - 1))))  # sigmoid -> 1/M: read the mean
        self.b_post = nn.Parameter(torch.zeros(m))  # 2*sigmoid(0) = 1: every stream gets the output
        self.b_res = nn.Parameter(torch.full((m, m), -4.0).fill_diagonal_(0.0))  # near identity mixing
        self.hook_h_pre = HookPoint()  # [batch, pos, M]
        self.hook_h_post = HookPoint()  # [batch, pos, M]
        self.hook_h_res = HookPoint()  # [batch, pos, M, M]: row m = how much of each old stream stream m keeps

    def coefficients(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [batch, pos, M, d] -> H_pre [b,p,M], H_post [b,p,M], H_res [b,p,M,M] (float32)."""
        flat = x.flatten(-2).float()
        flat = flat * torch.rsqrt(flat.pow(2).mean(-1, keepdim=True) + self.eps) * self.norm_w.float()
        proj = self.W(flat.to(self.W.weight.dtype)).float()
        m = self.m
        h_pre = torch.sigmoid(self.alpha[0] * proj[..., :m] + self.b_pre)
        h_post = 2 * torch.sigmoid(self.alpha[1] * proj[..., m : 2 * m] + self.b_post)
        logits = self.alpha[2] * proj[..., 2 * m :].unflatten(-1, (m, m)) + self.b_res
        h_res = sinkhorn_knopp(torch.exp(logits - logits.amax((-1, -2), keepdim=True)), self.iters)
        return self.hook_h_pre(h_pre), self.hook_h_post(h_post), self.hook_h_res(h_res)

    @staticmethod
    def read(x: torch.Tensor, h_pre: torch.Tensor) -> torch.Tensor:
        return (h_pre.unsqueeze(-1).to(x.dtype) * x).sum(2)  # [batch, pos, d]

    @staticmethod
    def write(x: torch.Tensor, h_res: torch.Tensor, h_post: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        mixed = torch.einsum("bpmn,bpnd->bpmd", h_res.to(x.dtype), x)
        return mixed + h_post.unsqueeze(-1).to(x.dtype) * out.unsqueeze(2)
