"""CKA between models over texts: activations of every layer point of two models on the same tokens
(one pass, rows shuffled across sequences, re-batched by length), fed to the minibatch estimator of
``engram_interp.analysis.cka``; results with bootstrap intervals and the soft alignment index."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import torch

from engram_interp.analysis.cka import (CKAAccumulator, cka_argmax, default_k, percentile_ci, soft_alignment,
                                         soft_alignment_range)


@dataclass
class CKAResult:
    """CKA between the layer points of model A (rows) and model B (columns).

    ``layers_a``/``layers_b``: layer points 0..n_layers (resid_pre of each block, then the final
    resid_post). ``cka``: ``[L_a][L_b]`` unbiased linear CKA. ``ci_low``/``ci_high``: 95% bootstrap
    interval over minibatches. ``soft_alignment``: paper eq. 9 per row (in B's layer units, top-k);
    ``soft_alignment_ci``: its bootstrap interval; ``argmax``: B's most similar layer per row.
    ``n_examples``: tokens used; ``n_batches``: minibatches; ``tokens``: the token selection.
    ``noise_band``: optional diagonal of baseline-vs-baseline(other seed) CKA (set by the caller).
    ``soft_alignment_range``: ``[low, high]`` the index can take with equal top-k weights
    (:func:`soft_alignment_range`). ``references``: the same index of reference models against the
    same B (``{"control": ..., "noise": ...}``, each ``{"name", "soft_alignment",
    "soft_alignment_ci"}``; set by the caller, read by ``engram_interp.analysis.alignment``).
    """

    name_a: str
    name_b: str
    layers_a: list[int]
    layers_b: list[int]
    cka: list[list[float]]
    ci_low: list[list[float]]
    ci_high: list[list[float]]
    soft_alignment: list[float]
    soft_alignment_ci: list[list[float]]
    argmax: list[int]
    k: int
    n_examples: int
    n_batches: int
    batch_size: int
    tokens: str
    engram_layers_a: list[int] = field(default_factory=list)
    noise_band: list[float] | None = None
    soft_alignment_range: list[float] | None = None
    references: dict[str, dict] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return _nan_to_none(asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


def _nan_to_none(x):
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_nan_to_none(v) for v in x]
    return x


def cka_analysis(
    model_a,
    model_b=None,
    texts: Sequence[str] | str | None = None,
    *,
    names: tuple[str, str] | None = None,
    **kwargs,
) -> CKAResult:
    """Minibatch unbiased linear CKA between every layer point of ``model_a`` and of ``model_b``
    (``None``: A against itself) on the same tokens.

    ``tokens``: ``"all"`` (every token of ``texts`` except BOS and padding), ``"entities"`` (final
    token of each named entity of the probe set ``probes``, default ``probes/entities_ner.jsonl``),
    or explicit positions, one list per text (positions in ``model.to_tokens(text)``, BOS = 0).
    Tokens are shuffled across sequences (buffer of ``shuffle_buffer`` tokens, default
    ``16 * batch_size``) before minibatching. ``max_tokens`` caps the examples. The other keywords
    are those of :func:`cka_analyses`. Returns CKAResult.
    """
    from engram_interp.analysis.common import model_name

    na, nb = names or (model_name(model_a, "A"), model_name(model_b if model_b is not None else model_a, "B"))
    return cka_analyses({na: model_a}, model_b, texts, name_b=nb, **kwargs)[0]


def cka_analyses(
    models_a: dict,
    model_b=None,
    texts: Sequence[str] | str | None = None,
    *,
    tokens: str | Sequence[Sequence[int]] = "all",
    probes: str | None = None,
    batch_size: int = 256,
    max_tokens: int | None = 20000,
    text_batch_size: int = 8,
    k: int | None = None,
    n_boot: int = 200,
    seed: int = 0,
    shuffle_buffer: int | None = None,
    progress: bool = False,
    on_progress: Callable[[int, int | None, str], None] | None = None,
    name_b: str | None = None,
) -> list[CKAResult]:
    """:func:`cka_analysis` of each model of ``models_a`` (``{name: model}``) against the same
    ``model_b``, over the same tokens in one pass: B runs once per batch for all of them. Each result
    equals that of a separate ``cka_analysis`` call (same seed: the same shuffles and bootstrap).
    With ``model_b=None`` (self-similarity) give one model."""
    from engram_interp.analysis.common import (
        check_texts,
        entity_batches,
        model_name,
        read_entity_probes,
        same_tokenizer,
        selected_activations,
        selected_mask,
        token_batches,
    )
    from engram_interp.errors import EngramInterpError

    if batch_size < 4:
        raise EngramInterpError("--batch-size must be at least 4 for unbiased CKA")
    rows = list(models_a.items())
    self_mode = model_b is None
    if not rows or (self_mode and len(rows) > 1):
        raise EngramInterpError("give one model A for self-similarity, or at least one model A against a model B")
    model_a = rows[0][1]
    mb = model_a if self_mode else model_b
    for _, m in rows:
        same_tokenizer(m, mb)
    nb = name_b or model_name(mb, "B")
    if isinstance(tokens, str) and tokens == "entities":
        def make_batches():
            return entity_batches(model_a, read_entity_probes(probes), text_batch_size, max_tokens,
                                  end_at_last_entity=True)  # CKA reads the entity positions only
        selection = "entities"
    elif isinstance(tokens, str) and tokens == "all":
        def make_batches():
            return token_batches(model_a, check_texts(texts), text_batch_size, max_tokens)
        selection = "all"
    elif isinstance(tokens, str):
        raise EngramInterpError(f"unknown token selection {tokens!r}: use 'all', 'entities' or explicit positions")
    else:
        texts = check_texts(texts)
        if len(tokens) != len(texts):
            raise EngramInterpError("give one list of positions per text")
        def make_batches():
            return _position_batches(model_a, texts, tokens, text_batch_size)
        selection = "positions"

    las = [m.info.n_layers + 1 for _, m in rows]
    lb = mb.info.n_layers + 1
    accs = [CKAAccumulator(la, None if self_mode else lb, device=m.device, n_boot=n_boot, seed=seed)
            for la, (_, m) in zip(las, rows)]
    from engram_interp.analysis import _dist
    from engram_interp.analysis.cka_units import minibatch_sizes, shuffled_minibatches, units
    from engram_interp.analysis.progress import token_progress

    def count(b) -> int:
        return int(selected_mask(b).sum())

    capacity = max(shuffle_buffer or 16 * batch_size, batch_size)
    mine = _dist.shard(units(make_batches(), count, capacity, batch_size))  # torchrun: every world-size-th unit
    total = None
    if progress and _dist.dist_active():
        total = sum(u.n_tokens for u in _dist.shard(units(make_batches(), count, capacity, batch_size)))
    elif progress and selection == "all":
        from engram_interp.analysis.progress import count_tokens

        total = count_tokens(model_a, check_texts(texts), max_tokens)
    elif progress and selection == "entities":
        n_ent = sum(len(it["entity_end_positions"]) for it in read_entity_probes(probes))
        total = n_ent if max_tokens is None else min(n_ent, max_tokens)

    what = f"{', '.join(n for n, _ in rows)} vs {nb}"
    varies_a = [torch.zeros(la, dtype=torch.bool) for la in las]
    varies_b = torch.zeros(lb, dtype=torch.bool)
    run = [m for _, m in rows] + ([] if self_mode else [mb])
    done = 0
    with torch.no_grad():
        for unit in token_progress(mine, total, f"cka {what}", lambda u: u.n_tokens, progress):
            parts: list[list[torch.Tensor]] = [[] for _ in run]
            for _, acts in selected_activations(run, unit.batches):
                if acts[0] is not None:
                    for i, x in enumerate(acts):
                        parts[i].append(x)
            acts = [torch.cat(p, dim=1) for p in parts]
            done += acts[0].shape[1]
            if on_progress is not None:
                on_progress(done, max_tokens, what)
            sizes = minibatch_sizes(acts[0].shape[1], batch_size)
            for i in range(len(rows)):
                a = acts[i]  # [L_a, n, d]
                b = a if self_mode else acts[-1].to(a.device)
                varies_a[i] |= _varies(a).cpu()
                if i == 0:
                    varies_b |= varies_a[0] if self_mode else _varies(b).cpu()
                for j, (xa, xb) in enumerate(shuffled_minibatches(a, b, sizes, seed, unit.index)):
                    accs[i].update(xa, None if self_mode else xb, index=unit.first_minibatch + j)
    for acc in accs:
        acc.all_reduce()  # sums over torchrun's processes (a no-op in one)
    flags = torch.cat([*(v.double() for v in varies_a), varies_b.double()])  # does a layer vary anywhere
    _dist.all_reduce_max_([flags])
    cut = 0
    for i, la in enumerate(las):
        varies_a[i] = flags[cut:cut + la] > 0
        cut += la
    varies_b = flags[cut:] > 0
    if accs[0].n_batches == 0:
        raise EngramInterpError("too few tokens for CKA (need more than 3); give more text or a larger --max-tokens")
    out = []
    for (na, m), acc, va, la in zip(rows, accs, varies_a, las):
        _warn_constant(na, va, nb if not self_mode else None, varies_b)
        cka = _defined(acc.result(), va, varies_b)
        lo, hi = (_defined(x, va, varies_b) for x in acc.ci())
        kk = default_k(lb) if k is None else max(1, min(k, lb))
        sa = soft_alignment(cka, kk)
        sa_lo, sa_hi = percentile_ci(soft_alignment(_defined(acc.bootstrap(), va, varies_b), kk))
        out.append(CKAResult(
            name_a=na, name_b=nb, layers_a=list(range(la)), layers_b=list(range(lb)), cka=cka.tolist(),
            ci_low=lo.tolist(), ci_high=hi.tolist(), soft_alignment=sa.tolist(),
            soft_alignment_ci=[sa_lo.tolist(), sa_hi.tolist()], argmax=cka_argmax(cka).tolist(), k=kk,
            n_examples=acc.n_examples, n_batches=acc.n_batches, batch_size=batch_size, tokens=selection,
            engram_layers_a=list(getattr(m, "engram_layers", [])),
            soft_alignment_range=list(soft_alignment_range(kk, lb)),
        ))
    return out


def _varies(acts: torch.Tensor) -> torch.Tensor:
    """``[L, n, d]`` -> ``[L]`` bool: does the layer's representation vary across the n examples
    (by more than float32 rounding of its scale)? CKA is undefined for a constant layer."""
    x = acts.float()
    spread = (x.amax(dim=1) - x.amin(dim=1)).amax(dim=-1)
    scale = x.abs().amax(dim=(1, 2))
    return (spread > 1e-5 * scale.clamp_min(1e-30)).cpu() & (x.shape[1] > 1)


def _defined(cka: torch.Tensor, varies_a: torch.Tensor, varies_b: torch.Tensor) -> torch.Tensor:
    """CKA ``[..., L_a, L_b]`` with NaN where either layer has zero variance, and every value clamped
    to [-1, 1] (the float64 ratio can exceed 1 by rounding, e.g. 1.0000000000000027)."""
    ok = varies_a.to(cka.device)[:, None] & varies_b.to(cka.device)[None, :]
    return torch.where(ok, cka.clamp(-1.0, 1.0), torch.full_like(cka, float("nan")))


def _warn_constant(name_a: str, varies_a: torch.Tensor, name_b: str | None, varies_b: torch.Tensor) -> None:
    from engram_interp.io import warn

    for name, varies in ((name_a, varies_a), (name_b, varies_b)):
        if name is None:
            continue
        dead = [i for i, v in enumerate(varies.tolist()) if not v]
        if dead:
            warn(f"CKA is undefined (NaN) for layer(s) {dead} of {name}: the representation does not vary over"
                 " the selected tokens (e.g. one repeated token)")


def _position_batches(model, texts, positions, batch_size):
    from engram_interp.analysis.common import pad_batch

    pad = model.info.pad_token_id
    has_bos = model.info.bos_token_id is not None
    seqs, poss = [], []
    for text, pos in zip(texts, positions):
        ids = model.to_tokens(text)[0].tolist()
        pos = sorted({int(p) for p in pos if (1 if has_bos else 0) <= int(p) < len(ids)})
        if not pos:
            continue
        seqs.append(ids)
        poss.append(pos)
        if len(seqs) == batch_size:
            b = pad_batch(seqs, pad, has_bos, model.device)
            b.positions = poss
            yield b
            seqs, poss = [], []
    if seqs:
        b = pad_batch(seqs, pad, has_bos, model.device)
        b.positions = poss
        yield b
