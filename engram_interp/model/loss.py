"""Next-token cross-entropy computed from the final hidden states in row chunks.

``F.cross_entropy(h @ W_U, targets)`` on a CPU spends most of its time moving the
``[tokens, vocab]`` logits through memory: the logits, their log-softmax, the gradient of both and
the zero fills behind them are each ``tokens x vocab`` floats (268 MB for 32 x 256 tokens and 8,192
ids). :func:`chunked_cross_entropy` never holds more than ``chunk x vocab`` of them: the forward
keeps only the log-sum-exp per row, the backward recomputes each chunk's logits (one extra head
matmul) and turns them into the gradient while they are still in cache. Same value and gradients
as the plain form up to float rounding (tests/test_model_loss.py checks both against float64).

Used by ``EngramTransformer(tokens, return_type="loss")`` when no autocast is active (CPU
training and validation); under autocast the model keeps the plain form.
"""

from __future__ import annotations

import torch

__all__ = ["chunked_cross_entropy", "LOSS_CHUNK"]

LOSS_CHUNK = 512  # rows per chunk: 512 x 8,192 float32 logits = 16 MiB


class _ChunkedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: torch.Tensor, w: torch.Tensor, targets: torch.Tensor, chunk: int) -> torch.Tensor:
        n = h.shape[0]
        lse = torch.empty(n, dtype=torch.float32, device=h.device)
        total = torch.zeros((), dtype=torch.float64, device=h.device)
        for i in range(0, n, chunk):
            z = (h[i : i + chunk] @ w).float()
            lse[i : i + chunk] = torch.logsumexp(z, dim=-1)
            picked = z.gather(1, targets[i : i + chunk, None]).squeeze(1)
            total += (lse[i : i + chunk] - picked).sum(dtype=torch.float64)
        ctx.save_for_backward(h, w, targets, lse)
        ctx.chunk = chunk
        return (total / n).to(torch.float32)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        h, w, targets, lse = ctx.saved_tensors
        n, chunk = h.shape[0], ctx.chunk
        scale = grad.float() / n
        grad_h = torch.empty_like(h) if ctx.needs_input_grad[0] else None
        grad_w = torch.zeros_like(w) if ctx.needs_input_grad[1] else None
        for i in range(0, n, chunk):
            hc = h[i : i + chunk]
            p = (hc @ w).float().sub_(lse[i : i + chunk, None]).exp_()  # softmax of the chunk's logits
            p[torch.arange(len(hc), device=h.device), targets[i : i + chunk]] -= 1.0
            p.mul_(scale)
            p = p.to(h.dtype)
            if grad_h is not None:
                grad_h[i : i + chunk] = p @ w.T
            if grad_w is not None:
                grad_w.addmm_(hc.T, p)
        return grad_h, grad_w, None, None


def chunked_cross_entropy(h: torch.Tensor, w_u: torch.Tensor, targets: torch.Tensor,
                          chunk: int | None = None) -> torch.Tensor:
    """Mean cross-entropy of ``h @ w_u`` against ``targets``: ``h`` [n, d_model], ``w_u``
    [d_model, vocab], ``targets`` [n] int64; returns a float32 scalar with gradients for
    ``h`` and ``w_u``; ``chunk`` rows at a time (default :data:`LOSS_CHUNK`)."""
    if h.shape[0] == 0:
        raise ValueError("chunked_cross_entropy needs at least one row")
    return _ChunkedCrossEntropy.apply(h, w_u, targets, chunk or LOSS_CHUNK)
