"""The architectures opened through TransformerLens's TransformerBridge (backends/bridge.py): for each, a
tiny random model built from its config and saved with save_pretrained. Logits == Hugging Face's own
forward; our hook points add up as the residual stream does; LogitLens == a hand-written readout
(final norm + lm_head, Gemma's (1 + w) RMSNorm and final logit soft-capping) from a separately loaded
HF model's weights in float64; the CLI runs on the folder."""

from __future__ import annotations

import json

import pytest
import torch

import engram_interp as ei
from engram_interp.backends.bridge import BridgeModel
from engram_interp.backends.testing import BRIDGE_FAMILIES, tiny_bridge_folder

TEXT = "The capital of France is Paris. Alexander the Great was a king of Macedon."
D = torch.float64
# family -> (path of the final norm in the HF model, its eps field, "layer" | "rms" | "rms1p" (Gemma's 1 + w))
NORMS = {"gpt2": ("transformer.ln_f", "layer_norm_epsilon", "layer"),
         "gpt_neox": ("gpt_neox.final_layer_norm", "layer_norm_eps", "layer"),
         "gemma2": ("model.norm", "rms_norm_eps", "rms1p"), "gemma3_text": ("model.norm", "rms_norm_eps", "rms1p"),
         "phi3": ("model.norm", "rms_norm_eps", "rms"), "olmo2": ("model.norm", "rms_norm_eps", "rms")}


@pytest.fixture(scope="module", params=sorted(BRIDGE_FAMILIES))
def case(request, tmp_path_factory):
    folder = tiny_bridge_folder(request.param, tmp_path_factory.mktemp(request.param) / request.param)
    return request.param, folder, ei.load(folder, device="cpu")


def _plain_hf(folder):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=torch.float32,
                                                attn_implementation="eager").eval()


def _readout(family: str, hf, x: torch.Tensor) -> torch.Tensor:
    """Hand-written lens logits of stream ``x`` in float64 from ``hf``'s weights."""
    path, eps_field, kind = NORMS[family]
    norm = hf.get_submodule(path)
    eps, w = float(getattr(hf.config, eps_field)), norm.weight.detach().to(D)
    x = x.to(D)
    if kind == "layer":
        x = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + eps) * w
        x = x + norm.bias.detach().to(D)
    else:
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * ((1 + w) if kind == "rms1p" else w)
    head = hf.get_output_embeddings()
    logits = x @ head.weight.detach().to(D).T
    if getattr(head, "bias", None) is not None:
        logits = logits + head.bias.detach().to(D)
    cap = getattr(hf.config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


def test_opens_through_the_bridge_with_our_hook_names(case):
    family, _, model = case
    assert isinstance(model, BridgeModel) and model.info.n_layers == 3 and model.info.d_model == 32
    names = set(model.hook_names())
    assert {"hook_embed", "hook_readout"} <= names
    for l in range(3):
        assert {f"blocks.{l}.hook_{p}" for p in ("resid_pre", "attn_out", "mlp_out", "resid_post")} <= names


def test_bos_default_is_the_bridges_own(case):
    _, _, model = case
    assert torch.equal(model.to_tokens(TEXT), model.bridge.to_tokens(TEXT).to(torch.long))


def test_logits_equal_hf_forward(case):
    family, folder, model = case
    tokens = model.to_tokens(TEXT)
    with torch.no_grad():
        ref = _plain_hf(folder)(tokens).logits
        got = model(tokens)
    assert (got - ref).abs().max().item() <= 1e-5
    if family == "gemma3_text":  # soft-capping is on in this tiny config: the logits are bounded by it
        assert got.abs().max().item() < 30.0


def test_hooks_add_up_as_the_residual_stream(case):
    family, _, model = case
    _, cache = model.run_with_cache(model.to_tokens(TEXT))
    for l in range(3):
        pre, post = cache[f"blocks.{l}.hook_resid_pre"], cache[f"blocks.{l}.hook_resid_post"]
        parts = cache[f"blocks.{l}.hook_attn_out"] + cache[f"blocks.{l}.hook_mlp_out"]
        torch.testing.assert_close(post, pre + parts, atol=1e-5, rtol=1e-5)
        if l:
            assert torch.equal(pre, cache[f"blocks.{l - 1}.hook_resid_post"])
    assert torch.equal(cache["hook_readout"], cache["blocks.2.hook_resid_post"])


def test_tl_cache_decomposes_the_stream_and_applies_the_final_norm(case):
    _, _, model = case
    _, cache = model.run_with_cache(model.to_tokens(TEXT))
    dec, labels = cache.decompose_resid(return_labels=True)
    torch.testing.assert_close(dec.sum(0), cache["blocks.2.hook_resid_post"], atol=1e-5, rtol=1e-5)
    assert labels[-1] == "2_mlp_out"
    acc = cache.accumulated_resid(apply_ln=True)
    want = torch.stack([model.final_norm(cache[name]) for name in model.layer_point_names()])
    torch.testing.assert_close(acc, want, atol=1e-5, rtol=1e-5)


def test_attention_pattern_equals_hf_output_attentions(case):
    _, folder, model = case
    tokens = model.to_tokens(TEXT)
    _, cache = model.run_with_cache(tokens)
    with torch.no_grad():
        ref = _plain_hf(folder)(tokens, output_attentions=True).attentions
    for l in range(3):
        torch.testing.assert_close(cache[f"blocks.{l}.attn.hook_pattern"], ref[l], atol=1e-6, rtol=1e-5)


def test_a_hook_that_edits_a_point_changes_the_forward(case):
    family, folder, model = case
    tokens = model.to_tokens(TEXT)
    with torch.no_grad():
        clean, cache = model.run_with_cache(tokens)
        swapped = cache["blocks.0.hook_resid_post"]  # skip block 1: its input becomes block 0's input
        patched = model.run_with_hooks(tokens, fwd_hooks=[("blocks.1.hook_resid_post", lambda x, hook: swapped)])
    assert not torch.allclose(patched, clean)
    with torch.no_grad():  # with block 1's output replaced by its input, the rest of the model runs on it
        ref = model.run_with_hooks(tokens, fwd_hooks=[("blocks.1.hook_attn_out", lambda x, hook: torch.zeros_like(x)),
                                                      ("blocks.1.hook_mlp_out", lambda x, hook: torch.zeros_like(x))])
    torch.testing.assert_close(patched, ref, atol=1e-5, rtol=1e-5)


def test_logit_lens_equals_hand_written_readout_and_model_at_the_last_point(case):
    from engram_interp.analysis import logit_lens_tokens

    family, folder, model = case
    hf = _plain_hf(folder)
    tokens = model.to_tokens(TEXT)
    logits, cache = model.run_with_cache(tokens)
    for name in model.layer_point_names():
        got = torch.log_softmax(model.lens_logits(cache[name]).to(D), -1)
        want = torch.log_softmax(_readout(family, hf, cache[name]), -1)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got, torch.log_softmax(logits.to(D), -1), atol=1e-5, rtol=1e-5)
    res = logit_lens_tokens(model, TEXT)
    assert max(res.kl[-1]) < 1e-5 and max(res.kl[0]) > 1e-3  # the last point is the model's own output


def test_final_norm_frozen_at_its_own_input_is_the_norm_without_bias(case):
    _, _, model = case
    x = torch.randn(2, 5, 32)
    bias = getattr(model._norm, "bias", None)
    want = model.final_norm(x) - (bias if bias is not None else 0)
    torch.testing.assert_close(model.final_norm_frozen(x, x), want, atol=1e-5, rtol=1e-5)
    # linear in x at a fixed reference
    ref = torch.randn(2, 5, 32)
    a, b = torch.randn(2, 5, 32), torch.randn(2, 5, 32)
    torch.testing.assert_close(model.final_norm_frozen(a + b, ref),
                               model.final_norm_frozen(a, ref) + model.final_norm_frozen(b, ref), atol=1e-5, rtol=1e-5)


def test_cli_logit_lens_json_runs(case, capsys):
    from engram_interp.cli import main

    _, folder, model = case
    rc = main(["logit-lens", str(folder), "--text", TEXT, "--json"])
    out = capsys.readouterr().out
    assert rc == 0, out
    (row,) = json.loads(out)["models"]
    assert row["layers"] == list(range(model.info.n_layers + 1))
    assert row["kl"][-1] < 1e-5 and row["kl"][0] > row["kl"][-1]  # the last point is the model's own output


def test_a_device_map_over_disk_is_refused_in_one_line(tmp_path):
    pytest.importorskip("accelerate")
    from engram_interp.errors import CheckpointError

    folder = tiny_bridge_folder("phi3", tmp_path / "phi3")
    disk = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk", "model.layers.2": "disk",
            "model.norm": "disk", "model.rotary_emb": "cpu", "lm_head": "disk"}
    with pytest.raises(CheckpointError, match="not yet checked here under a device map"):
        ei.load(folder, device_map=disk, offload_folder=tmp_path / "offload")


@pytest.mark.parametrize("field,value", [("n_layer", 5), ("n_embd", 1 << 20)])
def test_a_gpt2_config_that_disagrees_with_its_weights_is_one_line(tmp_path, field, value):
    from engram_interp.errors import CheckpointError

    folder = tiny_bridge_folder("gpt2", tmp_path / "gpt2")
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, field: value}))
    with pytest.raises(CheckpointError) as err:
        ei.load(folder, device="cpu")
    msg = str(err.value)
    assert "\n" not in msg and ("declares 5 layers but the weights hold 3" in msg if field == "n_layer" else field in msg), msg
