"""LogitLens KL per layer (docs/ANALYSES.md section 1): KL(p_final || q_l), one layer at a time, in token chunks.

``q_l = softmax(unembed(ln_final(readout(h_l))))`` with the final norm's statistics recomputed on
``h_l`` (``model.lens_logits``); ``p = softmax(final logits)``. log_softmax in float32; nats.
Never materialises ``[layers, batch, pos, vocab]``: at most ``[chunk, vocab]`` at a time.
Mean over analysed tokens (BOS and padding excluded). The last point equals the model's own
output, so its KL is ~0: a built-in self-check (``LensCurve.last_kl``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from engram_interp.analysis._dist import all_reduce_sum_
from engram_interp.analysis.common import (
    check_texts, layer_activations, layer_hook_names, model_name, token_batches,
)
from engram_interp.analysis.progress import count_tokens, token_progress

__all__ = ["LogitLensAccumulator", "lens_kl_batch", "LensCurve", "LogitLensResult", "logit_lens",
           "TokenLens", "logit_lens_tokens"]


class LogitLensAccumulator:
    """Running sums of per-token KL and entropy for each of ``n_points`` layer points (float64)."""

    def __init__(self, n_points: int, device: torch.device | str | None = None) -> None:
        dev = torch.device(device) if device is not None else torch.device("cpu")
        self.kl_sum = torch.zeros(n_points, dtype=torch.float64, device=dev)
        self.kl_sq = torch.zeros(n_points, dtype=torch.float64, device=dev)
        self.ent_sum = torch.zeros(n_points, dtype=torch.float64, device=dev)  # entropy of q_l
        self.count = torch.zeros(1, dtype=torch.float64, device=dev)

    def update(self, kl: torch.Tensor, entropy: torch.Tensor) -> None:
        """Add ``kl``, ``entropy``: ``[n_points, n_tokens]`` (nats) for one batch of tokens."""
        kl = kl.to(self.kl_sum.device, torch.float64)
        self.kl_sum += kl.sum(dim=1)
        self.kl_sq += (kl * kl).sum(dim=1)
        self.ent_sum += entropy.to(self.kl_sum.device, torch.float64).sum(dim=1)
        self.count += kl.shape[1]

    def state(self) -> list[torch.Tensor]:
        return [self.kl_sum, self.kl_sq, self.ent_sum, self.count]

    def all_reduce(self, group=None) -> "LogitLensAccumulator":
        """Sum over all ``torch.distributed`` processes (no-op in one process)."""
        all_reduce_sum_(self.state(), group)
        return self

    def merge(self, other: "LogitLensAccumulator") -> "LogitLensAccumulator":
        for a, b in zip(self.state(), other.state()):
            a += b.to(a.device)
        return self

    def result(self) -> dict[str, torch.Tensor]:
        """``kl`` (mean, nats), ``kl_sem`` (standard error over tokens), ``entropy`` (mean nats), ``n_tokens``."""
        n = self.count.clamp_min(1)
        mean = self.kl_sum / n
        var = (self.kl_sq / n - mean**2).clamp_min(0) * n / (n - 1).clamp_min(1)
        return {"kl": mean.cpu(), "kl_sem": (var / n).sqrt().cpu(), "entropy": (self.ent_sum / n).cpu(),
                "n_tokens": int(self.count.item())}


LENS_CHUNK = 256  # tokens per step: 256 x vocab fp32 (8 MiB at 8,192) stays in a CPU's last-level cache


def _shifted_softmax_parts(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """For logits ``z [c, vocab]`` (overwritten): ``y = z - max z`` (in place), ``s = exp(y)``,
    ``S = sum s`` and ``log S``; so ``log_softmax(z) = y - log S`` and ``softmax(z) = s / S``,
    from one exponential pass."""
    y = z.sub_(z.amax(-1, keepdim=True))
    s = y.exp()
    total = s.sum(-1)
    return y, s, total, total.log()


@torch.no_grad()
def lens_kl_batch(
    model, tokens: torch.Tensor, mask: torch.Tensor, chunk: int = LENS_CHUNK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token KL(p_final || q_l) and entropy H(q_l) for every layer point: two ``[n_points, n_sel]``
    float32 tensors (nats), ``n_sel = mask.sum()``, tokens in row-major order of ``mask``.

    With ``y = z - max z``, ``S = sum exp(y)`` per distribution: ``sum p log q = p.y_q - log S_q``, so
    KL = (p.y_p - log S_p) - (p.y_q - log S_q) and H(q) = log S_q - exp(y_q).y_q / S_q: one exp pass
    and two dot products per layer, no log-probabilities materialised. Both terms of KL are computed
    the same way, so a layer identical to the final one gives exactly 0."""
    names = layer_hook_names(model)
    wanted = set(names)
    logits, cache = model.run_with_cache(tokens, names_filter=lambda n: n in wanted)
    n_sel = int(mask.sum())
    final = logits[mask]  # [n_sel, vocab]: a copy, overwritten chunk by chunk below
    del logits
    acts = [cache[name][mask] for name in names]  # each [n_sel, d] or [n_sel, M, d]: selected once
    del cache
    kls = torch.empty(len(names), n_sel, device=final.device)
    ents = torch.empty(len(names), n_sel, device=final.device)
    for start in range(0, n_sel, chunk):
        stop = min(start + chunk, n_sel)
        y_p, p, total_p, log_total_p = _shifted_softmax_parts(final[start:stop].float())
        p = p.div_(total_p.unsqueeze(-1))
        p_log_p = torch.linalg.vecdot(p, y_p) - log_total_p  # [c]: sum p log p, once per chunk
        for li, h in enumerate(acts):
            y, s, total, log_total = _shifted_softmax_parts(model.lens_logits(h[start:stop].unsqueeze(0))[0].float())
            kls[li, start:stop] = p_log_p - (torch.linalg.vecdot(p, y) - log_total)
            ents[li, start:stop] = log_total - torch.linalg.vecdot(s, y) / total
    return kls, ents


@dataclass
class LensCurve:
    """One model's LogitLens curve: ``layers`` 0..n_layers (resid_pre of each block, then the final
    resid_post); ``kl`` mean KL(p_final || q_l) in nats; ``kl_sem`` its standard error over tokens;
    ``entropy`` mean entropy of q_l in nats."""

    name: str
    layers: list[int]
    kl: list[float]
    kl_sem: list[float]
    entropy: list[float]
    n_tokens: int

    @property
    def last_kl(self) -> float:
        """KL at the last point: ~0 by construction (self-check)."""
        return self.kl[-1]


@dataclass
class LogitLensResult:
    """``models``: one LensCurve per model, in the order given."""

    models: list[LensCurve] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"models": [asdict(m) for m in self.models]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


def logit_lens(
    models: Sequence | dict,
    texts: Sequence[str] | str,
    *,
    batch_size: int = 8,
    max_tokens: int | None = 20000,
    chunk: int = LENS_CHUNK,
    progress: bool = False,
    names: Sequence[str] | None = None,
    on_progress: Callable[[int, int | None, str], None] | None = None,
) -> LogitLensResult:
    """LogitLens KL curves of one or more models on the same texts.

    ``models``: a model, a list of models, or ``{name: model}``. Returns a LogitLensResult (mean KL in
    nats per layer point, entropy, token count). Each model uses its own final norm (statistics
    recomputed) and its own branch readout. ``on_progress(tokens done, max_tokens, model name)`` is
    called after each batch (the app's progress bar).
    """
    texts = check_texts(texts)
    named = _named(models, names)
    out = LogitLensResult()
    for name, model in named:
        acc = LogitLensAccumulator(model.info.n_layers + 1, device=model.device)
        batches = token_batches(model, texts, batch_size=batch_size, max_tokens=max_tokens, shard=True)
        total = count_tokens(model, texts, max_tokens, batch_size) if progress else None
        for batch in token_progress(batches, total, f"logit-lens {name}", lambda b: int(b.mask.sum()), progress):
            if not batch.mask.any():
                continue
            kl, ent = lens_kl_batch(model, batch.tokens, batch.mask, chunk)
            acc.update(kl, ent)
            if on_progress is not None:
                on_progress(int(acc.count.item()), max_tokens, name)
        r = acc.all_reduce().result()  # sums over torchrun's processes (a no-op in one)
        out.models.append(LensCurve(name=name, layers=list(range(model.info.n_layers + 1)), kl=r["kl"].tolist(),
                                    kl_sem=r["kl_sem"].tolist(), entropy=r["entropy"].tolist(), n_tokens=r["n_tokens"]))
    return out


@dataclass
class TokenLens:
    """Per-token LogitLens of one text: ``kl[layer][pos]`` and ``entropy[layer][pos]`` (nats),
    ``top_tokens[layer][pos]`` = top-k ``(token string, probability)`` of q_l; ``tokens`` the strings."""

    name: str
    tokens: list[str]
    layers: list[int]
    kl: list[list[float]]
    entropy: list[list[float]]
    top_tokens: list[list[list[tuple[str, float]]]]

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


@torch.no_grad()
def logit_lens_tokens(model, text: str, top_k: int = 5, name: str | None = None) -> TokenLens:
    """LogitLens of every token of one text (layer x position heatmap + top-k tokens per cell)."""
    text = check_texts(text)[0]
    tokens = model.to_tokens(text)
    mask = torch.ones_like(tokens, dtype=torch.bool)
    kl, ent = lens_kl_batch(model, tokens, mask)
    acts = layer_activations(model, tokens)
    tops = []
    for h in acts:
        probs = F.softmax(model.lens_logits(h)[0].float(), dim=-1)  # [pos, vocab], one layer at a time
        v, i = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
        tops.append([[(model.decode([int(t)]), float(p)) for t, p in zip(ii, vv)]
                     for ii, vv in zip(i.tolist(), v.tolist())])
    return TokenLens(name=name or model_name(model), tokens=model.to_str_tokens(tokens[0]),
                     layers=list(range(model.info.n_layers + 1)), kl=kl.cpu().tolist(), entropy=ent.cpu().tolist(),
                     top_tokens=tops)


def _named(models, names=None) -> list[tuple[str, object]]:
    if isinstance(models, dict):
        return list(models.items())
    if not isinstance(models, (list, tuple)):
        models = [models]
    if names is None:
        names = [model_name(m, f"model{i}") for i, m in enumerate(models)]
    seen: dict[str, int] = {}
    out = []
    for n, m in zip(names, models):
        if n in seen:
            seen[n] += 1
            n = f"{n}#{seen[n]}"
        else:
            seen[n] = 0
        out.append((n, m))
    return out
