"""Activation patching: the full-patch identity (dense, MoE, Engram, mHC), a grid cell against a manual
patched forward, bad input, and the CLI."""

from __future__ import annotations

import json

import pytest
import torch

from engram_interp.analysis.patching import (
    component_patching, full_patch_hooks, patch_logits, prepare_patching, residual_patching, restored_fraction,
)
from engram_interp.cli import main
from engram_interp.errors import EngramInterpError
from engram_interp.testing import tiny_model

CLEAN, CORRUPT = "The capital of France is", "The fox of France is"  # 8 tokens each (BOS included)
TARGET, CONTRAST = " the", " of"


def _model(kind: str):
    model = tiny_model(kind).double().requires_grad_(False)
    with torch.no_grad():
        model.unembed.W_U.mul_(40)
    return model


@pytest.mark.parametrize("kind", ["dense", "moe", "engram", "mhc"])
def test_full_patch_restores_the_clean_logits_exactly(kind):
    model = _model(kind)
    setup = prepare_patching(model, CLEAN, CORRUPT, TARGET, CONTRAST)
    clean = model(setup.clean_tokens)
    assert (clean - model(setup.corrupt_tokens)).abs().max() > 1e-2  # the prompts do differ
    patched = patch_logits(model, setup, full_patch_hooks(model))
    assert torch.equal(patched, clean)
    first = patch_logits(model, setup, [model.layer_point_names()[0]])
    if model.info.engram_layers:  # the Engram lookup reads the corrupted token ids, not the stream
        assert (first - clean).abs().max() > 1e-3
    else:
        assert torch.equal(first, clean)


@pytest.mark.parametrize("kind", ["dense", "mhc"])
def test_grid_cell_matches_a_manual_patched_forward(kind):
    model = _model(kind)
    setup = prepare_patching(model, CLEAN, CORRUPT, TARGET, CONTRAST)
    layer, pos = 2, 3  # the token that differs (' capital' vs ' fox'), halfway down
    with torch.no_grad():  # manual forward through the blocks with the stream entering block 2 patched
        def stream(tokens):
            x = model.embed(tokens)
            if model.cfg.n_branches > 1:
                x = x.unsqueeze(2).expand(-1, -1, model.cfg.n_branches, -1)
            return x
        xs, xc = stream(setup.corrupt_tokens), stream(setup.clean_tokens)
        canonical = model.compression_table.__getitem__
        for l, block in enumerate(model.blocks):
            if l == layer:
                xs = xs.clone()
                xs[0, pos] = xc[0, pos]
            xs, xc = block(xs, canonical(setup.corrupt_tokens)), block(xc, canonical(setup.clean_tokens))
        logits = model.unembed(model.ln_final(model.readout(xs)))
    expected = float(setup.restored(setup.metric(logits))[0])
    if kind == "mhc":  # one cell (4-D streams); the whole grid on the dense model
        assert restored_fraction(model, setup, [f"blocks.{layer}.hook_resid_pre"], [pos]) == pytest.approx(expected, abs=1e-9)
        return
    grid = residual_patching(model, setup)
    assert len(grid.restored) == model.info.n_layers + 1 and len(grid.restored[0]) == setup.clean_tokens.shape[1]
    assert grid.restored[layer][pos] == pytest.approx(expected, abs=1e-9)
    last = model.info.n_layers  # final stream: only the last position reaches the last logits
    assert grid.restored[last][-1] == pytest.approx(1.0, abs=1e-9)
    assert all(abs(v) < 1e-9 for v in grid.restored[last][:-1])
    assert all(abs(v) < 1e-9 for v in grid.restored[0][:3])  # tokens that are equal in both prompts


def test_component_bars():
    model = _model("engram")
    setup = prepare_patching(model, CLEAN, CORRUPT, TARGET, CONTRAST)
    bars = component_patching(model, setup, "engram")
    assert bars.layers == [1, 2]
    for l, value in zip(bars.layers, bars.restored):
        one = patch_logits(model, setup, [f"blocks.{l}.engram.hook_out"])
        assert value == pytest.approx(float(setup.restored(setup.metric(one))[0]), abs=1e-9)
    assert component_patching(_model("dense"), prepare_patching(_model("dense"), CLEAN, CORRUPT, TARGET), "gate").layers == []
    with pytest.raises(EngramInterpError, match="unknown component"):
        component_patching(model, setup, "ffn")


def test_bad_input_is_one_line():
    model = _model("dense")
    with pytest.raises(EngramInterpError, match="equal length"):
        prepare_patching(model, CLEAN, "The capital of Italy is", TARGET)
    with pytest.raises(EngramInterpError, match="3 tokens"):
        prepare_patching(model, CLEAN, CORRUPT, " Paris")
    with pytest.raises(EngramInterpError, match="nothing to restore"):
        prepare_patching(model, CLEAN, CLEAN, TARGET, CONTRAST)
    with pytest.raises(EngramInterpError, match="empty"):
        prepare_patching(model, "", CORRUPT, TARGET)


def test_cli_patch(tiny_ckpts, capsys):
    rc = main(["patch", str(tiny_ckpts["engram"]), "--clean", CLEAN, "--corrupt", CORRUPT, "--target", TARGET,
               "--contrast", CONTRAST, "--json", "--device", "cpu"])
    assert rc == 0
    d = json.loads(capsys.readouterr().out)
    assert d["full_patch"] == pytest.approx(1.0, abs=1e-4)
    assert len(d["residual"]["restored"]) == 5 and {b["kind"] for b in d["components"]} == {"attn", "mlp", "engram", "gate"}
    assert main(["patch", str(tiny_ckpts["engram"]), "--clean", CLEAN, "--corrupt", "The capital of Italy is",
                 "--target", TARGET, "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "equal length" in err[0]
