"""Locate: which Engram table rows a prompt reads, what each row writes into the target logit, what
zeroing or restoring them does to the prediction, and which other n-grams share them.

For Engram layer l, at the last position T, e_T is the concatenation of one table row per hash head
h (order n, head k): e_T = [r_1, ..., r_H]. The value is linear in the rows,
``v_T = W_V e_T + b_V = sum_h W_V[:, cols(h)] r_h + b_V``, so with the gate alpha_T held at its value
(as direct logit attribution holds the final norm at its scale) the gated value
``u_T = alpha_T v_T`` splits exactly into one write per row plus a value-bias write ``alpha_T b_V``. The
short conv ``SiLU(Conv(RMSNorm(u)))`` is not linear in the rows (a norm and a SiLU), so its part of Y,
``Y_T - u_T``, is its own term (0 without a conv). Each write goes through the same frozen linear
readout as ``attribute`` (carried through every later stream mixing for mHC, the final norm frozen
at the real final stream, the unembedding direction target - contrast), so

    sum_h row_h + value_bias + conv == attribute's L{l}.engram term     (exact up to float64 rounding)

Causal tracing over rows, metric = log p(target) at T (and the logit (difference)):

* **zeroing** a row group sets those table rows to 0, i.e. every position whose hash reads one of
  them in that head gets zeros in that head's slice of e_t (``hook_memory``): exactly the model with
  those embedding rows zeroed;
* **restoring** a group starts from every row the prompt reads zeroed (all Engram layers, all
  positions) and keeps only that group's rows.

Groups per layer: each head, each order (its K heads), the whole layer. Scope ``"last"``: the rows
read at T (one per head); scope ``"all"``: every row the prompt reads at any position.

Collisions (optional, with a ``TableSource`` and a corpus): for every row read, the corpus n-grams
of the same order that hash to the same row in that head (``engram_interp.analysis.memory``).

Interface-only: hooks ``blocks.{l}.engram.hook_hash_ids|hook_memory|hook_gate|hook_out``, the final
stream, the ``hc_*`` mixing hooks for mHC, and ``model.engram_heads`` /
``model.engram_value_projection``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Iterable

import torch

from engram_interp.analysis.attribution import attribute_ids, check_prompt, resolve_token
from engram_interp.errors import EngramInterpError

__all__ = ["RowRead", "GroupEffect", "LayerLocate", "LocateResult", "locate", "row_group_logprobs", "rows_read",
           "within_head_rows"]


@dataclass
class RowRead:
    """One table row read by one hash head at one position. ``row``: within the head (0 .. head size
    - 1); ``ngram``: the order-n context the hash reads (decoded); ``contribution``: its direct effect
    on the logit (difference) through the frozen gate and W_V, in logits (last position only, None
    elsewhere). Collisions (None without a corpus): ``corpus_count`` occurrences of this n-gram in the
    corpus, ``n_shared`` other corpus n-grams in this row, ``shared_with`` the most frequent of them."""

    layer: int
    position: int
    order: int
    head: int
    column: int  # column of hook_hash_ids (order-major, then head)
    row: int
    ngram: str
    contribution: float | None = None
    corpus_count: int | None = None
    n_shared: int | None = None
    shared_with: list[dict] | None = None  # [{text, count}]


@dataclass
class GroupEffect:
    """Zeroing / restoring one row group. ``name``: ``L1.n2.h0`` (head), ``L1.n2`` (order), ``L1`` (layer);
    ``n_rows`` distinct table rows; log-probabilities of the target (nats) and the metric (logit of the
    target, minus the contrast's) with the group zeroed and with only the group restored."""

    name: str
    layer: int
    order: int | None
    head: int | None
    n_rows: int
    logprob_zeroed: float
    logprob_restored: float
    metric_zeroed: float
    metric_restored: float


@dataclass
class LayerLocate:
    """One Engram layer at the last position. ``gate``: alpha_T per branch; ``engram_term``: attribute's
    contribution of this layer's Y (summed over branches); ``rows_sum`` + ``value_bias`` + ``conv`` =
    ``engram_term`` - ``unexplained`` (float rounding only). All in logits."""

    layer: int
    gate: list[float]
    engram_term: float
    rows_sum: float
    value_bias: float
    conv: float
    unexplained: float
    rows: list[RowRead] = field(default_factory=list)
    groups: list[GroupEffect] = field(default_factory=list)


@dataclass
class LocateResult:
    """``locate`` on one prompt. ``metric``: the model's logit of the target (minus the contrast's) at
    the last position; ``logprob``: log p(target) (nats); ``*_all_zeroed``: the same with every row the
    prompt reads zeroed; ``scope``: which rows the groups hold (``last`` | ``all``); ``corpus``:
    ``{positions, texts}`` of the collision corpus, or None."""

    model: str
    source: str
    prompt: str
    tokens: list[str]
    target: str
    target_id: int
    contrast: str | None
    contrast_id: int | None
    scope: str
    metric: float
    logprob: float
    metric_all_zeroed: float
    logprob_all_zeroed: float
    layers: list[LayerLocate] = field(default_factory=list)
    corpus: dict | None = None

    def top_rows(self, n: int = 10) -> list[RowRead]:
        """The ``n`` last-position rows with the largest |contribution|, largest first."""
        rows = [r for l in self.layers for r in l.rows if r.contribution is not None]
        return sorted(rows, key=lambda r: -abs(r.contribution))[:n]

    def to_dict(self) -> dict:
        """JSON-ready: every field above; ``layers[i].rows`` / ``.groups`` as lists of dicts."""
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


# ------------------------------------------------------------------------ direct contributions
def _hook_names(model) -> list[str]:
    names = [model.layer_point_names()[-1]]
    for l in model.engram_layers:
        names += [f"blocks.{l}.engram.{h}" for h in ("hook_hash_ids", "hook_memory", "hook_gate", "hook_out")]
    if model.info.n_branches > 1:
        names += [f"blocks.{l}.{hc}.hook_h_res" for l in range(model.info.n_layers) for hc in ("hc_attn", "hc_mlp")]
    return names


def _readout_map(model, cache, layer: int, direction: torch.Tensor):
    """The frozen linear map from a write ``[n, M, d]`` into Engram layer ``layer``'s slot at the last
    position to its direct effect on the metric ``[n]`` (float64), as ``attribute`` computes it."""
    m = model.info.n_branches
    final = cache[model.layer_point_names()[-1]][0, -1].double().reshape(m, -1)
    carry = torch.eye(m, dtype=torch.float64, device=final.device)
    if m > 1:  # the write enters before hc_attn of its block, then every later mixing
        for l in range(layer, model.info.n_layers):
            for hc in ("hc_attn", "hc_mlp"):
                name = f"blocks.{l}.{hc}.hook_h_res"
                if name not in cache:
                    raise EngramInterpError(f"this {m}-stream model does not expose {name}, which locate needs")
                carry = cache[name][0, -1].double() @ carry

    def readout(v: torch.Tensor) -> torch.Tensor:  # [n, M, d] -> [n, d]
        return model.readout(v.unsqueeze(0) if m > 1 else v[:, 0].unsqueeze(0))[0]

    ref = readout(final.unsqueeze(0))  # [1, d]

    def apply(writes: torch.Tensor) -> torch.Tensor:
        r = readout(torch.einsum("ij,njd->nid", carry, writes))
        return model.final_norm_frozen(r, ref.expand_as(r)).double() @ direction

    return apply


def _layer_terms(model, cache, layer: int, direction: torch.Tensor) -> tuple[list[float], float, float, list[float]]:
    """``(row contributions [H], value_bias, conv, gate [M])`` at the last position (logits)."""
    heads = model.engram_heads(layer)
    w_v, b_v = model.engram_value_projection(layer)  # [d, d_mem], [d] | None
    m = model.info.n_branches
    e = cache[f"blocks.{layer}.engram.hook_memory"][0, -1].double()  # [d_mem]
    alpha = cache[f"blocks.{layer}.engram.hook_gate"][0, -1].double().reshape(m)  # [M]
    y = cache[f"blocks.{layer}.engram.hook_out"][0, -1].double().reshape(m, -1)  # [M, d]
    w = w_v.detach().to(e.device).double()
    v_rows = torch.stack([w[:, heads.columns(h)] @ e[heads.columns(h)] for h in range(heads.n_heads)])  # [H, d]
    row_writes = alpha[None, :, None] * v_rows[:, None, :]  # [H, M, d]
    bias = torch.zeros_like(y) if b_v is None else alpha[:, None] * b_v.detach().to(e.device).double()[None, :]
    conv = y - row_writes.sum(0) - bias  # what Y holds beyond the gated value: the short conv
    out = _readout_map(model, cache, layer, direction)(torch.cat([row_writes, bias[None], conv[None]])).tolist()
    return out[:-2], out[-2], out[-1], alpha.tolist()


def within_head_rows(model, layer: int, hash_ids: torch.Tensor) -> torch.Tensor:
    """``hook_hash_ids`` of Engram layer ``layer`` ``[..., H]`` -> the row each head reads within its own
    table ``[..., H]`` (long): the hook's ids less ``engram_heads(layer).id_offsets``."""
    offsets = torch.tensor(model.engram_heads(layer).id_offsets, device=hash_ids.device)
    return hash_ids.long() - offsets


@torch.no_grad()
def rows_read(model, tokens: torch.Tensor) -> dict[int, torch.Tensor]:
    """The table rows ``tokens`` ``[b, pos]`` read: ``{layer: [b, pos, H]}`` within-head rows per Engram
    layer (column h: hash head h, see ``EngramHeads``), one forward pass."""
    names = {f"blocks.{l}.engram.hook_hash_ids": l for l in model.engram_layers}
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names, return_type=None)
    return {l: within_head_rows(model, l, cache[n]) for n, l in names.items()}


# ----------------------------------------------------------------------------- causal tracing
@torch.no_grad()
def row_group_logprobs(model, tokens: torch.Tensor, keep: dict[int, torch.Tensor], target_id: int,
                       contrast_id: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``tokens`` ``[1, pos]`` once per mask with Engram rows zeroed: ``keep[layer]`` is a bool mask
    ``[g, pos, n_heads]`` (False = that head's row at that position reads zeros; a layer not in
    ``keep`` is untouched). Returns ``(log p(target) [g], metric [g])`` at the last position (nats,
    logits; metric = target logit minus the contrast's), float64."""
    g = next(iter(keep.values())).shape[0]
    hooks = []
    for layer, mask in keep.items():
        d_head = model.engram_heads(layer).d_head

        def hook(e: torch.Tensor, hook, mask=mask.to(tokens.device), d_head=d_head) -> torch.Tensor:
            return e * mask.repeat_interleave(d_head, dim=-1).to(e.dtype)  # [g, pos, d_mem]

        hooks.append((f"blocks.{layer}.engram.hook_memory", hook))
    logits = model.run_with_hooks(tokens.expand(g, -1), fwd_hooks=hooks)[:, -1].double()
    logp = torch.log_softmax(logits, -1)[:, target_id]
    metric = logits[:, target_id] - (logits[:, contrast_id] if contrast_id is not None else 0.0)
    return logp, metric


def _groups(model, ids: dict[int, torch.Tensor], scope: str) -> list[tuple[str, int, int | None, int | None, dict]]:
    """Row groups: ``(name, layer, order, head, {column: rows})`` per head, order and layer."""
    out = []
    for l, hid in ids.items():
        heads = model.engram_heads(l)
        picked = hid[-1:] if scope == "last" else hid  # [p, H]
        rows = {h: sorted(set(picked[:, h].tolist())) for h in range(heads.n_heads)}
        for n in range(2, heads.max_ngram_size + 1):
            cols = [h for h in range(heads.n_heads) if heads.order_head(h)[0] == n]
            for h in cols:
                out.append((f"L{l}.n{n}.h{heads.order_head(h)[1]}", l, n, heads.order_head(h)[1], {h: rows[h]}))
            out.append((f"L{l}.n{n}", l, n, None, {h: rows[h] for h in cols}))
        out.append((f"L{l}", l, None, None, rows))
    return out


def _mask(hid: torch.Tensor, rows: dict[int, list[int]]) -> torch.Tensor:
    """bool ``[pos, H]``: True where head h reads one of ``rows[h]``."""
    m = torch.zeros_like(hid, dtype=torch.bool)
    for h, rs in rows.items():
        m[:, h] = torch.isin(hid[:, h], torch.tensor(rs, dtype=hid.dtype, device=hid.device))
    return m


def _trace(model, tokens, ids, groups, t_id, c_id, batch: int = 16) -> tuple[list[GroupEffect], float, float]:
    """Every group zeroed and restored (batched); also the all-zeroed metrics."""
    zero_masks, keep_masks = [], []
    for _, l, _, _, rows in groups:
        m = _mask(ids[l], rows)
        zero_masks.append({k: (~m if k == l else torch.ones_like(m)) for k in ids})
        keep_masks.append({k: (m if k == l else torch.zeros_like(m)) for k in ids})
    masks = zero_masks + keep_masks + [{k: torch.zeros_like(v, dtype=torch.bool) for k, v in ids.items()}]
    logps, metrics = [], []
    for i in range(0, len(masks), batch):
        chunk = masks[i : i + batch]
        lp, mt = row_group_logprobs(model, tokens, {k: torch.stack([c[k] for c in chunk]) for k in ids}, t_id, c_id)
        logps += lp.tolist()
        metrics += mt.tolist()
    n = len(groups)
    effects = [GroupEffect(name=name, layer=l, order=o, head=k, n_rows=sum(len(r) for r in rows.values()),
                           logprob_zeroed=logps[i], logprob_restored=logps[n + i], metric_zeroed=metrics[i],
                           metric_restored=metrics[n + i])
               for i, (name, l, o, k, rows) in enumerate(groups)]
    return effects, logps[-1], metrics[-1]


# ---------------------------------------------------------------------------------- the call
def _ngram_text(model, raw: list[int], pos: int, order: int) -> str:
    from engram_interp.analysis.memory import START

    return "".join(model.decode_token(raw[p]) if p >= 0 else START for p in range(pos - order + 1, pos + 1))


@torch.no_grad()
def locate(model, prompt: str, target: str, contrast: str | None = None, *, scope: str = "last",
           tables=None, corpus: Iterable[str] | None = None, max_tokens: int | None = 20000, per_row: int = 5,
           name: str | None = None) -> LocateResult:
    """Locate the Engram rows behind the next-token prediction ``target`` after ``prompt`` (BOS
    prepended as in training); see the module docstring for every figure.

    ``target`` / ``contrast``: single tokens (leading space included). ``scope``: ``"last"`` (rows read
    at the last position) or ``"all"`` (rows read anywhere in the prompt: listed, and grouped for the
    causal tracing). Collisions need ``corpus`` (texts, at most ``max_tokens`` positions hashed) and a
    ``TableSource`` ``tables`` (default: ``engram_interp.memory.open_tables(model.info.source)``);
    ``per_row`` row-mates are listed per row. Returns a :class:`LocateResult` (logits, nats)."""
    if scope not in ("last", "all"):
        raise EngramInterpError(f"scope must be 'last' or 'all', not {scope!r}")
    if not model.engram_layers:
        raise EngramInterpError(f"this {model.info.kind} model has no Engram layers: there are no table rows to locate")
    tokens = check_prompt(model, prompt, "prompt")
    t_id = resolve_token(model, target, "target")
    c_id = resolve_token(model, contrast, "contrast") if contrast is not None else None
    if c_id is not None and c_id == t_id:
        raise EngramInterpError("target and contrast are the same token; the logit difference would be 0")
    for l in model.engram_layers:  # the accessors refuse a backend that cannot say how its memory is read
        model.engram_heads(l), model.engram_value_projection(l)
    comps, _, _, _ = attribute_ids(model, tokens, t_id, c_id)
    wanted = set(_hook_names(model))
    logits, cache = model.run_with_cache(tokens, names_filter=lambda n: n in wanted)
    last = logits[0, -1].double()
    w_u = model.unembed_weight()
    direction = w_u[:, t_id].double() - (w_u[:, c_id].double() if c_id is not None else 0.0)
    raw = tokens[0].tolist()
    ids = {}
    layers = []
    for l in model.engram_layers:
        heads = model.engram_heads(l)
        hid = within_head_rows(model, l, cache[f"blocks.{l}.engram.hook_hash_ids"])[0]
        ids[l] = hid  # [pos, H], within-head rows
        contribs, bias, conv, gate = _layer_terms(model, cache, l, direction)
        term = sum(c.contribution for c in comps if c.kind == "engram" and c.layer == l)
        positions = [len(raw) - 1] if scope == "last" else range(len(raw))
        rows = [RowRead(layer=l, position=p, order=heads.order_head(h)[0], head=heads.order_head(h)[1], column=h,
                        row=int(hid[p, h]), ngram=_ngram_text(model, raw, p, heads.order_head(h)[0]),
                        contribution=contribs[h] if p == len(raw) - 1 else None)
                for p in positions for h in range(heads.n_heads)]
        layers.append(LayerLocate(layer=l, gate=gate, engram_term=term, rows_sum=sum(contribs), value_bias=bias, conv=conv,
                                  unexplained=term - (sum(contribs) + bias + conv), rows=rows))
    effects, lp_zero, mt_zero = _trace(model, tokens, ids, _groups(model, ids, scope), t_id, c_id)
    for lay in layers:
        lay.groups = [g for g in effects if g.layer == lay.layer]
    corpus_info = None
    if corpus is not None:
        from engram_interp.analysis.locate_collisions import add_collisions

        corpus_info = add_collisions(model, raw, ids, layers, corpus, tables=tables, max_tokens=max_tokens, per_row=per_row)
    return LocateResult(
        model=name or model.info.name, source=model.info.source, prompt=prompt, tokens=model.to_str_tokens(tokens[0]),
        target=target, target_id=t_id, contrast=contrast, contrast_id=c_id, scope=scope,
        metric=float(last[t_id] - (last[c_id] if c_id is not None else 0.0)),
        logprob=float(torch.log_softmax(last, -1)[t_id]), metric_all_zeroed=mt_zero, logprob_all_zeroed=lp_zero,
        layers=layers, corpus=corpus_info)
