"""bf16 against fp32 (issue 24 item 1): the same checkpoint loaded with ``dtype="bfloat16"`` and with
``dtype="float32"`` gives each analysis within the tolerance stated here, on the bundled Engram
checkpoint and on tiny Hugging Face models. The accumulators work in float32/float64 whatever the
model's dtype, so what differs is only the model's own bf16 rounding (8 mantissa bits).

Stated tolerances (max over what each analysis reports):

* logit-lens: ``KL_TOL`` nats per layer point of the KL curve;
* cka: ``CKA_TOL`` per cell of the layer x layer CKA matrix;
* gates: ``GATE_TOL`` gate units per (position, branch) of the gate map;
* ablate: at most ``FLIP_TOL`` of the items change their 0/1 score (full and Engram-suppressed);
* attribute: ``DLA_TOL`` logits for the target-minus-contrast logit and every component.

Measured on the bundled Engram model (CPU): KL 0.0017 nats, CKA 5.6e-4, gates 0.017, DLA logit 0.0035
and components 0.0053; each tolerance is about 3x (or more) what was measured.
"""

from __future__ import annotations

import contextlib
import itertools
from pathlib import Path

import pytest
import torch

import engram_interp as ei

ROOT = Path(__file__).resolve().parents[1]
CKPT = ROOT / "checkpoints" / "engram.ckpt"
KL_TOL, CKA_TOL, GATE_TOL, FLIP_TOL, DLA_TOL = 0.01, 0.005, 0.05, 0.10, 0.05
TEXTS = ["The Roman Empire was ruled from Rome for centuries. Alexander the Great led his army to Persia, and the "
         "Princess of Wales visited New York in the spring.", "By the way, the Milky Way is a galaxy. The capital of "
         "France is Paris, and the river Thames runs through London."]
PROMPT, CONTRAST = "The capital of France is", " of"


def _pair(path):
    return tuple(ei.load(path, device="cpu", dtype=d).requires_grad_(False) for d in ("float32", "bfloat16"))


def _lens_and_cka(m32, m16) -> None:
    import numpy as np

    from engram_interp.analysis import logit_lens
    from engram_interp.analysis.cka_models import cka_analysis

    assert next(m16.parameters()).dtype == torch.bfloat16 and next(m32.parameters()).dtype == torch.float32
    lens = logit_lens({"fp32": m32, "bf16": m16}, TEXTS, max_tokens=None)
    assert max(abs(a - b) for a, b in zip(lens.models[0].kl, lens.models[1].kl)) < KL_TOL
    c32, c16 = (np.array(cka_analysis(m, None, TEXTS, n_boot=10).cka, dtype=float) for m in (m32, m16))
    assert np.isfinite(c16).all() and np.abs(c32 - c16).max() < CKA_TOL


def _attribute(m32, m16, target: str) -> None:
    from engram_interp.analysis.attribution import direct_logit_attribution

    a32, a16 = (direct_logit_attribution(m, PROMPT, target, CONTRAST) for m in (m32, m16))
    assert abs(a32.logit - a16.logit) < DLA_TOL
    assert [c.name for c in a32.components] == [c.name for c in a16.components]
    assert max(abs(x.contribution - y.contribution) for x, y in zip(a32.components, a16.components)) < DLA_TOL


def _gates_and_ablate(m32, m16, items) -> None:
    from engram_interp.analysis.ablation import score_items
    from engram_interp.analysis.gates import gate_map

    g32, g16 = gate_map(m32, TEXTS[0]), gate_map(m16, TEXTS[0])
    for layer in g32.layers:
        assert (torch.tensor(g32.gates[layer]) - torch.tensor(g16.gates[layer])).abs().max() < GATE_TOL
    for suppressed in (False, True):
        scores = []
        for m in (m32, m16):
            with m.engram_suppressed() if suppressed else contextlib.nullcontext():
                scores.append(score_items(m, items))
        assert float((scores[0] != scores[1]).double().mean()) <= FLIP_TOL


@pytest.mark.slow
@pytest.mark.skipif(not CKPT.is_file(), reason="bundled checkpoint missing")
def test_bundled_engram_bf16_within_stated_tolerances():
    from engram_interp.data.suite_files import read_suites

    m32, m16 = _pair(CKPT)
    _lens_and_cka(m32, m16)
    _attribute(m32, m16, " the")
    items = list(itertools.islice(read_suites(ROOT / "probes" / "facts_real.jsonl")["facts_real"], 40))
    _gates_and_ablate(m32, m16, items)


def test_tiny_llama_bf16_within_stated_tolerances(tmp_path):
    from engram_interp.backends.testing import tiny_llama_folder

    m32, m16 = _pair(tiny_llama_folder(tmp_path / "llama"))
    _lens_and_cka(m32, m16)
    _attribute(m32, m16, " the")


@pytest.mark.slow
def test_tiny_qwen4_exp_bf16_gates_and_ablation_within_stated_tolerances(tmp_path):
    from engram_interp.backends.testing import tiny_qwen4_exp_folder

    m32, m16 = _pair(tiny_qwen4_exp_folder(tmp_path / "qwen4"))
    items = []
    for i, p in enumerate(TEXTS + [PROMPT]):
        nxt = int(m32(m32.to_tokens(p))[0, -1].argmax())
        items.append({"id": str(i), "prompt": p, "answer": m32.decode([nxt]), "candidates": None})
    _gates_and_ablate(m32, m16, items)


def test_default_dtype_and_its_reason(tmp_path):
    from engram_interp.backends.precision import choose_dtype
    from engram_interp.backends.testing import llama_config

    bf16 = llama_config(dtype="bfloat16")
    assert choose_dtype(None, bf16, on_gpu=True) == (torch.bfloat16, "the checkpoint's own dtype (the default on a GPU)")
    dtype, why = choose_dtype(None, bf16, on_gpu=False)
    assert dtype == torch.float32 and "--dtype bfloat16 keeps it" in why
    assert choose_dtype(torch.float16, bf16, on_gpu=False)[0] == torch.float16
    from engram_interp.backends.testing import random_hf_model, save_hf_folder

    folder = save_hf_folder(random_hf_model(bf16).to(torch.bfloat16), tmp_path / "bf16")
    m = ei.load(folder, device="cpu")
    assert next(m.parameters()).dtype == torch.float32 and m.info.extra["dtype"] == "float32"
    assert "the checkpoint stores bfloat16" in m.info.extra["dtype_reason"]


def test_info_says_the_dtype_and_why(tmp_path, capsys):
    from engram_interp.backends.testing import tiny_llama_folder
    from engram_interp.cli import main

    folder = tiny_llama_folder(tmp_path / "llama")
    assert main(["info", str(folder)]) == 0
    assert "in float32: the default on the CPU (the checkpoint stores float32)" in capsys.readouterr().out
    assert main(["info", str(folder), "--dtype", "bfloat16"]) == 0
    assert "in bfloat16: asked for with --dtype" in capsys.readouterr().out
