"""The model interface (engram_interp.interface): thread isolation of interventions and hooks, token display."""

from __future__ import annotations

import threading

import torch

from engram_interp.interface import InterpModel, ModelInfo
from engram_interp.testing import tiny_model


def _engram_model():
    return tiny_model("engram", seed=3)


def test_engram_transformer_implements_the_interface():
    model = _engram_model()
    assert isinstance(model, InterpModel)
    info = model.info
    assert isinstance(info, ModelInfo)
    assert info.n_layers == model.cfg.n_layers and info.engram_layers == tuple(model.cfg.engram.layer_ids)
    assert model.layer_point_names()[-1] == f"blocks.{info.n_layers - 1}.hook_resid_post"
    tokens = model.to_tokens("the cat sat on the mat")
    logits, cache = model.run_with_cache(tokens)
    last = cache[model.layer_point_names()[-1]]
    torch.testing.assert_close(model.lens_logits(last), logits)
    # the frozen final norm at the stream itself is the final norm
    r = model.readout(last)
    torch.testing.assert_close(model.final_norm_frozen(r, r), model.final_norm(r))


def _race(model, tokens, reference, suppressed_reference, n=30):
    """One thread ablates in a loop while another runs plain forwards and caches; returns the worst errors."""
    errors = {"plain": 0.0, "cache": 0.0, "ablated": 0.0}
    stop = threading.Event()
    other = tokens.flip(1)
    other_logits = model(other).detach()

    def ablating():
        while not stop.is_set():
            with model.engram_suppressed():
                out = model(tokens)
                errors["ablated"] = max(errors["ablated"], (out - suppressed_reference).abs().max().item())

    def plain():
        for _ in range(n):
            errors["plain"] = max(errors["plain"], (model(tokens) - reference).abs().max().item())
            logits, cache = model.run_with_cache(other, names_filter=lambda name: name == "hook_embed")
            errors["cache"] = max(errors["cache"], (logits - other_logits).abs().max().item())
            assert cache["hook_embed"].shape[1] == other.shape[1]

    t = threading.Thread(target=ablating)
    t.start()
    try:
        plain()
    finally:
        stop.set()
        t.join()
    return errors


def test_a_model_shared_by_threads_never_mixes_suppression_or_hooks():
    model = _engram_model()
    torch.set_num_threads(1)
    tokens = model.to_tokens(["the cat sat on the mat and then the dog sat on the log again"] * 4)
    with torch.no_grad():
        reference = model(tokens)
        with model.engram_suppressed():
            suppressed = model(tokens)
        assert (reference - suppressed).abs().max() > 1e-3  # the ablation does change the logits
        errors = _race(model, tokens, reference, suppressed)
    assert errors == {"plain": 0.0, "cache": 0.0, "ablated": 0.0}


def test_incomplete_utf8_tokens_are_shown_as_bytes():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    from engram_interp.tokenizer import display_token

    tok = Tokenizer(models.BPE(vocab={"Ġ": 0, "a": 1, "â": 2, "Ģ": 3}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    assert display_token(tok, 1) == "a"
    assert display_token(tok, 0) == " "
    assert display_token(tok, 2) == "<0xE2>"  # the lead byte of a 3-byte sequence, alone
