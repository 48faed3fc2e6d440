"""DLA and patching on the Hugging Face backend (tiny random folders, no downloads): the sum rule
against Hugging Face's own logits, the full-patch identity, and one-line refusals where the backend
cannot give an exact answer."""

from __future__ import annotations

import pytest
import torch

import engram_interp as ei
from engram_interp.analysis.attribution import direct_logit_attribution
from engram_interp.analysis.patching import full_patch_hooks, patch_logits, patching, prepare_patching
from engram_interp.errors import EngramInterpError

pytest.importorskip("transformers")
from engram_interp.backends.testing import tiny_llama_folder, tiny_qwen4_exp_folder  # noqa: E402

CLEAN, CORRUPT = "The capital of France is", "The fox of France is"
TARGET, CONTRAST = " the", " of"


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return ei.load(tiny_llama_folder(tmp_path_factory.mktemp("hf") / "llama"), device="cpu").requires_grad_(False)


@pytest.fixture(scope="module")
def qwen4(tmp_path_factory):
    return ei.load(tiny_qwen4_exp_folder(tmp_path_factory.mktemp("hf") / "qwen4"), device="cpu").requires_grad_(False)


def test_llama_sum_rule_and_full_patch(llama):
    a = direct_logit_attribution(llama, CLEAN, TARGET, CONTRAST)
    logits = llama(llama.to_tokens(CLEAN))[0, -1].double()
    t, c = llama.encode(TARGET)[0], llama.encode(CONTRAST)[0]
    assert a.logit == pytest.approx(float(logits[t] - logits[c]), abs=1e-6)
    assert a.total() == pytest.approx(a.logit, abs=1e-4) and abs(a.remainder) < 1e-4  # bias-free head
    assert [x.name for x in a.components][:3] == ["embed", "L0.attn", "L0.mlp"]
    setup = prepare_patching(llama, CLEAN, CORRUPT, TARGET, CONTRAST)
    assert torch.equal(patch_logits(llama, setup, full_patch_hooks(llama)), llama(setup.clean_tokens))


def test_qwen4_exp_refuses_dla(qwen4):
    with pytest.raises(EngramInterpError, match="stream-mixing coefficients"):
        direct_logit_attribution(qwen4, CLEAN, TARGET, CONTRAST)


@pytest.mark.slow
def test_qwen4_exp_patches_what_it_can(qwen4):
    r = patching(qwen4, CLEAN, CORRUPT, TARGET, CONTRAST)
    assert r.full_patch == pytest.approx(1.0, abs=1e-6)
    bars = {b.kind: b for b in r.components}
    assert bars["engram"].layers == list(qwen4.info.engram_layers) and not bars["engram"].note
    assert bars["gate"].layers == [] and "read-only" in bars["gate"].note
