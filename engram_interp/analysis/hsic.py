"""Unbiased HSIC (Song et al. 2012) of every pair of layers of one minibatch, float32 without cancellation.

``HSIC1(K, L) = <U_K, U_L>_F / (n (n-3))`` with ``K = X X^T`` (diagonal zeroed) and its U-centring
``U = K - m 1^T - 1 m^T`` (diagonal zeroed), ``m_i = r_i / (n-2) - 1'r / (2 (n-1) (n-2))``, ``r = K 1``.

Why this form and not Song et al.'s trace form ``tr(KL) + 1'K1 1'L1 / ((n-1)(n-2)) - 2/(n-2) 1'KL1``:
in a language model's residual stream a few tokens carry massive activations (SmolLM2: the first token
has norm ~2.5e4 against ~230 for the others). After mean-centring, the zero-diagonal Gram's row sums
are ``-|x_i|^2`` and the three trace terms are ~1e5 times the HSIC they add up to, so float32 rounding of
those terms (and of the Gram entries of the outlier rows) shows up in the fourth digit of CKA at small
minibatches. Here no term is larger than the answer needs:

* the Gram is one float32 ``bmm`` of the mean-centred features (the floor); its row sums are added in
  float64 and U-centring is one in-place float32 rank-2 update: its entries are no larger than the
  centred Gram's, and an error in ``m`` changes ``<U_K, U_L>`` only to second order (a U-centred
  matrix has zero row sums);
* rows of examples whose squared norm exceeds ``OUTLIER_RATIO`` times the minibatch's median (massive
  activations) are recomputed in float64 from the features, U-centred in float64 and only then stored
  in float32: the float32 rounding of such a row is ``eps |x_i| |x_j|``, far above that of the rest;
* the Frobenius products of the U-centred Grams run as one batched float32 matrix product over blocks
  of whole rows, the blocks' partial sums added in float64.
"""

from __future__ import annotations

import torch

__all__ = ["u_centred_grams", "hsic_matrix", "minibatch_u_grams", "OUTLIER_RATIO"]

OUTLIER_RATIO = 16.0  # squared norm over the minibatch median above which a Gram row is float64


def u_centred_grams(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """U-centred linear Gram matrices of a minibatch, flattened, all in float64 (the reference form):
    ``[L, n, d] -> [L, n*n]``. ``out``: optional float64 buffer ``[L, n*n]`` to write into."""
    if x.dim() != 3:
        raise ValueError(f"expected [layers, n, d], got {tuple(x.shape)}")
    L, n = x.shape[0], x.shape[1]
    if n <= 3:
        raise ValueError(f"unbiased HSIC needs more than 3 examples per minibatch, got {n}")
    x = centred(x)
    k = out.view(L, n, n) if out is not None else torch.empty(L, n, n, dtype=torch.float64, device=x.device)
    k.copy_(torch.bmm(x, x.transpose(1, 2)))  # [L, n, n]
    k.diagonal(dim1=1, dim2=2).zero_()
    _u_centre_(k, _centring(k.sum(dim=2), n))
    return k.view(L, n * n)


def centred(x: torch.Tensor, sample: int = 64) -> torch.Tensor:
    """Features ``[..., n, d]`` shifted by the mean of (at most) ``sample`` evenly spaced examples, those
    with massive activations (squared norm over ``OUTLIER_RATIO`` x the sample's median) left out.
    HSIC is invariant to any common shift, so the shift needs no precision, only to be near the typical
    example: it removes a residual stream's common offset (which would cost float32 Gram entries their
    precision) without spreading an outlier's activation into every row, as the full mean would. Half
    precision is computed in float32, float32/float64 stay as given."""
    x = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    s = x[..., ::max(1, x.shape[-2] // sample), :]  # [..., m, d]
    keep = _typical(s.square().sum(dim=-1)).to(x.dtype).unsqueeze(-2)  # [..., 1, m]
    return x - (keep @ s) / keep.sum(dim=-1, keepdim=True)


def _typical(sq: torch.Tensor) -> torch.Tensor:
    """Mask ``[..., n]`` of the examples whose squared norm ``sq`` is at most ``OUTLIER_RATIO`` x median."""
    return sq <= OUTLIER_RATIO * sq.median(dim=-1, keepdim=True).values


def minibatch_u_grams(layers: list[torch.Tensor], n: int) -> tuple[torch.Tensor, tuple | None]:
    """U-centred linear Grams of every layer of one minibatch: ``([G, n, n], exact)``.

    ``layers``: stacked ``[L, n, d]`` tensors and/or single ``[n, d]`` layers (the G layers in order).
    The buffer is float32 for float32/half input (float64 if any layer is float64), diagonal zeroed.
    ``exact``: ``None``, or ``(idx [o], rows [G, o, n] float64)``: the U-centred rows of the examples
    with massive activations in any layer (at most ``max(4, n // 16)``), float64 from the features;
    those rows and columns are zero in the buffer. :func:`hsic_matrix` takes both."""
    dtype = torch.float64 if any(t.dtype == torch.float64 for t in layers) else torch.float32
    count = sum(t.shape[0] if t.dim() == 3 else 1 for t in layers)
    k = torch.empty(count, n, n, dtype=dtype, device=layers[0].device)
    xs, i = [], 0
    for t in layers:
        x = centred(t if t.dim() == 3 else t[None]).to(dtype)
        torch.bmm(x, x.transpose(1, 2), out=k[i:i + x.shape[0]])
        xs.append(x)
        i += x.shape[0]
    sq = k.diagonal(dim1=1, dim2=2).clone()  # [G, n]: squared norms
    k.diagonal(dim1=1, dim2=2).zero_()
    row = k.sum(dim=2).double()  # [G, n]: K 1 (an error in it is second order in HSIC)
    idx = _outliers(sq, n) if dtype == torch.float32 else None
    if idx is None:
        _u_centre_(k, _centring(row, n))
        return k, None
    e = torch.cat([torch.bmm(x[:, idx].double(), x.double().transpose(1, 2)) for x in xs])  # [G, o, n]
    own = torch.arange(len(idx), device=k.device)
    e[:, own, idx] = 0.0
    row += (e - k[:, idx, :].double()).sum(dim=1)  # the outlier columns of every row, exact
    row[:, idx] = e.sum(dim=2)  # the outlier rows themselves
    m = _centring(row, n)
    _u_centre_(k, m)
    e -= m[:, idx, None] + m[:, None, :]
    e[:, own, idx] = 0.0
    k[:, idx, :] = 0.0
    k[:, :, idx] = 0.0
    return k, (idx, e)


def _outliers(sq: torch.Tensor, n: int) -> torch.Tensor | None:
    """Examples ``[o]`` whose squared norm ``sq`` ``[G, n]`` is over ``OUTLIER_RATIO`` x its layer's
    median in any layer, the largest ratios first, at most ``max(4, n // 16)``; ``None`` if none."""
    out = ~_typical(sq)
    if not bool(out.any()):
        return None
    score = (sq / sq.median(dim=1, keepdim=True).values.clamp_min(torch.finfo(sq.dtype).tiny)).amax(dim=0)
    score = torch.where(out.any(dim=0), score, torch.zeros_like(score))
    top = torch.topk(score, min(int(out.any(dim=0).sum()), max(4, n // 16))).indices
    return torch.sort(top).values


def _centring(row: torch.Tensor, n: int) -> torch.Tensor:
    """U-centring vector ``m`` ``[G, n]`` float64 from the zero-diagonal row sums ``row`` ``[G, n]``."""
    row = row.double()
    return row / (n - 2) - row.sum(dim=1, keepdim=True) / (2 * (n - 1) * (n - 2))


def _u_centre_(k: torch.Tensor, m: torch.Tensor) -> None:
    """``k <- k - m 1^T - 1 m^T``, diagonal zeroed, in place as one rank-2 update in ``k``'s dtype."""
    m = m.to(k.dtype)
    ones = torch.ones_like(m)
    k.baddbmm_(torch.stack([m, ones], dim=2), torch.stack([ones, m], dim=1), alpha=-1.0)
    k.diagonal(dim1=1, dim2=2).zero_()


def hsic_matrix(u: torch.Tensor, exact: tuple | None = None, chunk: int = 16384) -> torch.Tensor:
    """Unbiased HSIC1 of every pair of U-centred Grams: ``[G, G]`` float64, from
    :func:`minibatch_u_grams`'s ``u`` ``[G, n, n]`` and ``exact`` rows.

    The buffer's Frobenius products run as one batched matrix product over blocks of about ``chunk``
    entries (whole rows) in its precision, the blocks' partial sums added in float64; the exact rows
    (and, by symmetry, columns) add theirs in float64. Nothing of size ``n^2`` is float64."""
    G, n = u.shape[0], u.shape[1]
    rows = max(r for r in range(1, max(1, chunk // n) + 1) if n % r == 0)  # whole rows per block
    blocks = u.view(G, n // rows, rows * n).transpose(0, 1)  # [n_blocks, G, rows * n]
    f = torch.bmm(blocks, blocks.transpose(1, 2)).sum(0, dtype=torch.float64)  # [G, G]
    if exact is not None:
        idx, e = exact
        r, c = e.reshape(G, -1), e[:, :, idx].reshape(G, -1)  # rows; their entries in outlier columns
        f += 2.0 * (r @ r.T) - c @ c.T
    return f / (n * (n - 3))
