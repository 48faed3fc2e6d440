"""run_with_cache returns TransformerLens's ActivationCache on every backend (issue 23 item 1): its
methods agree with our own LogitLens and attribution, and on a tiny Llama with TL's own TransformerBridge."""

import os

import pytest
import torch
from transformer_lens.ActivationCache import ActivationCache

from engram_interp.analysis.attribution import attribute_ids
from engram_interp.analysis.logit_lens import logit_lens_tokens
from engram_interp.backends.huggingface import load_hf
from engram_interp.backends.testing import tiny_llama_folder
from engram_interp.errors import EngramInterpError
from engram_interp.testing import tiny_model
from engram_interp.tl.cache import MissingHookError

TEXT = "the cat sat on the mat, hello world"


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return load_hf(tiny_llama_folder(tmp_path_factory.mktemp("llama") / "m"), device="cpu")


@pytest.fixture(scope="module", params=["engram", "llama"])
def model(request, llama):
    return tiny_model("engram") if request.param == "engram" else llama


def _run(model, text=TEXT):
    tokens = model.to_tokens(text)
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens)
    return tokens, logits, cache


def _dla_name(label: str) -> str:  # TL label -> our attribution's component name
    if label == "embed":
        return "embed"
    layer, part = label.split("_", 1)
    return f"L{layer}." + {"attn_out": "attn", "mlp_out": "mlp", "engram": "engram"}[part]


def test_cache_is_tl_class_and_keeps_dict_access(model):
    _, _, cache = _run(model)
    assert isinstance(cache, ActivationCache)
    assert "blocks.0.hook_resid_pre" in cache and "no.such.hook" not in cache
    assert torch.equal(cache["resid_pre", 1], cache["blocks.1.hook_resid_pre"])
    assert torch.equal(cache["resid_post", -1], cache[model.layer_point_names()[-1]])
    if model.engram_layers:
        l = model.engram_layers[0]
        assert cache[f"blocks.{l}.engram.hook_gate"].shape[:2] == cache["hook_embed"].shape[:2]
    stacked = cache.stack_activation("resid_pre")
    assert stacked.shape[0] == model.cfg.n_layers and torch.equal(stacked[1], cache["blocks.1.hook_resid_pre"])


def test_decompose_resid_sums_to_final_stream_with_engram_component(model):
    _, _, cache = _run(model)
    stack, labels = cache.decompose_resid(return_labels=True)
    final = cache["resid_post", -1]
    assert (stack.sum(0) - final).abs().max() <= 1e-5 * final.abs().max()
    engram = [f"{l}_engram" for l in model.engram_layers]
    assert [lab for lab in labels if lab.endswith("_engram")] == engram
    assert labels[0] == "embed" and len(labels) == 1 + 2 * model.cfg.n_layers + len(engram)
    if model.engram_layers:  # without the Engram output the parts would not add up
        keep = [i for i, lab in enumerate(labels) if not lab.endswith("_engram")]
        assert (stack[keep].sum(0) - final).abs().max() > 1e-3


def test_accumulated_resid_lens_equals_our_logit_lens(model):
    _, _, cache = _run(model)
    normed = cache.accumulated_resid(apply_ln=True)  # [n_layers + 1, 1, pos, d]
    logits = normed[:, 0] @ model.W_U + model.b_U
    ent = -(logits.log_softmax(-1) * logits.softmax(-1)).sum(-1)
    ours = logit_lens_tokens(model, TEXT, top_k=1)
    assert (ent - torch.tensor(ours.entropy)).abs().max() <= 1e-5
    top = logits.softmax(-1).max(-1).values
    assert (top - torch.tensor([[p for ((_, p),) in row] for row in ours.top_tokens])).abs().max() <= 1e-5


def test_logit_attrs_equal_our_attribution(model):
    tokens, logits, cache = _run(model)
    target, contrast = 17, 40
    stack, labels = cache.decompose_resid(pos_slice=-1, return_labels=True)
    for other in (None, contrast):
        attrs = cache.logit_attrs(stack, torch.tensor([target]), incorrect_tokens=None if other is None else
                                  torch.tensor([other]), pos_slice=-1)[:, 0]
        comps, logit, _, remainder = attribute_ids(model, tokens, target, other)
        ours = {c.name: c.contribution for c in comps}
        assert set(ours) == {_dla_name(lab) for lab in labels}
        theirs = {_dla_name(lab): float(a) for lab, a in zip(labels, attrs.detach())}
        assert max(abs(ours[k] - theirs[k]) for k in ours) <= 1e-5
        assert abs(sum(theirs.values()) + remainder - logit) <= 1e-4


def test_full_resid_decomposition_from_hook_z(model):
    _, _, cache = _run(model)
    full, labels = cache.get_full_resid_decomposition(expand_neurons=False, return_labels=True)
    final = cache["resid_post", -1]
    assert (full.sum(0) - final).abs().max() <= 1e-5 * final.abs().max()
    n_heads = model.cfg.n_heads
    assert labels[:n_heads] == [f"L0H{h}" for h in range(n_heads)] and labels[-1] == "bias"
    heads = cache["blocks.0.attn.hook_result"].sum(-2)  # heads add up to attn_out (no o_proj bias here)
    assert (heads - cache["blocks.0.hook_attn_out"]).abs().max() <= 1e-5
    with pytest.raises(MissingHookError, match=r"mlp\.hook_post"):
        cache.get_full_resid_decomposition()


def test_missing_hook_is_one_clear_error(llama):
    _, _, cache = _run(llama)
    with pytest.raises(MissingHookError, match=r"no hook 'blocks\.0\.hook_resid_mid'"):
        cache.accumulated_resid(incl_mid=True)
    with pytest.raises(KeyError):  # TL code catching KeyError keeps working
        cache["blocks.0.hook_resid_mid"]
    with pytest.raises(EngramInterpError, match=r"accumulated_resid\(apply_ln=True\)"):
        cache.logit_lens()
    tokens = llama.to_tokens(TEXT)
    _, partial = llama.run_with_cache(tokens, names_filter=lambda n: n.endswith("resid_pre"))
    with pytest.raises(MissingHookError, match="not cached in this run"):
        partial.decompose_resid()


def test_multistream_lens_works_and_decomposition_refused():
    model = tiny_model("mhc")
    tokens = model.to_tokens(TEXT)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
        normed = cache.accumulated_resid(apply_ln=True)
        direct = torch.stack([model.lens_logits(cache[n]) for n in model.layer_point_names()])
    assert (normed @ model.W_U - direct).abs().max() <= 1e-5
    with pytest.raises(EngramInterpError, match="stream"):
        cache.decompose_resid()


@pytest.mark.slow
def test_equals_transformer_bridge_on_tiny_llama(tmp_path):
    """TL 4.3's TransformerBridge on the same folder: lens (unprocessed) and DLA (fold_ln only) agree."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    from transformer_lens.model_bridge import TransformerBridge

    folder = tiny_llama_folder(tmp_path / "m")
    ours = load_hf(folder, device="cpu")
    bridge = TransformerBridge.boot_transformers(str(folder), device="cpu")
    assert torch.equal(bridge.to_tokens(TEXT), ours.to_tokens(TEXT))
    with torch.no_grad():
        _, theirs = bridge.run_with_cache(TEXT)
        _, mine = ours.run_with_cache(TEXT)
        assert (theirs.accumulated_resid(apply_ln=True) - mine.accumulated_resid(apply_ln=True)).abs().max() <= 1e-5
        bridge.enable_compatibility_mode(disable_warnings=True, center_writing_weights=False, center_unembed=False)
        _, theirs = bridge.run_with_cache(TEXT)
        s_t, l_t = theirs.decompose_resid(pos_slice=-1, return_labels=True)
        s_m, l_m = mine.decompose_resid(pos_slice=-1, return_labels=True)
        assert l_t == l_m
        target = torch.tensor([17])
        diff = theirs.logit_attrs(s_t, target, pos_slice=-1) - mine.logit_attrs(s_m, target, pos_slice=-1)
        assert diff.abs().max() <= 1e-5
        h_t = theirs.stack_head_results(pos_slice=-1)
        h_m = mine.stack_head_results(pos_slice=-1)
        assert (h_t - h_m).abs().max() <= 1e-5


def test_qwen4_exp_heads_at_its_softmax_layers(tmp_path):
    """Qwen4-Exp: hook_z only where a layer has softmax attention; its heads add up to attn_out there."""
    from engram_interp.backends.testing import tiny_qwen4_exp_folder

    model = load_hf(tiny_qwen4_exp_folder(tmp_path / "q"), device="cpu")
    with torch.no_grad():
        _, cache = model.run_with_cache(model.to_tokens(TEXT))
        z = [n for n in cache.keys() if n.endswith("attn.hook_z")]
        assert z == ["blocks.3.attn.hook_z"]  # layers 0-2 are GatedDeltaNet
        heads = torch.einsum("bphd,hdm->bpm", cache[z[0]], model.attn_output_weight(3))
        assert (heads - cache["blocks.3.hook_attn_out"]).abs().max() <= 1e-5
        normed = cache.accumulated_resid(apply_ln=True)
        direct = torch.stack([model.lens_logits(cache[n]) for n in model.layer_point_names()])
        assert (normed @ model.W_U - direct).abs().max() <= 1e-4
    with pytest.raises(EngramInterpError, match="softmax attention"):
        model.attn_output_weight(0)
