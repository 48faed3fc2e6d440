"""CKA math against an independent float64 full-Gram unbiased HSIC (Song et al. 2012, eq. 5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engram_interp.analysis.cka import CKAAccumulator, cka_argmax, minibatch_cka, soft_alignment


def _hsic_song(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased HSIC, trace form, float64 numpy, no centring tricks (independent of the library)."""
    n = x.shape[0]
    k = x @ x.T
    l = y @ y.T
    np.fill_diagonal(k, 0.0)
    np.fill_diagonal(l, 0.0)
    one = np.ones(n)
    term1 = np.trace(k @ l)
    term2 = (one @ k @ one) * (one @ l @ one) / ((n - 1) * (n - 2))
    term3 = 2.0 / (n - 2) * (one @ k @ l @ one)
    return (term1 + term2 - term3) / (n * (n - 3))


def _reference_cka(acts_a, acts_b, batch_size):
    """Sum Song-HSIC over consecutive minibatches, then normalise (float64, numpy)."""
    a = [t.double().numpy() for t in acts_a]
    b = [t.double().numpy() for t in acts_b]
    n = a[0].shape[0]
    s = np.zeros((len(a), len(b)))
    sa = np.zeros(len(a))
    sb = np.zeros(len(b))
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        if stop - start <= 3:
            break
        for i, x in enumerate(a):
            sa[i] += _hsic_song(x[start:stop], x[start:stop])
            for j, y in enumerate(b):
                s[i, j] += _hsic_song(x[start:stop], y[start:stop])
        for j, y in enumerate(b):
            sb[j] += _hsic_song(y[start:stop], y[start:stop])
    return s / np.sqrt(np.outer(sa, sb))


def _layers(n=200, d=(16, 24, 32), seed=0, shift=3.0):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, 8, generator=g)
    out = []
    for i, di in enumerate(d):
        w = torch.randn(8, di, generator=g)
        # large common offset + a rogue dimension: mean-centring must keep float32 exact enough
        x = base @ w + (i + 1) * 0.5 * torch.randn(n, di, generator=g) + shift
        out.append(x.float())
    return out


@pytest.mark.parametrize("batch_size", [37, 64, 200])
def test_matches_float64_reference(batch_size):
    a = _layers(seed=1)
    b = _layers(d=(8, 40), seed=2) + [a[0].clone()]
    ours = minibatch_cka(a, b, batch_size).numpy()
    ref = _reference_cka(a, b, batch_size)
    np.testing.assert_allclose(ours, ref, atol=1e-6, rtol=0)


def test_self_cka_unit_diagonal_and_symmetric():
    a = _layers(seed=3)
    m = minibatch_cka(a, None, 50)
    torch.testing.assert_close(torch.diagonal(m), torch.ones(len(a), dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(m, m.T, atol=1e-12, rtol=0)


def test_invariances():
    a = _layers(seed=4, d=(20, 20))
    q, _ = torch.linalg.qr(torch.randn(20, 20, generator=torch.Generator().manual_seed(5), dtype=torch.float64))
    b = [(a[0].double() @ q).float(), a[1] * 7.5]
    m = minibatch_cka(a, b, 64)
    assert abs(m[0, 0].item() - 1.0) < 1e-5  # orthogonal transform
    assert abs(m[1, 1].item() - 1.0) < 1e-5  # isotropic scaling
    torch.testing.assert_close(m[0, 1], minibatch_cka([a[0]], [a[1]], 64)[0, 0])


def test_unrelated_data_near_zero_and_can_be_negative():
    g = torch.Generator().manual_seed(6)
    vals = []
    for _ in range(20):
        x = torch.randn(256, 512, generator=g)
        y = torch.randn(256, 512, generator=g)
        vals.append(minibatch_cka([x], [y], 64).item())
    vals = np.array(vals)
    assert np.abs(vals).max() < 0.05
    assert (vals < 0).any()  # unbiased estimator: no clamp at 0


def test_shuffle_changes_batches_not_full_batch_value():
    a = _layers(seed=7)
    m1 = minibatch_cka(a, None, 1000, shuffle=True, seed=1)
    m2 = minibatch_cka(a, None, 1000, shuffle=False)
    torch.testing.assert_close(m1, m2, atol=2e-7, rtol=0)  # float32 Gram rounding (each ~1e-7 from float64)


def test_accumulator_merge_equals_single_and_bootstrap_contains_estimate():
    a = _layers(n=400, seed=8)
    b = _layers(n=400, d=(12,), seed=9)
    full = CKAAccumulator(3, 1, n_boot=100)
    parts = [CKAAccumulator(3, 1, n_boot=100), CKAAccumulator(3, 1, n_boot=100)]
    for i, start in enumerate(range(0, 400, 50)):
        xa = [t[start:start + 50] for t in a]
        xb = torch.stack([t[start:start + 50] for t in b])
        full.update(xa, xb)
        parts[i % 2].update(xa, xb, index=i)
    merged = parts[0].merge(parts[1])
    torch.testing.assert_close(merged.result(), full.result(), atol=1e-12, rtol=0)
    torch.testing.assert_close(merged.bootstrap(), full.bootstrap(), atol=1e-12, rtol=0)
    lo, hi = full.ci()
    est = full.result()
    assert (lo <= est + 1e-9).all() and (est <= hi + 1e-9).all()
    assert full.n_examples == 400 and full.n_batches == 8


def test_soft_alignment_and_argmax():
    s = torch.tensor([[0.9, 0.5, 0.1, 0.0], [0.1, 0.2, 0.8, 0.6]], dtype=torch.float64)
    a = soft_alignment(s, k=2)
    assert a[0].item() == pytest.approx((0.9 * 0 + 0.5 * 1) / 1.4)
    assert a[1].item() == pytest.approx((0.8 * 2 + 0.6 * 3) / 1.4)
    assert soft_alignment(s).shape == (2,)  # default k = min(5, 4)
    assert cka_argmax(s).tolist() == [0, 2]
    # identity matrix: alignment on the diagonal with k=1
    assert soft_alignment(torch.eye(4, dtype=torch.float64), k=1).tolist() == [0, 1, 2, 3]


def test_rejects_tiny_batches():
    with pytest.raises(ValueError):
        minibatch_cka([torch.randn(3, 4)], None, 3)


def test_fp32_grams_match_float64_u_centred_reference_at_benchmark_shape():
    """The accumulator (float32 Grams, float64 accumulation, no U) against the U-centred form
    computed entirely in float64, at the CKA-13 benchmark's minibatch shape (512 x 256, offset 4)."""
    from engram_interp.analysis.cka import u_centred_grams

    g = torch.Generator().manual_seed(7)
    n, d, L = 1024, 256, 13
    latent = torch.randn(n, 32, generator=g)
    a = [latent @ torch.randn(32, d, generator=g) / 6 + 4.0 + (l + 1) * 0.3 * torch.randn(n, d, generator=g) for l in range(L)]
    b = [latent @ torch.randn(32, d, generator=g) / 6 - 2.0 + 0.5 * torch.randn(n, d, generator=g) for l in range(3)]
    ours = minibatch_cka([t.float() for t in a], [t.float() for t in b], 512)
    s = torch.zeros(L, 3, dtype=torch.float64)
    sa, sb = torch.zeros(L, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    for start in (0, 512):
        ua = u_centred_grams(torch.stack([t[start:start + 512].double() for t in a]))
        ub = u_centred_grams(torch.stack([t[start:start + 512].double() for t in b]))
        s += ua @ ub.T
        sa += (ua * ua).sum(1)
        sb += (ub * ub).sum(1)
    ref = s / torch.sqrt(torch.outer(sa, sb))
    assert float((ours - ref).abs().max()) < 1e-6


def test_entity_texts_cut_after_their_last_entity_read_the_same_activations():
    """CKA on entity tokens runs each probe text only up to its last entity: the activations there
    equal those of the whole text (the models are causal), for every model kind incl. Engram and mHC."""
    from engram_interp.analysis.common import entity_batches, layer_activations, selected_mask
    from engram_interp.testing import tiny_model

    items = [{"text": "Alexander the Great was a king of Macedon. The Milky Way is a galaxy far away from here.",
              "entity_end_positions": [18, 40]},
             {"text": "By the way, the Princess of Wales visited London and Paris, then went home again.",
              "entity_end_positions": [32, 47]}]
    for kind in ("engram", "mhc", "moe"):
        model = tiny_model(kind)
        whole = next(entity_batches(model, items, batch_size=2))
        cut = next(entity_batches(model, items, batch_size=2, end_at_last_entity=True))
        assert cut.tokens.shape[1] < whole.tokens.shape[1] and cut.positions == whole.positions
        for h_whole, h_cut in zip(layer_activations(model, whole.tokens), layer_activations(model, cut.tokens)):
            torch.testing.assert_close(h_cut[selected_mask(cut)], h_whole[selected_mask(whole)], atol=1e-5, rtol=1e-5)


def test_selected_activations_equal_the_plain_forward_per_batch():
    """Rows re-batched by length across a window give, per original batch and in its row-major order,
    the activations of the plain forward at the selected positions (entity positions or every token)."""
    from engram_interp.analysis.common import (
        entity_batches, layer_activations, selected_activations, selected_mask, token_batches,
    )
    from engram_interp.testing import tiny_model

    items = [{"text": t, "entity_end_positions": e} for t, e in [
        ("Alexander the Great was a king of Macedon.", [18]),
        ("By the way, the Princess of Wales visited London and Paris, then went home again and again.", [32, 47, 57]),
        ("The Milky Way is a galaxy.", [12]), ("Water boils at one hundred degrees in New York.", [47])]]
    models = [tiny_model("engram"), tiny_model("mhc", seed=1)]
    for batches in (list(entity_batches(models[0], items, batch_size=2)),
                    list(token_batches(models[0], [i["text"] for i in items], batch_size=3))):
        got = list(selected_activations(models, batches, window=2))
        assert [b for b, _ in got] == batches
        for batch, acts in got:
            sel = selected_mask(batch)
            for model, a in zip(models, acts):
                ref = torch.stack([h[sel] for h in layer_activations(model, batch.tokens)])
                torch.testing.assert_close(a, ref, atol=1e-5, rtol=1e-5)


def test_several_models_against_one_baseline_equal_separate_analyses():
    """cka_analyses runs B once for every A; each result equals its own cka_analysis call."""
    from engram_interp.analysis.cka_models import cka_analyses, cka_analysis
    from engram_interp.testing import tiny_model

    texts = ["The Milky Way is a galaxy. By the way, the Princess of Wales visited London. " * 4] * 4
    a1, a2, b = tiny_model("engram"), tiny_model("engram-null", seed=3), tiny_model("moe", seed=1)
    kw = dict(batch_size=32, max_tokens=300, n_boot=20, seed=4)
    together = cka_analyses({"a1": a1, "a2": a2}, b, texts, name_b="b", **kw)
    for res, model, name in zip(together, (a1, a2), ("a1", "a2")):
        alone = cka_analysis(model, b, texts, names=(name, "b"), **kw)
        assert res.to_dict() == alone.to_dict()
