"""The chunked next-token loss (engram_interp/model/loss.py) against float64 references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from engram_interp.model.loss import chunked_cross_entropy


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_chunked_loss_and_gradients_match_float64_cross_entropy(chunk):
    g = torch.Generator().manual_seed(0)
    n, d, v = 61, 16, 300
    h = torch.randn(n, d, generator=g)
    w = torch.randn(d, v, generator=g) * 2.0  # large logits: the log-sum-exp must stay stable
    t = torch.randint(0, v, (n,), generator=g)
    h1, w1 = h.clone().requires_grad_(), w.clone().requires_grad_()
    loss = chunked_cross_entropy(h1, w1, t, chunk=chunk)
    (loss * 3.0).backward()
    h64, w64 = h.double().requires_grad_(), w.double().requires_grad_()
    ref = F.cross_entropy(h64 @ w64, t)
    (ref * 3.0).backward()
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
    torch.testing.assert_close(h1.grad.double(), h64.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(w1.grad.double(), w64.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["engram", "moe", "mhc"])
def test_model_loss_equals_the_loss_of_its_logits(kind):
    """return_type="loss" (chunked) == float64 cross-entropy of return_type="logits", value and gradients."""
    from engram_interp.testing import tiny_model

    model = tiny_model(kind)
    tokens = model.to_tokens(["Once upon a time there lived a fox who loved grapes", "The capital of France is Paris"])
    loss = model(tokens, return_type="loss")
    loss.backward()
    chunked = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    logits = model(tokens, return_type="logits")
    ref = F.cross_entropy(logits[:, :-1].flatten(0, 1).double(), tokens[:, 1:].flatten())
    ref.backward()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
    assert chunked.keys() == {k for k, p in model.named_parameters() if p.grad is not None}
    for k, p in model.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(chunked[k], p.grad.float(), rtol=1e-4, atol=1e-6, msg=k)
