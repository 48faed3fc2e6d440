"""A demo-named Engram state dict loads and matches a float64 recomputation of the demo equations."""

import dataclasses

import numpy as np
import pytest
import torch

from engram_interp.checkpoint import load_demo_engram_state
from engram_interp.errors import CheckpointError
from engram_interp.model.engram import Engram
from engram_interp.testing import tiny_config

from test_hashing import _reference_hash

F32_EPS = float(np.finfo(np.float32).eps)  # the demo's nn.RMSNorm(eps=None) uses the dtype's eps


def _rms(x, w, eps):
    return x / np.sqrt((x**2).mean(-1, keepdims=True) + eps) * w


def _demo_reference(state, h, canonical, cfg, layer_idx, pad):
    """Float64 numpy recomputation of engram_demo_v1.Engram.forward for h [B, T, M, d]."""
    e = cfg.engram
    s = {k: v.double().numpy() for k, v in state.items()}
    mults, primes = list(e.multipliers[layer_idx]), list(e.table_sizes[layer_idx])
    rows = np.array(_reference_hash(canonical.tolist(), mults, primes, e.n_head_per_ngram, pad))  # [B, T, H]
    offsets = np.concatenate([[0], np.cumsum(primes)[:-1]])
    emb = s["multi_head_embedding.embedding.weight"][rows + offsets]  # [B, T, H, d_head]
    mem = emb.reshape(*rows.shape[:2], -1)
    B, T, M, d = h.shape
    gates = []
    for m in range(M):
        key = mem @ s[f"key_projs.{m}.weight"].T + s[f"key_projs.{m}.bias"]
        nk = _rms(key, s[f"norm1.{m}.weight"], F32_EPS)
        nq = _rms(h[:, :, m], s[f"norm2.{m}.weight"], F32_EPS)
        g = (nk * nq).sum(-1) / np.sqrt(d)
        g = np.sqrt(np.maximum(np.abs(g), 1e-6)) * np.sign(g)
        gates.append(1 / (1 + np.exp(-g)))
    gate = np.stack(gates, axis=2)[..., None]  # [B, T, M, 1]
    value = gate * (mem @ s["value_proj.weight"].T + s["value_proj.bias"])[:, :, None, :]
    normed = np.stack([_rms(value[:, :, m], s[f"short_conv.norms.{m}.weight"], 1e-5) for m in range(M)], axis=2)
    x = normed.reshape(B, T, M * d)
    w = s["short_conv.conv.weight"][:, 0, :]  # [M*d, kernel]
    kernel, dil = e.kernel_size, e.max_ngram_size
    conv = np.zeros_like(x)
    for j in range(kernel):
        shift = (kernel - 1 - j) * dil
        if shift < T:
            conv[:, shift:] += w[:, j] * x[:, : T - shift]
    conv = conv / (1 + np.exp(-conv))  # SiLU
    return value + conv.reshape(B, T, M, d)


@pytest.mark.parametrize("branches", [4, 1])
def test_demo_named_state_matches_float64_reference(branches):
    cfg = tiny_config("mhc")
    cfg = dataclasses.replace(cfg, n_branches=branches, engram=cfg.engram.resolved(cfg.vocab_size))
    layer = cfg.engram.layer_ids[1]
    pad = cfg.engram.pad_id  # identity compression in this test
    engram = Engram(cfg, layer, pad)
    gen = torch.Generator().manual_seed(0)
    d, dm, M = cfg.d_model, cfg.engram.d_mem, branches
    rows = engram.memory.weight.shape[0]
    state = {
        "multi_head_embedding.embedding.weight": torch.randn(rows, cfg.engram.d_head, generator=gen),
        "value_proj.weight": torch.randn(d, dm, generator=gen) / dm**0.5,
        "value_proj.bias": torch.randn(d, generator=gen) * 0.1,
        "short_conv.conv.weight": torch.randn(M * d, 1, cfg.engram.kernel_size, generator=gen) * 0.5,
    }
    for m in range(M):
        state[f"key_projs.{m}.weight"] = torch.randn(d, dm, generator=gen) / dm**0.5
        state[f"key_projs.{m}.bias"] = torch.randn(d, generator=gen) * 0.1
        state[f"norm1.{m}.weight"] = 1 + 0.1 * torch.randn(d, generator=gen)
        state[f"norm2.{m}.weight"] = 1 + 0.1 * torch.randn(d, generator=gen)
        state[f"short_conv.norms.{m}.weight"] = 1 + 0.1 * torch.randn(d, generator=gen)
    load_demo_engram_state(engram, state)

    ids = torch.randint(0, cfg.vocab_size, (2, 19), generator=gen)
    h = torch.randn(2, 19, M, d, generator=gen)
    with torch.no_grad():
        got = engram(h if M > 1 else h[:, :, 0], ids)
    got = got if M > 1 else got.unsqueeze(2)
    ref = _demo_reference(state, h.double().numpy(), ids.numpy(), cfg, cfg.engram.layer_ids.index(layer), pad)
    assert np.abs(got.double().numpy() - ref).max() < 1e-5


def test_demo_state_errors_name_the_tensor():
    cfg = tiny_config("mhc")
    cfg = dataclasses.replace(cfg, engram=cfg.engram.resolved(cfg.vocab_size))
    engram = Engram(cfg, cfg.engram.layer_ids[0], 2)
    with pytest.raises(CheckpointError, match="unknown demo"):
        load_demo_engram_state(engram, {"bogus.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="lacks"):
        load_demo_engram_state(engram, {"value_proj.bias": torch.zeros(cfg.d_model)})
