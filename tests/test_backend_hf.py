"""The Hugging Face backend against independent references: tiny random Llama and Qwen4-Exp folders
built from configs (no downloads). Logits vs a separately loaded HF model; every hook value vs a
float64 recomputation from the HF module's weights; LogitLens vs a hand-written norm + lm_head;
Engram (PLE) suppression vs HF with the PLE output zeroed by a plain forward hook."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import engram_interp as ei
from engram_interp.backends.testing import tiny_llama_folder, tiny_qwen4_exp_folder

TEXT = "The capital of France is Paris. Alexander the Great was a king of Macedon."
D = torch.float64


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return {"llama": tiny_llama_folder(root / "llama"), "qwen4": tiny_qwen4_exp_folder(root / "qwen4")}


@pytest.fixture(scope="module")
def llama(folders):
    return ei.load(folders["llama"], device="cpu")


@pytest.fixture(scope="module")
def qwen4(folders):
    return ei.load(folders["qwen4"], device="cpu")


def _plain_hf(folder):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=torch.float32).eval()


def _w(module) -> torch.Tensor:
    return module.weight.detach().to(D)


# ------------------------------------------------------------------------------------------- Llama
def test_llama_logits_equal_hf_forward(llama, folders):
    tokens = llama.to_tokens(TEXT)
    assert tokens[0, 0].item() == 0 and llama.info.bos_token_id == 0  # the tokenizer's own BOS
    with torch.no_grad():
        ref = _plain_hf(folders["llama"])(tokens).logits
        got = llama(tokens)
    assert torch.equal(got, ref)


def _rms(x, w, eps, one_plus=False):
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return x * ((1 + w) if one_plus else w)


def _rotate(x, theta):
    """Rotary embedding (rotate-half convention) over the last dim of ``x`` [heads, pos, hd], float64."""
    hd, pos = x.shape[-1], x.shape[-2]
    inv = 1.0 / theta ** (torch.arange(0, hd, 2, dtype=D) / hd)
    ang = torch.arange(pos, dtype=D)[:, None] * inv[None]
    cos, sin = torch.cat([ang, ang], -1).cos(), torch.cat([ang, ang], -1).sin()
    x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
    return x * cos + torch.cat([-x2, x1], -1) * sin


def _llama_attention(layer, x, cfg):
    """Causal GQA attention with RoPE, by hand, float64: x [pos, d] -> [pos, d]."""
    a = layer.self_attn
    nh, nkv = cfg.num_attention_heads, cfg.num_key_value_heads
    hd = cfg.hidden_size // nh
    q = (x @ _w(a.q_proj).T).view(-1, nh, hd).transpose(0, 1)
    k = (x @ _w(a.k_proj).T).view(-1, nkv, hd).transpose(0, 1)
    v = (x @ _w(a.v_proj).T).view(-1, nkv, hd).transpose(0, 1)
    theta = (cfg.rope_parameters or {}).get("rope_theta", 10000.0)
    q, k = _rotate(q, theta), _rotate(k, theta)
    k, v = k.repeat_interleave(nh // nkv, 0), v.repeat_interleave(nh // nkv, 0)
    scores = q @ k.transpose(-1, -2) / math.sqrt(hd)
    n = x.shape[0]
    scores = scores.masked_fill(torch.triu(torch.ones(n, n, dtype=torch.bool), 1), float("-inf"))
    out = (scores.softmax(-1) @ v).transpose(0, 1).reshape(n, -1)
    return out @ _w(a.o_proj).T


def test_llama_every_hook_equals_float64_recomputation(llama):
    tokens = llama.to_tokens(TEXT)
    _, cache = llama.run_with_cache(tokens)
    hf, cfg = llama.hf, llama.hf.config
    eps = cfg.rms_norm_eps
    x = _w(hf.model.embed_tokens)[tokens[0]]
    tol = dict(atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(cache["hook_embed"][0].to(D), x, **tol)
    for l, layer in enumerate(hf.model.layers):
        torch.testing.assert_close(cache[f"blocks.{l}.hook_resid_pre"][0].to(D), x, **tol)
        attn = _llama_attention(layer, _rms(x, _w(layer.input_layernorm), eps), cfg)
        torch.testing.assert_close(cache[f"blocks.{l}.hook_attn_out"][0].to(D), attn, **tol)
        mid = x + attn
        h = _rms(mid, _w(layer.post_attention_layernorm), eps)
        mlp = (F.silu(h @ _w(layer.mlp.gate_proj).T) * (h @ _w(layer.mlp.up_proj).T)) @ _w(layer.mlp.down_proj).T
        torch.testing.assert_close(cache[f"blocks.{l}.hook_mlp_out"][0].to(D), mlp, **tol)
        x = mid + mlp
        torch.testing.assert_close(cache[f"blocks.{l}.hook_resid_post"][0].to(D), x, **tol)
    torch.testing.assert_close(cache["hook_readout"][0].to(D), x, **tol)


def test_logit_lens_on_tiny_llama_equals_hand_written_norm_and_lm_head(llama):
    from engram_interp.analysis import logit_lens_tokens

    res = logit_lens_tokens(llama, TEXT)
    tokens = llama.to_tokens(TEXT)
    _, cache = llama.run_with_cache(tokens)
    hf = llama.hf
    w_norm, w_head, eps = _w(hf.model.norm), _w(hf.lm_head), hf.config.rms_norm_eps
    final = torch.log_softmax(_rms(cache["blocks.1.hook_resid_post"][0].to(D), w_norm, eps) @ w_head.T, -1)
    for li, name in enumerate(llama.layer_point_names()):
        log_q = torch.log_softmax(_rms(cache[name][0].to(D), w_norm, eps) @ w_head.T, -1)
        kl = (final.exp() * (final - log_q)).sum(-1)
        torch.testing.assert_close(torch.tensor(res.kl[li], dtype=D), kl, atol=1e-4, rtol=1e-3)
    assert max(res.kl[-1]) < 1e-4 and max(res.kl[0]) > 1e-3  # the last point is the model's own output


# --------------------------------------------------------------------------------------- Qwen4-Exp
def test_qwen4_exp_structure_and_logits_equal_hf_forward(qwen4, folders):
    info = qwen4.info
    assert (info.architecture, info.n_branches, info.engram_layers, info.bos_token_id) == (
        "Qwen4ExpForCausalLM", 2, (0, 2), None)
    assert info.extra["ple"][0]["rows"] == qwen4.hf.model.layers[0].ple.ple_embedding.ngram_embedding.weight.shape[0]
    tokens = qwen4.to_tokens(TEXT)
    with torch.no_grad():
        ref = _plain_hf(folders["qwen4"])(tokens).logits
    torch.testing.assert_close(qwen4(tokens), ref, atol=1e-5, rtol=1e-5)


def _wrap64(x: int) -> int:
    x &= (1 << 64) - 1
    return x - (1 << 64) if x >> 63 else x


def _hash_ids(emb, ids: list[int], eos: int) -> torch.Tensor:
    """The PLE n-gram row ids by hand (python ints, int64 wrap-around): [pos, heads]."""
    mult = [int(m) for m in emb.layer_multipliers]
    sizes, offsets = list(emb.head_vocab_sizes), list(emb.head_offsets)
    rows = []
    for t in range(len(ids)):
        hist = [ids[t - k] if t - k >= 0 else eos for k in range(emb.ngram_size)]
        row = []
        for n in range(2, emb.ngram_size + 1):
            mixed = _wrap64(hist[0] * mult[0])
            for k in range(1, n):
                mixed = _wrap64(mixed ^ _wrap64(hist[k] * mult[k]))
            for h in range(emb.heads_per_ngram):
                j = (n - 2) * emb.heads_per_ngram + h
                row.append(mixed % sizes[j] + offsets[j])
        rows.append(row)
    return torch.tensor(rows)


def test_qwen4_exp_ple_hooks_equal_float64_recomputation(qwen4, folders):
    tables = _plain_hf(folders["qwen4"]).model.layers  # Hugging Face's own load: ours reads the tables row by row
    tokens = qwen4.to_tokens(TEXT)
    _, cache = qwen4.run_with_cache(tokens)
    cfg, M, d = qwen4.hf.config, 2, qwen4.info.d_model
    eps, ids = cfg.rms_norm_eps, tokens[0].tolist()
    assert qwen4.info.pad_token_id not in ids[:-1] and cfg.eos_token_id not in ids  # no EOS segmenting here
    for l in qwen4.info.engram_layers:
        ple = qwen4.hf.model.layers[l].ple
        emb = ple.ple_embedding
        rows = _hash_ids(emb, ids, cfg.eos_token_id)
        assert torch.equal(cache[f"blocks.{l}.engram.hook_hash_ids"][0].cpu(), rows)
        assert torch.equal(qwen4.ple_hashing(l).row_ids(tokens)[0], rows)  # the public hashing accessor
        e = _w(tables[l].ple.ple_embedding.ngram_embedding)[rows].flatten(-2)  # [pos, ple_dim]
        torch.testing.assert_close(cache[f"blocks.{l}.engram.hook_memory"][0].to(D), e, atol=1e-6, rtol=1e-6)
        h = cache[f"blocks.{l}.hook_resid_pre"][0].to(D)  # [pos, M, d]
        key = _rms((e @ _w(ple.key_proj).T).view(-1, M, d), _w(ple.norm_key).view(M, d), eps, one_plus=True)
        query = _rms(h, _w(ple.norm_query).view(M, d), eps, one_plus=True)
        g = (key * query).sum(-1) / math.sqrt(d)
        gate = torch.sigmoid(g.abs().clamp_min(1e-6).sqrt() * g.sign())  # [pos, M]
        torch.testing.assert_close(cache[f"blocks.{l}.engram.hook_gate"][0].to(D), gate, atol=1e-5, rtol=1e-4)
        gated = gate[..., None] * (e @ _w(ple.value_proj).T)[:, None, :]  # [pos, M, d]
        normed = _rms(gated, _w(ple.norm_conv).view(M, d), eps, one_plus=True).reshape(len(ids), M * d)
        k_size, dil = ple.conv1d.weight.shape[-1], cfg.ngram_size
        conv = torch.zeros_like(normed)
        for j in range(k_size):  # causal, dilated, depthwise: tap j looks back (k_size-1-j)*dil
            back = (k_size - 1 - j) * dil
            if back < len(ids):
                conv[back:] += normed[: len(ids) - back] * _w(ple.conv1d)[:, 0, j]
        out = gated.reshape(len(ids), M * d) + F.silu(conv)
        torch.testing.assert_close(cache[f"blocks.{l}.engram.hook_out"][0].to(D), out.view(-1, M, d), atol=1e-5, rtol=1e-4)
    for l in range(qwen4.info.n_layers - 1):
        assert torch.equal(cache[f"blocks.{l}.hook_resid_post"], cache[f"blocks.{l + 1}.hook_resid_pre"])


def test_qwen4_exp_readout_is_the_models_own_stream_mixer(qwen4):
    tokens = qwen4.to_tokens(TEXT)
    logits, cache = qwen4.run_with_cache(tokens)
    last = cache[qwen4.layer_point_names()[-1]]
    assert last.shape[-2:] == (2, qwen4.info.d_model)
    torch.testing.assert_close(qwen4.readout(last), cache["hook_readout"])
    torch.testing.assert_close(qwen4.lens_logits(last), logits, atol=1e-5, rtol=1e-5)


def test_qwen4_exp_suppression_equals_hf_with_ple_output_zeroed(qwen4, folders):
    tokens = qwen4.to_tokens(TEXT)
    plain = _plain_hf(folders["qwen4"])
    zero = lambda module, args, out: torch.zeros_like(out)  # noqa: E731
    for layers in (None, [2]):
        chosen = qwen4.info.engram_layers if layers is None else layers
        handles = [plain.model.layers[l].ple.register_forward_hook(zero) for l in chosen]
        with torch.no_grad():
            ref = plain(tokens).logits
        for h in handles:
            h.remove()
        with qwen4.engram_suppressed(layers):
            got, cache = qwen4.run_with_cache(tokens)
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
        assert all(cache[f"blocks.{l}.engram.hook_out"].abs().max() == 0 for l in chosen)
    assert (qwen4(tokens) - got).abs().max() > 1e-4  # suppression is scoped to the block


def test_qwen4_exp_gate_is_read_only(qwen4):
    from engram_interp.errors import EngramInterpError

    tokens = qwen4.to_tokens(TEXT)
    with pytest.raises(EngramInterpError, match="read-only"):
        qwen4.run_with_hooks(tokens, fwd_hooks=[("blocks.0.engram.hook_gate", lambda g, hook: g * 0)])
    memory_zero = qwen4.run_with_hooks(tokens, fwd_hooks=[("blocks.0.engram.hook_memory", lambda m, hook: m * 0)])
    assert (memory_zero - qwen4(tokens)).abs().max() > 1e-5  # writes to hook_memory do change the forward
