"""Routing of mixture-of-experts layers (docs/ANALYSES.md, "Routing"), on any MoE model behind the one
interface (ours or a Hugging Face MoE family): read from ``blocks.{l}.mlp.hook_expert_ids`` /
``hook_router_scores`` only, streaming over token batches (memory independent of the corpus length).

Per MoE layer:

- **load**: the share of expert choices each routed expert gets, and its balance, the entropy of that
  share over log(experts) (1 = every expert chosen equally often);
- **router entropy**: the mean entropy of the router's normalised affinities per token, over
  log(experts) (1 = the router cannot tell the experts apart);
- **n-gram consistency**: over the suffix bigrams seen at least ``min_count`` times, the share of
  occurrences whose top expert is the bigram's most frequent one, next to the same share with the top
  experts shuffled among those occurrences (B random shuffles; the consistency routing would have if
  it ignored which bigram a token ends);
- **gate / routing dependence** (when a model with an Engram gate is given as ``gate_from``): the
  Jensen-Shannon divergence between the expert shares of tokens weighted by the gate g_t and weighted
  by 1 - g_t (the gate of the first Engram layer unless ``gate_layer``, averaged over streams). 0 when
  routing ignores the gate; a Poisson bootstrap over token batches gives its (basic, bias-reflecting)
  95% interval.

The gate split of a model without Engram (e.g. the MoE baseline) uses the gate of ``gate_from`` on the
same tokens, so an Engram / MoE pair is compared on one token split.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Sequence

import torch

from engram_interp.analysis._dist import poisson_weights
from engram_interp.analysis.common import check_texts, model_name, same_tokenizer, token_batches
from engram_interp.analysis.progress import count_tokens, token_progress
from engram_interp.errors import EngramInterpError

__all__ = ["RoutingAccumulator", "LayerRouting", "RoutingResult", "routing", "js_divergence", "require_moe"]


def require_moe(model, what: str = "routing") -> None:
    """One line when ``model`` has no MoE layer."""
    if not model.info.moe_layers:
        raise EngramInterpError(f"{model_name(model)} has no mixture-of-experts layers: {what} needs an MoE model")


def js_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence (nats) between the distributions ``p`` and ``q`` over the last axis
    (normalised here; zero rows give 0)."""
    p = p / p.sum(-1, keepdim=True).clamp_min(1e-300)
    q = q / q.sum(-1, keepdim=True).clamp_min(1e-300)
    m = 0.5 * (p + q)

    def kl(a, b):
        return torch.where(a > 0, a * (a.clamp_min(1e-300).log() - b.clamp_min(1e-300).log()), torch.zeros_like(a)).sum(-1)

    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


class RoutingAccumulator:
    """Sums over tokens for the MoE layers ``layers`` with ``n_experts`` routed experts (float64)."""

    def __init__(self, layers: Sequence[int], n_experts: int, n_boot: int = 200, seed: int = 0) -> None:
        self.layers, self.n_experts, self.n_boot, self.seed = list(layers), int(n_experts), int(n_boot), int(seed)
        L, E = len(self.layers), self.n_experts
        self.load = torch.zeros(L, E, dtype=torch.float64)
        self.entropy = torch.zeros(L, dtype=torch.float64)
        self.n_tokens = 0
        self.open = torch.zeros(L, E, dtype=torch.float64)  # sum over choices of g_t
        self.closed = torch.zeros(L, E, dtype=torch.float64)  # sum over choices of 1 - g_t
        self.boot_open = torch.zeros(n_boot, L, E, dtype=torch.float64)
        self.boot_closed = torch.zeros(n_boot, L, E, dtype=torch.float64)
        self.top1: list[dict[tuple[int, int], torch.Tensor]] = [defaultdict(lambda: torch.zeros(E, dtype=torch.int64))
                                                               for _ in self.layers]
        self.has_gate = False

    def update(self, ids: list[torch.Tensor], scores: list[torch.Tensor], bigrams: torch.Tensor,
               gate: torch.Tensor | None, batch_index: int) -> None:
        """One batch of ``n`` selected tokens: per layer ``ids [n, top_k]`` (expert ids, ranked by weight
        as the router returns them: column 0 = top expert) and ``scores [n, E]``; ``bigrams [n, 2]`` the
        (previous, current) token ids; ``gate [n]`` in [0, 1] or None; ``batch_index`` keys the bootstrap."""
        E = self.n_experts
        self.n_tokens += int(bigrams.shape[0])
        w = poisson_weights(self.seed, batch_index, self.n_boot) if gate is not None else None
        for i, (ix, sc) in enumerate(zip(ids, scores)):
            ix = ix.long().cpu()
            valid = (ix >= 0) & (ix < E)
            onehot = torch.zeros(ix.shape[0], E, dtype=torch.float64)
            onehot.scatter_add_(1, ix.clamp(0, E - 1), valid.double())
            self.load[i] += onehot.sum(0)
            p = sc.double().cpu().clamp_min(0)
            p = p / p.sum(-1, keepdim=True).clamp_min(1e-300)
            self.entropy[i] += -(torch.where(p > 0, p * p.clamp_min(1e-300).log(), torch.zeros_like(p))).sum()
            if gate is not None:
                g = gate.double().cpu().unsqueeze(1)
                o, c = (onehot * g).sum(0), (onehot * (1 - g)).sum(0)
                self.open[i] += o
                self.closed[i] += c
                self.boot_open[:, i] += w[:, None] * o
                self.boot_closed[:, i] += w[:, None] * c
            top = sc.double().cpu().argmax(-1)
            table = self.top1[i]
            for key, e in zip(map(tuple, bigrams.tolist()), top.tolist()):
                table[key][e] += 1
        self.has_gate = self.has_gate or gate is not None

    def consistency(self, i: int, min_count: int, n_shuffles: int, seed: int) -> tuple[float | None, float | None, int]:
        """(observed share of occurrences on their bigram's modal top expert, mean of the same share
        with the top experts shuffled among the eligible occurrences, eligible bigrams)."""
        rows = [c for c in self.top1[i].values() if int(c.sum()) >= min_count]
        if not rows:
            return None, None, 0
        counts = torch.stack(rows)  # [m, E]
        n = counts.sum(1)
        observed = float(counts.max(1).values.sum() / n.sum())
        experts = torch.repeat_interleave(torch.arange(self.n_experts).repeat(len(rows)), counts.flatten())
        owner = torch.repeat_interleave(torch.arange(len(rows)), n)
        g = torch.Generator().manual_seed(seed)
        null = []
        for _ in range(n_shuffles):
            shuffled = experts[torch.randperm(len(experts), generator=g)]
            c = torch.zeros(len(rows), self.n_experts, dtype=torch.int64)
            c.index_put_((owner, shuffled), torch.ones_like(shuffled), accumulate=True)
            null.append(float(c.max(1).values.sum() / n.sum()))
        return observed, sum(null) / len(null), len(rows)


@dataclass
class LayerRouting:
    """One MoE layer: ``load`` share per expert, ``balance`` (entropy of the load / log E),
    ``router_entropy`` (mean normalised entropy of the router's affinities), ``consistency`` /
    ``consistency_shuffled`` (top-expert agreement within suffix bigrams, and with the experts shuffled),
    ``n_bigrams`` eligible; ``gate_js`` [nats] with its 95% ``gate_js_ci`` (None without a gate)."""

    layer: int
    load: list[float]
    balance: float
    router_entropy: float
    consistency: float | None
    consistency_shuffled: float | None
    n_bigrams: int
    gate_js: float | None = None
    gate_js_ci: list[float] | None = None


@dataclass
class ModelRouting:
    """One model's routing: per MoE layer a :class:`LayerRouting`; ``mean_gate_js`` the one
    pre-stated statistic of gate / routing dependence (mean JS over the MoE layers at or after the
    gate's layer) with its 95% bootstrap interval ``mean_gate_js_ci`` (None without a gate)."""

    name: str
    n_experts: int
    n_tokens: int
    gate_from: str | None
    gate_layer: int | None
    layers: list[LayerRouting] = field(default_factory=list)
    mean_gate_js: float | None = None
    mean_gate_js_ci: list[float] | None = None


@dataclass
class RoutingResult:
    models: list[ModelRouting] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"models": [asdict(m) for m in self.models]}


def _basic_ci(point: float, reps: torch.Tensor) -> list[float]:
    """The basic (reverse-percentile) 95% bootstrap interval ``[2 t - q97.5, 2 t - q2.5]``, floored at 0:
    a divergence estimated from counts is biased upwards, and its bootstrap replicates more so, so the
    plain percentile interval would sit above the estimate."""
    hi_q, lo_q = float(torch.quantile(reps, 0.975)), float(torch.quantile(reps, 0.025))
    return [max(0.0, 2 * point - hi_q), max(0.0, 2 * point - lo_q)]


def _layer_result(acc: RoutingAccumulator, i: int, layer: int, min_count: int, n_shuffles: int, seed: int) -> LayerRouting:
    E = acc.n_experts
    load = acc.load[i] / acc.load[i].sum().clamp_min(1)
    nz = load[load > 0]
    balance = float(-(nz * nz.log()).sum() / math.log(E)) if E > 1 else 1.0
    cons, shuf, n_big = acc.consistency(i, min_count, n_shuffles, seed)
    js = ci = None
    if acc.has_gate:
        js = float(js_divergence(acc.open[i], acc.closed[i]))
        reps = js_divergence(acc.boot_open[:, i], acc.boot_closed[:, i])
        ci = _basic_ci(js, reps) if acc.n_boot else None
    return LayerRouting(layer=layer, load=load.tolist(), balance=balance,
                        router_entropy=float(acc.entropy[i] / max(acc.n_tokens, 1) / math.log(E)) if E > 1 else 0.0,
                        consistency=cons, consistency_shuffled=shuf, n_bigrams=n_big, gate_js=js, gate_js_ci=ci)


def _gates(model, tokens: torch.Tensor, mask: torch.Tensor, layer: int) -> torch.Tensor:
    name = f"blocks.{layer}.engram.hook_gate"
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n == name, return_type=None)
    g = cache[name]
    return (g.float().mean(-1) if g.dim() == 3 else g.float())[mask]


@torch.no_grad()
def routing(models: dict, texts: Sequence[str] | str, *, gate_from=None, gate_layer: int | None = None,
            batch_size: int = 8, max_tokens: int | None = 20000, min_count: int = 3, n_shuffles: int = 20,
            n_boot: int = 200, seed: int = 0, progress: bool = False) -> RoutingResult:
    """Routing statistics of each MoE model in ``models`` ({name: model}) on the same texts (see the
    module docstring). ``gate_from``: a model with Engram layers whose gate splits the tokens (default:
    the model itself when it has Engram layers)."""
    texts = check_texts(texts)
    if gate_from is not None:
        if not gate_from.info.engram_layers:
            raise EngramInterpError(f"{model_name(gate_from)} has no Engram layers: it has no gate to split tokens by")
    out = RoutingResult()
    for name, model in models.items():
        require_moe(model)
        source = gate_from if gate_from is not None else (model if model.info.engram_layers else None)
        if source is not None and source is not model:
            same_tokenizer(model, source)
        g_layer = None if source is None else (gate_layer if gate_layer is not None else source.info.engram_layers[0])
        if source is not None and g_layer not in source.info.engram_layers:
            raise EngramInterpError(f"--gate-layer {g_layer} is not an Engram layer of {model_name(source)} "
                                    f"({list(source.info.engram_layers)})")
        layers = list(model.info.moe_layers)
        names = [f"blocks.{l}.mlp.hook_{k}" for l in layers for k in ("expert_ids", "router_scores")]
        wanted = set(names)
        acc = None
        batches = token_batches(model, texts, batch_size=batch_size, max_tokens=max_tokens)
        total = count_tokens(model, texts, max_tokens) if progress else None
        for bi, batch in enumerate(token_progress(batches, total, f"routing {name}", lambda b: int(b.mask.sum()), progress)):
            if not batch.mask.any():
                continue
            _, cache = model.run_with_cache(batch.tokens, names_filter=lambda n: n in wanted, return_type=None)
            scores = [cache[f"blocks.{l}.mlp.hook_router_scores"][batch.mask] for l in layers]
            ids = [cache[f"blocks.{l}.mlp.hook_expert_ids"][batch.mask] for l in layers]
            if acc is None:
                acc = RoutingAccumulator(layers, scores[0].shape[-1], n_boot, seed)
            prev = torch.cat([torch.full_like(batch.tokens[:, :1], -1), batch.tokens[:, :-1]], dim=1)
            bigrams = torch.stack([prev[batch.mask], batch.tokens[batch.mask]], dim=1).cpu()
            gate = None if source is None else _gates(source, batch.tokens.to(source.device), batch.mask.to(source.device), g_layer)
            acc.update(ids, scores, bigrams, gate, bi)
        if acc is None:
            raise EngramInterpError("no tokens to route: give more text")
        res = ModelRouting(name=name, n_experts=acc.n_experts, n_tokens=acc.n_tokens,
                           gate_from=None if source is None else (name if source is model else model_name(source)),
                           gate_layer=g_layer,
                           layers=[_layer_result(acc, i, l, min_count, n_shuffles, seed) for i, l in enumerate(layers)])
        picked = [i for i, l in enumerate(layers) if g_layer is not None and l >= g_layer]
        if acc.has_gate and picked:
            res.mean_gate_js = float(js_divergence(acc.open[picked], acc.closed[picked]).mean())
            reps = js_divergence(acc.boot_open[:, picked], acc.boot_closed[:, picked]).mean(1)
            res.mean_gate_js_ci = _basic_ci(res.mean_gate_js, reps) if n_boot else None
        out.models.append(res)
    return out
