"""LogitLens: KL >= 0, ~0 at the last layer, equals a hand-written final-norm + unembed reference."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from engram_interp.analysis import LogitLensAccumulator, lens_kl_batch, logit_lens, logit_lens_tokens
from engram_interp.analysis.common import layer_hook_names, token_batches
from engram_interp.testing import tiny_model

TEXTS = ["Alexander the Great was a king of Macedon. The Milky Way is a galaxy.",
         "By the way, the Princess of Wales visited London.", "The capital of France is Paris."]


def _manual_kl(model, tokens, mask):
    """Reference by hand: RMSNorm with recomputed statistics, weight, W_U; float64 throughout."""
    names = layer_hook_names(model)
    logits, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
    log_p = F.log_softmax(logits[mask].double(), -1)
    w = model.ln_final.w.double()
    W_U = model.unembed.W_U.double()
    out = []
    for n in names:
        h = cache[n][mask].double()  # single branch: [n, d]
        normed = h / torch.sqrt(h.pow(2).mean(-1, keepdim=True) + model.ln_final.eps) * w
        log_q = F.log_softmax(normed @ W_U, -1)
        out.append((log_p.exp() * (log_p - log_q)).sum(-1))
    return torch.stack(out)


def test_lens_equals_manual_reference_single_branch():
    model = tiny_model("engram")
    batch = next(token_batches(model, TEXTS, batch_size=3))
    kl, ent = lens_kl_batch(model, batch.tokens, batch.mask, chunk=7)  # chunking across rows
    ref = _manual_kl(model, batch.tokens, batch.mask)
    torch.testing.assert_close(kl.double(), ref, atol=2e-5, rtol=1e-4)
    assert (kl >= -1e-6).all()
    assert kl[-1].abs().max() < 1e-4
    assert (ent > 0).all()


def test_curves_for_several_models_including_mhc():
    models = {k: tiny_model(k, seed=i) for i, k in enumerate(["engram", "moe", "mhc", "dense"])}
    res = logit_lens(models, TEXTS, batch_size=2)
    for m in res.models:
        assert len(m.kl) == len(m.layers) == 5
        assert min(m.kl) >= -1e-6
        assert abs(m.last_kl) < 1e-4
        assert m.n_tokens == res.models[0].n_tokens > 0
    d = res.to_dict()
    assert [m["name"] for m in d["models"]] == list(models)


def test_max_tokens_and_accumulator_merge():
    model = tiny_model("engram")
    r = logit_lens(model, TEXTS, max_tokens=10)
    assert r.models[0].n_tokens == 10
    a, b = LogitLensAccumulator(3), LogitLensAccumulator(3)
    x = torch.rand(3, 10)
    a.update(x[:, :4], x[:, :4])
    b.update(x[:, 4:], x[:, 4:])
    torch.testing.assert_close(a.merge(b).result()["kl"], x.double().mean(1))


def test_per_token_view():
    model = tiny_model("mhc")
    t = logit_lens_tokens(model, "The capital of France is Paris", top_k=3)
    assert len(t.kl) == 5 and len(t.kl[0]) == len(t.tokens)
    assert len(t.top_tokens[2][1]) == 3
    assert max(abs(v) for v in t.kl[-1]) < 1e-4
