"""Extra seeds are stored in bfloat16 (checkpoints/seeds/): analyses of a bfloat16 copy of a bundled
float32 checkpoint agree with the float32 original within the tolerances stated here (far below
the across-seed differences they are used for: ~0.1 nats of early-layer KL between arms)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
CKPT = ROOT / "checkpoints" / "engram.ckpt"
KL_TOL = 0.01  # nats, per layer point of the LogitLens curve
GATE_TOL = 0.005  # gate units, mean gate per Engram layer
TEXT = ("The Roman Empire was ruled from Rome for centuries. Alexander the Great led his army to Persia, "
        "and the Princess of Wales visited New York in the spring. By the way, the Milky Way is a galaxy.")


@pytest.mark.skipif(not CKPT.is_file(), reason="bundled checkpoint missing")
def test_bfloat16_copy_matches_float32(tmp_path):
    from engram_interp.analysis import logit_lens
    from engram_interp.analysis.gates import gate_map
    from engram_interp.checkpoint import load, save

    full = load(CKPT, device="cpu")
    save(load(CKPT, device="cpu").to(torch.bfloat16), tmp_path / "engram-bf16.ckpt")
    assert (tmp_path / "engram-bf16.ckpt").stat().st_size < 0.6 * CKPT.stat().st_size  # the point of bf16
    half = load(tmp_path / "engram-bf16.ckpt", device="cpu", dtype="float32")
    assert next(half.parameters()).dtype == torch.float32
    # the weights really differ (rounded to 8 mantissa bits) ...
    w, w16 = full.blocks[1].engram.memory.weight, half.blocks[1].engram.memory.weight
    assert not torch.equal(w, w16) and torch.equal(w.to(torch.bfloat16).float(), w16)
    # ... but the analyses agree within the stated tolerances
    res = logit_lens({"fp32": full, "bf16": half}, [TEXT], max_tokens=None)
    kl32, kl16 = res.models[0].kl, res.models[1].kl
    assert max(abs(a - b) for a, b in zip(kl32, kl16)) < KL_TOL
    g32, g16 = gate_map(full, TEXT), gate_map(half, TEXT)
    for layer in g32.layers:
        m32 = torch.tensor(g32.gates[layer]).mean()
        m16 = torch.tensor(g16.gates[layer]).mean()
        assert abs(float(m32 - m16)) < GATE_TOL
