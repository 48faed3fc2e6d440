"""Direct logit attribution (DLA) and the target token through the layers.

DLA splits the model's final logit of a target token (or the difference target - contrast) at the last
position into what each component wrote into the residual stream: the embedding, every Engram
layer's Y, every attention layer, every FFN / MoE layer (or each routed expert it chose, plus its
shared experts). The final norm is frozen at the last position (``model.final_norm_frozen``: its
scale taken from the real final stream), which makes the head a linear map, so the contributions add
up exactly: ``sum(contributions) + remainder == logit``. ``remainder`` holds the bias terms (the
unembedding bias, a LayerNorm's bias) and anything in the stream the hooks do not see; it is 0 for
our bias-free models.

With hyper-connections (mHC, ``n_branches = M > 1``) the stream is ``M x d``; between sublayers it is
mixed by ``H_res`` and a sublayer writes ``H_post[m] * out`` into stream m. Freezing every ``H_res``
/ ``H_post`` at the values of the run (hooks ``hc_attn|hc_mlp.hook_h_res|hook_h_post``), each write is
carried through all later mixings and the head's readout exactly; an Engram layer adds its Y to
every stream, so each stream's part of Y is its own component (``L1.engram.b0`` ...). See
docs/ATTRIBUTION.md.

Everything here uses only the model interface (engram_interp/interface.py) and the hook names of
docs/HOOKS.md, so it works on every backend. One forward per call: memory does not grow with
anything but the prompt.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Sequence

import torch

from engram_interp.errors import EngramInterpError

__all__ = ["Component", "Attribution", "direct_logit_attribution", "attribute_ids", "attribute_batch", "resolve_token", "TargetTrace",
           "target_through_layers", "check_prompt", "check_attribution_inputs", "attribution_hooks"]


def check_prompt(model, text: str, what: str = "text") -> torch.Tensor:
    """``text`` -> tokens ``[1, pos]`` (BOS prepended when the model has one); a one-line user error
    when it is not a non-empty string."""
    if not isinstance(text, str) or not text.strip():
        raise EngramInterpError(f"{what} is empty: give the prompt whose next token you want to explain")
    return model.to_tokens(text)


def resolve_token(model, token: str, what: str = "target") -> int:
    """The id of ``token`` (a string such as ``" Paris"``, leading space included) that must be exactly
    one token of the model's vocabulary. Returns the id; a one-line user error otherwise."""
    if not isinstance(token, str) or token == "":
        raise EngramInterpError(f"{what} is empty: give one token such as ' Paris' (leading space included)")
    ids = model.encode(token)
    if len(ids) != 1:
        pieces = ", ".join(repr(model.decode_token(i)) for i in ids)
        raise EngramInterpError(
            f"{what} {token!r} is {len(ids)} tokens for this tokenizer ({pieces}); give a single token"
        )
    if model.decode_token(ids[0]).strip() != token.strip():  # e.g. mapped to an unknown-token id
        raise EngramInterpError(
            f"{what} {token!r} is not in the vocabulary (it encodes to {model.decode_token(ids[0])!r})"
        )
    return ids[0]


@dataclass
class Component:
    """One writer into the residual stream and its direct effect on the logit (difference), in logits.
    ``kind``: embed | engram | attn | mlp | expert | shared; ``layer`` the block (None for embed);
    ``branch`` the mHC stream of an Engram write (None otherwise); ``expert`` the routed expert id."""

    name: str
    kind: str
    contribution: float
    layer: int | None = None
    branch: int | None = None
    expert: int | None = None


@dataclass
class Attribution:
    """DLA at the last position of ``text``. ``logit``: the model's own final logit of ``target`` (minus
    that of ``contrast`` when given); ``components``: the direct contributions (logits);
    ``remainder``: bias terms + what the hooks do not see (0 for bias-free models), so that
    ``sum(contributions) + remainder == logit`` up to ``unexplained`` (float rounding only).
    ``probability`` of the target at the last position; ``source`` the model's file."""

    model: str
    source: str
    text: str
    tokens: list[str]
    target: str
    target_id: int
    contrast: str | None
    contrast_id: int | None
    logit: float
    probability: float
    components: list[Component] = field(default_factory=list)
    remainder: float = 0.0
    unexplained: float = 0.0

    def total(self) -> float:
        """sum(contributions) + remainder (logits): equals ``logit`` up to rounding."""
        return sum(c.contribution for c in self.components) + self.remainder

    def to_dict(self) -> dict:
        """JSON-ready: target, contrast, logit, components [{name, contribution, ...}], remainder, source, ..."""
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


def attribution_hooks(model, per_expert: bool = False) -> list[str]:
    """The hooks the direct logit attribution of ``model`` reads (checked before any forward pass)."""
    n, m = model.info.n_layers, model.info.n_branches
    names = ["hook_embed", model.layer_point_names()[-1]]
    for l in range(n):
        names += [f"blocks.{l}.hook_attn_out", f"blocks.{l}.hook_mlp_out"]
        if l in model.info.engram_layers:
            names.append(f"blocks.{l}.engram.hook_out")
        if m > 1:
            names += [f"blocks.{l}.{hc}.{h}" for hc in ("hc_attn", "hc_mlp") for h in ("hook_h_res", "hook_h_post")]
        if per_expert and l in model.info.moe_layers:
            names += [f"blocks.{l}.mlp.hook_expert_ids", f"blocks.{l}.mlp.hook_expert_out"]
    return names


def _writes(model, cache, row: int, pos: int, per_expert: bool) -> tuple[list[Component], list[torch.Tensor], torch.Tensor]:
    """Components and their writes at ``pos`` carried to the final stream (``[M, d]``, float64), and
    the final stream itself. Plain residual: M = 1."""
    info = model.info
    m = info.n_branches
    home = cache["hook_embed"].device

    def get(name: str) -> torch.Tensor:
        if name not in cache and ".hc_" in name:
            raise EngramInterpError(
                f"direct logit attribution of a {m}-stream model needs its stream-mixing coefficients (hooks "
                f"blocks.{{l}}.hc_attn|hc_mlp.hook_h_res|hook_h_post, docs/HOOKS.md); this {info.kind} model does not expose them"
            )
        if name not in cache:
            raise EngramInterpError(f"this {info.kind} model has no hook {name!r}, which the attribution needs")
        return cache[name][row, pos].to(home, torch.float64)  # one device, whichever layer wrote it

    comps: list[Component] = []
    vecs: list[torch.Tensor] = []  # each [M, d]

    def add(comp: Component, vec: torch.Tensor) -> None:
        comps.append(comp)
        vecs.append(vec)

    def mix(hc: str, l: int) -> torch.Tensor:  # carry every earlier write through H_res; return H_post [M]
        h_res = get(f"blocks.{l}.{hc}.hook_h_res")
        for i, v in enumerate(vecs):
            vecs[i] = h_res @ v
        return get(f"blocks.{l}.{hc}.hook_h_post")

    ones = torch.ones(m, 1, dtype=torch.float64, device=cache["hook_embed"].device)
    add(Component("embed", "embed", 0.0), ones * get("hook_embed"))
    for l in range(info.n_layers):
        if l in info.engram_layers:
            y = get(f"blocks.{l}.engram.hook_out").reshape(m, -1)
            for b in range(m):
                part = torch.zeros_like(y)
                part[b] = y[b]
                name = f"L{l}.engram" if m == 1 else f"L{l}.engram.b{b}"
                add(Component(name, "engram", 0.0, layer=l, branch=None if m == 1 else b), part)
        post = mix("hc_attn", l) if m > 1 else ones[:, 0]
        add(Component(f"L{l}.attn", "attn", 0.0, layer=l), post[:, None] * get(f"blocks.{l}.hook_attn_out"))
        post = mix("hc_mlp", l) if m > 1 else ones[:, 0]
        mlp_out = get(f"blocks.{l}.hook_mlp_out")
        if per_expert and l in info.moe_layers:
            ids = get(f"blocks.{l}.mlp.hook_expert_ids").long().tolist()
            outs = get(f"blocks.{l}.mlp.hook_expert_out")  # [top_k, d]
            for e, out in zip(ids, outs):
                add(Component(f"L{l}.expert{e}", "expert", 0.0, layer=l, expert=e), post[:, None] * out)
            add(Component(f"L{l}.shared", "shared", 0.0, layer=l), post[:, None] * (mlp_out - outs.sum(0)))
        else:
            add(Component(f"L{l}.mlp", "mlp", 0.0, layer=l), post[:, None] * mlp_out)
    final = get(model.layer_point_names()[-1]).reshape(m, -1)
    return comps, vecs, final


def _sum_tolerance(dtype: torch.dtype, logit: float, contribs: Sequence[float]) -> float:
    """How far the components may miss the model's logit: 1e-3 relative in float32/64; in a half
    precision (bf16/fp16) the model's own logits carry its rounding, so also 4 eps x the summed size
    of the components (bf16: eps = 2^-7)."""
    half = 4 * torch.finfo(dtype).eps * sum(abs(c) for c in contribs) if dtype in (torch.bfloat16, torch.float16) else 0.0
    return max(1e-3 * max(1.0, abs(logit)), half)


@torch.no_grad()
def attribute_batch(
    model, tokens: torch.Tensor, last: Sequence[int], target_ids: Sequence[int],
    contrast_ids: Sequence[int | None], *, per_expert: bool = False,
) -> list[tuple[list[Component], float, float, float]]:
    """DLA for every row of a right-padded batch ``tokens`` ``[b, pos]`` at position ``last[row]`` with
    that row's target / contrast id, in one forward. Returns per row ``(components, logit, probability
    of the target, remainder)`` (logits; see :func:`direct_logit_attribution`)."""
    if per_expert and not model.info.moe_layers:
        raise EngramInterpError(f"this {model.info.kind} model has no MoE layers to split into experts")
    wanted = set(attribution_hooks(model, per_expert))
    logits, cache = model.run_with_cache(tokens, names_filter=lambda n: n in wanted)
    w_u = model.unembed_weight()  # [d, vocab]: only the target / contrast columns go to float64
    bias = model.unembed_bias()
    out = []
    for row, (pos, t_id, c_id) in enumerate(zip(last, target_ids, contrast_ids)):
        comps, vecs, final = _writes(model, cache, row, pos, per_expert)
        direction = (w_u[:, t_id].double() - (w_u[:, c_id].double() if c_id is not None else 0.0)).to(final.device)
        bias_term = 0.0 if bias is None else float(bias[t_id] - (bias[c_id] if c_id is not None else 0.0))

        def readout(v: torch.Tensor) -> torch.Tensor:  # [n, M, d] -> [n, d]
            return model.readout(v.unsqueeze(0) if model.info.n_branches > 1 else v[:, 0].unsqueeze(0))[0]

        ref_stream = readout(final.unsqueeze(0))  # [1, d]
        stacked = torch.stack(vecs)  # [n, M, d]
        leftover = final - stacked.sum(0)  # what no hook wrote (0 for our models)
        rows = readout(torch.cat([stacked, leftover.unsqueeze(0)]))
        normed = model.final_norm_frozen(rows, ref_stream.expand_as(rows))
        contribs = (normed.to(direction.device, torch.float64) @ direction).tolist()
        norm_bias = model.final_norm(ref_stream) - model.final_norm_frozen(ref_stream, ref_stream)  # LayerNorm's beta
        for comp, value in zip(comps, contribs):
            comp.contribution = float(value)
        remainder = contribs[-1] + float(norm_bias.to(direction.device, torch.float64)[0] @ direction) + bias_term
        final_logits = logits[row, pos].double()
        logit = float(final_logits[t_id] - (final_logits[c_id] if c_id is not None else 0.0))
        total = sum(contribs[:-1]) + remainder
        if abs(logit - total) > _sum_tolerance(logits.dtype, logit, contribs):
            raise EngramInterpError(
                f"the components of this {model.info.kind} model do not add up to its logit ({total:.4f} vs "
                f"{logit:.4f}): its head is not linear in the stream, so there is no exact attribution"
            )
        out.append((comps, logit, float(torch.softmax(final_logits, -1)[t_id]), remainder))
    return out


def attribute_ids(
    model, tokens: torch.Tensor, target_id: int, contrast_id: int | None = None, *, per_expert: bool = False,
) -> tuple[list[Component], float, float, float]:
    """DLA on token ids: ``tokens`` ``[1, pos]``, the last position explained. Returns ``(components,
    logit, probability of the target, remainder)`` (logits; see :func:`direct_logit_attribution`)."""
    return attribute_batch(model, tokens, [tokens.shape[1] - 1], [target_id], [contrast_id], per_expert=per_expert)[0]


def check_attribution_inputs(model, text: str, target: str, contrast: str | None = None, what: str = "text"
                             ) -> tuple[torch.Tensor, int, int | None]:
    """The prompt's tokens and the target's / contrast's ids, or a one-line user error (an empty or
    overlong prompt, a target that is not one token, a contrast equal to it); no forward pass."""
    tokens = check_prompt(model, text, what)
    t_id = resolve_token(model, target, "target")
    c_id = resolve_token(model, contrast, "contrast") if contrast is not None else None
    if c_id is not None and c_id == t_id:
        raise EngramInterpError("target and contrast are the same token; the logit difference would be 0")
    return tokens, t_id, c_id


def direct_logit_attribution(
    model, text: str, target: str, contrast: str | None = None, *, per_expert: bool = False,
    name: str | None = None,
) -> Attribution:
    """DLA of the next-token logit after ``text`` (BOS prepended as in training).

    ``target`` / ``contrast``: single tokens (leading space included). ``per_expert``: split each MoE
    layer into its chosen routed experts and the shared experts. Returns an :class:`Attribution`
    whose contributions (logits) plus ``remainder`` equal the model's own logit (difference).
    """
    tokens, t_id, c_id = check_attribution_inputs(model, text, target, contrast)
    comps, logit, prob, remainder = attribute_ids(model, tokens, t_id, c_id, per_expert=per_expert)
    total = sum(c.contribution for c in comps) + remainder
    return Attribution(
        model=name or model.info.name, source=model.info.source, text=text,
        tokens=model.to_str_tokens(tokens[0]), target=target, target_id=t_id, contrast=contrast, contrast_id=c_id,
        logit=logit, probability=prob, components=comps, remainder=remainder, unexplained=logit - total,
    )


@dataclass
class TargetTrace:
    """The target token read by the LogitLens at every layer point (0 .. n_layers) of the last position:
    ``probability`` (0..1), ``rank`` (1 = top) and ``logit`` per point; ``layers`` the point labels."""

    model: str
    target: str
    target_id: int
    layers: list[int]
    probability: list[float]
    rank: list[int]
    logit: list[float]

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def target_through_layers(
    models: Sequence | dict, text: str, target: str, names: Sequence[str] | None = None,
) -> list[TargetTrace]:
    """Probability and rank of ``target`` after ``text`` at every layer point, for each model (a model,
    a list, or ``{name: model}``). The lens is ``model.lens_logits`` (final norm statistics recomputed
    on each point). Returns one :class:`TargetTrace` per model, in order; the last point is the model's
    own prediction."""
    if isinstance(models, dict):
        named = list(models.items())
    else:
        models = list(models) if isinstance(models, (list, tuple)) else [models]
        named = list(zip(names or [m.info.name for m in models], models))
    out = []
    for name, model in named:
        tokens = check_prompt(model, text)
        t_id = resolve_token(model, target, "target")
        points = model.layer_point_names()
        wanted = set(points)
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in wanted)
        probs, ranks, logits = [], [], []
        for point in points:
            lens = model.lens_logits(cache[point][:, -1:])[0, 0].double()
            probs.append(float(torch.softmax(lens, -1)[t_id]))
            ranks.append(int((lens > lens[t_id]).sum()) + 1)
            logits.append(float(lens[t_id]))
        out.append(TargetTrace(model=name, target=target, target_id=t_id, layers=list(range(len(points))),
                               probability=probs, rank=ranks, logit=logits))
    return out
