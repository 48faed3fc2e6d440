"""The shared hooked model: forward passes, hook contract, MoE, Engram suppression, text in."""

import copy
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from engram_interp.errors import EngramInterpError
from engram_interp.model.hyperconnections import sinkhorn_knopp
from engram_interp.model.moe import MoE
from engram_interp.testing import tiny_model

KINDS = ["dense", "moe", "engram", "engram-null", "mhc"]
HOOKS_DOC = (Path(__file__).parent.parent / "docs" / "HOOKS.md").read_text()


def _expected_shape(name, model, b, p):
    cfg = model.cfg
    d, h, dh, m = cfg.d_model, cfg.n_heads, cfg.d_head, cfg.n_branches
    resid = (b, p, d) if m == 1 else (b, p, m, d)
    last = name.split(".")[-1]
    if name.startswith("blocks.") and ".engram." in name:
        e = cfg.engram
        return {"hook_hash_ids": (b, p, e.n_hash_heads), "hook_memory": (b, p, e.d_mem), "hook_gate": (b, p, m), "hook_out": resid}[last]
    if ".mlp." in name:
        k, n = cfg.moe.top_k, cfg.moe.n_routed_experts
        return {"hook_router_scores": (b, p, n), "hook_expert_ids": (b, p, k), "hook_expert_weights": (b, p, k),
                "hook_expert_out": (b, p, k, d)}[last]
    if ".hc_" in name:
        return {"hook_h_pre": (b, p, m), "hook_h_post": (b, p, m), "hook_h_res": (b, p, m, m)}[last]
    if ".attn." in name:
        return (b, h, p, p) if last == "hook_pattern" else (b, p, h, dh)
    if last == "hook_scale":
        return (b, p, 1)
    if last in ("hook_resid_pre", "hook_resid_mid", "hook_resid_post"):
        return resid
    return (b, p, d)  # embed, attn_out, mlp_out, normalized, readout


@pytest.mark.parametrize("kind", KINDS)
def test_every_hook_fires_with_its_documented_shape(kind):
    model = tiny_model(kind)
    tokens = model.to_tokens(["Alexander the Great", "the Milky Way is a galaxy"])
    logits, cache = model.run_with_cache(tokens)
    b, p = tokens.shape
    assert logits.shape == (b, p, model.cfg.vocab_size) and torch.isfinite(logits).all()
    assert set(cache.keys()) == set(model.hook_names())
    for name, act in cache.items():
        generic = re.sub(r"^blocks\.\d+\.", "blocks.{l}.", name)
        leaf = generic.split(".")[-1]
        assert f"`{generic}`" in HOOKS_DOC or (f"`{leaf}`" in HOOKS_DOC and generic.startswith("blocks.{l}.attn.")), name
        assert tuple(act.shape) == _expected_shape(name, model, b, p), name
    if model.engram_layers:
        for layer in model.engram_layers:
            gate = cache[f"blocks.{layer}.engram.hook_gate"]
            assert ((gate > 0) & (gate < 1)).all()
    else:
        assert not any(".engram." in n for n in cache)


def test_names_filter_and_run_with_hooks():
    model = tiny_model("engram")
    tokens = model.to_tokens("By the way")
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_gate"))
    assert sorted(cache.keys()) == [f"blocks.{l}.engram.hook_gate" for l in model.engram_layers]
    seen = []
    out = model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.hook_resid_post", lambda x, hook: seen.append(hook.name) or x * 0)])
    assert seen == ["blocks.0.hook_resid_post"]
    assert not torch.allclose(out, model(tokens))
    assert all(not hp.fwd_hooks for hp in model.hook_dict.values())  # hooks reset afterwards


def test_explicit_attention_path_equals_fused_kernel():
    model = tiny_model("moe")
    tokens = model.to_tokens("It was the best of times, it was the worst of times.")
    fused = model(tokens)
    explicit, _ = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-5)


def test_moe_sparse_dispatch_equals_dense_reference():
    model = tiny_model("moe")
    moe = next(b.mlp for b in model.blocks if isinstance(b.mlp, MoE))
    with torch.no_grad():
        moe.balance_bias.copy_(torch.randn(moe.n_experts) * 0.1)
        x = torch.randn(3, 7, model.cfg.d_model, dtype=torch.float64)
        got = moe.double()(x)
        scores = torch.sigmoid(x @ moe.router.T)
        chosen = torch.topk(scores + moe.balance_bias, moe.top_k, dim=-1).indices
        gate = torch.zeros_like(scores).scatter(-1, chosen, scores.gather(-1, chosen))
        gate = gate / gate.sum(-1, keepdim=True)
        every = torch.stack(
            [(F.silu(x @ moe.W_gate[e]) * (x @ moe.W_up[e])) @ moe.W_down[e] for e in range(moe.n_experts)], dim=-2
        )
        ref = (gate.unsqueeze(-1) * every).sum(-2) + moe.shared_experts(x)
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-5)  # router scores are float32 by design


def test_moe_balancing_bias_moves_toward_balance():
    model = tiny_model("moe").train()
    moe = next(b.mlp for b in model.blocks if isinstance(b.mlp, MoE))
    moe.gamma = 0.002
    torch.manual_seed(0)
    with torch.no_grad():
        moe.router[0] += 0.1  # expert 0 grabs every token at first
    imbalance = []  # coefficient of variation of the per-expert load
    with torch.no_grad():
        for _ in range(150):
            moe(torch.randn(8, 32, model.cfg.d_model) + 0.5)
            load = moe.load.clone()
            imbalance.append((load.std() / load.mean()).item())
            before = moe.balance_bias.clone()
            moe.update_balance()
            assert torch.equal(torch.sign(moe.balance_bias - before), torch.sign(load.mean() - load))
            assert moe.load.sum() == 0
    first, last = sum(imbalance[:10]) / 10, sum(imbalance[-20:]) / 20
    assert last < first / 3, (first, last)


def test_sinkhorn_is_doubly_stochastic():
    mat = sinkhorn_knopp(torch.rand(5, 4, 4) + 0.01, iters=50)
    torch.testing.assert_close(mat.sum(-1), torch.ones(5, 4))
    torch.testing.assert_close(mat.sum(-2), torch.ones(5, 4))


@pytest.mark.parametrize("kind", ["engram", "mhc"])
def test_suppressing_engram_equals_removing_it(kind):
    model = tiny_model(kind)
    tokens = model.to_tokens(["Alexander the Great", "By the way, the Princess of Wales"])
    full = model(tokens)
    with model.engram_suppressed():
        suppressed, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("engram.hook_out"))
    assert not torch.allclose(full, suppressed)
    assert all((v == 0).all() for v in cache.values())
    stripped = copy.deepcopy(model)
    for block in stripped.blocks:
        block.engram = None
    torch.testing.assert_close(suppressed, stripped(tokens))
    torch.testing.assert_close(model(tokens), full)  # the context restores the model


def test_suppress_one_layer_and_mean_replacement():
    model = tiny_model("engram")
    tokens = model.to_tokens("the Milky Way")
    l0, l1 = model.engram_layers
    with model.engram_suppressed(layers=[l0]):
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("engram.hook_out"))
    assert (cache[f"blocks.{l0}.engram.hook_out"] == 0).all() and (cache[f"blocks.{l1}.engram.hook_out"] != 0).any()
    mean = torch.randn(model.cfg.d_model)
    with model.engram_suppressed(replacement={l0: mean, l1: mean}):
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("engram.hook_out"))
    for value in cache.values():
        torch.testing.assert_close(value, mean.expand_as(value))
    with pytest.raises(EngramInterpError, match="no Engram"):
        with tiny_model("moe").engram_suppressed():
            pass


def test_engram_null_sends_every_index_to_row_zero():
    model = tiny_model("engram-null")
    _, cache = model.run_with_cache("Alexander the Great", names_filter=lambda n: n.endswith("hook_hash_ids"))
    assert all((v == 0).all() for v in cache.values())


def test_lens_at_last_layer_equals_logits():
    for kind in ("moe", "mhc"):
        model = tiny_model(kind)
        tokens = model.to_tokens("The capital of France is Paris.")
        logits, cache = model.run_with_cache(tokens)
        last = cache[f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"]
        torch.testing.assert_close(model.lens_logits(last), logits)


def test_text_in():
    model = tiny_model("engram")
    tokens = model.to_tokens(["Paris", "The capital of France"])
    assert tokens.shape[0] == 2 and tokens[0, 0].item() == model.cfg.bos_token_id
    assert tokens[0, -1].item() == model.cfg.engram.pad_id  # right-padded
    strs = model.to_str_tokens("The capital of France")
    assert strs[0] == "<|bos|>" and "".join(strs[1:]) == "The capital of France"
    torch.testing.assert_close(model("The capital of France"), model(model.to_tokens("The capital of France")))
    with pytest.raises(EngramInterpError, match="empty"):
        model.to_tokens("", prepend_bos=False)
    with pytest.raises(EngramInterpError, match="at most"):
        model.to_tokens("word " * 1000)


def test_loss_is_mean_next_token_cross_entropy():
    model = tiny_model("mhc")
    tokens = model.to_tokens("Once upon a time there lived a fox who loved grapes")
    logits, loss = model(tokens, return_type="both")
    ref = F.cross_entropy(logits[0, :-1].double(), tokens[0, 1:])
    assert abs(loss.item() - ref.item()) < 1e-5
