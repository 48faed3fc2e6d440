"""MoE baselines from other codebases (Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE, DeepSeek-V3 as transformers 5
ships them) open behind the one interface with the routing hooks our own MoE layers have
(docs/HOOKS.md): checked against Hugging Face's own forward and its ``output_router_logits``."""

from __future__ import annotations

import json

import pytest
import torch

import engram_interp as ei
from engram_interp.backends.testing import MOE_FAMILIES, tiny_moe_folder
from engram_interp.cli import main as cli

TEXT = "the cat sat on the mat, and the dog ran."


@pytest.fixture(scope="module", params=sorted(MOE_FAMILIES))
def family(request, tmp_path_factory):
    folder = tiny_moe_folder(request.param, tmp_path_factory.mktemp("moe") / request.param)
    return request.param, folder, ei.load(folder, device="cpu")


def test_logits_equal_hf_and_routing_hooks_equal_its_router_logits(family):
    name, _, model = family
    tokens = model.to_tokens(TEXT)
    ref = model.hf(tokens, output_router_logits=True)
    logits, cache = model.run_with_cache(tokens)
    assert torch.equal(logits, ref.logits)
    assert model.info.moe_layers and len(ref.router_logits) == len(model.info.moe_layers)
    b, p = tokens.shape
    for l, router_logits in zip(model.info.moe_layers, ref.router_logits):
        facts = model.info.extra["moe"][l]
        scores = cache[f"blocks.{l}.mlp.hook_router_scores"]
        expected = router_logits.float().sigmoid() if facts["router"] == "sigmoid" else router_logits.float().softmax(-1)
        torch.testing.assert_close(scores, expected.reshape(b, p, -1), rtol=0, atol=1e-6)
        ids = cache[f"blocks.{l}.mlp.hook_expert_ids"]
        weights = cache[f"blocks.{l}.mlp.hook_expert_weights"]
        assert ids.shape == weights.shape == (b, p, facts["top_k"]) and ids.dtype == torch.int64
        if facts["router"] == "softmax":  # plain top-k of the probabilities
            top = expected.reshape(b, p, -1).topk(facts["top_k"], dim=-1)
            assert torch.equal(ids.sort(-1).values, top.indices.sort(-1).values)
            picked = expected.reshape(b, p, -1).gather(-1, ids)
            norm = getattr(model.hf.config, "norm_topk_prob", name == "mixtral")
            want = picked / picked.sum(-1, keepdim=True) if norm else picked
            torch.testing.assert_close(weights.float(), want, rtol=0, atol=1e-6)
        else:  # DeepSeek-V3: chosen within the best groups on sigmoid + bias, weights renormalised x scale
            assert torch.all(weights > 0)


def test_editing_the_expert_weights_changes_what_the_experts_add(family):
    name, _, model = family
    tokens = model.to_tokens(TEXT)
    l = model.info.moe_layers[-1]

    def zero(x, hook):
        return torch.zeros_like(x)

    _, plain = model.run_with_cache(tokens, names_filter=lambda n: n == f"blocks.{l}.hook_mlp_out")
    with model.hooks(fwd_hooks=[(f"blocks.{l}.mlp.hook_expert_weights", zero)]):
        _, cut = model.run_with_cache(tokens, names_filter=lambda n: n == f"blocks.{l}.hook_mlp_out")
    out, routed_off = plain[f"blocks.{l}.hook_mlp_out"], cut[f"blocks.{l}.hook_mlp_out"]
    assert not torch.allclose(out, routed_off)
    if not model.info.extra["moe"][l]["shared_experts"]:  # nothing but routed experts: the FFN adds 0
        assert torch.count_nonzero(routed_off) == 0


def test_info_lists_the_moe_layers_and_experts(family, capsys):
    name, folder, model = family
    assert cli(["info", str(folder), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    text = json.dumps(info)
    assert "moe" in text and '"experts": 4' in text and '"top_k": 2' in text
    assert sorted(int(k) for k in _find(info, "moe")) == list(model.info.moe_layers)


def _find(obj, key):
    if isinstance(obj, dict):
        if key in obj and isinstance(obj[key], dict):
            return obj[key]
        for v in obj.values():
            found = _find(v, key)
            if found is not None:
                return found
    return None


@pytest.mark.parametrize("key", ["kv_lora_rank", "n_routed_experts", "n_group"])
def test_deepseek_sizes_are_bounded_before_transformers_allocates(tmp_path, key):
    from engram_interp.errors import CheckpointError

    folder = tiny_moe_folder("deepseek_v3", tmp_path / "ds")
    cfg = json.loads((folder / "config.json").read_text())
    cfg[key] = 10**9
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=key):
        ei.load(folder, device="cpu")
