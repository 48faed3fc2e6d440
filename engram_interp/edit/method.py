"""The edit: a few steps of projected gradient descent on the Engram rows the facts read, nothing else.

For facts ``(prompt_i, target_i)`` (targets may be several tokens):

1. **Rows.** ``positions="last"``: the rows read at the positions whose logits predict the target's
   tokens (the prompt's last position, then each target token but the last); ``"all"``: also every
   earlier prompt position (BOS excluded: every text reads BOS's rows). Union over facts: the set S.
2. **Offsets.** One offset ``delta_r`` ``[d_head]`` per row r in S (``RowDelta``), added wherever the
   model reads r, exactly as writing ``row_r + delta_r`` into the table.
3. **Objective.** ``mean_i NLL(target_i | prompt_i) / len(target_i)`` + ``preserve`` x the mean
   KL(before || after) of the next-token distribution at the last position of every neighbour prompt
   (the facts' ``neighbours``: what must not move), minimised with Adam (``lr``) for at most ``steps``
   steps.
4. **Bound.** After each step every offset is clipped to ``||delta_r|| <= bound x`` the median row
   norm of r's head table (the scale of a typical row): an edit never writes a row far out of the
   table's range.
5. **Stop** once every fact's target leads each of its candidates by ``margin`` nats of summed
   log-probability (facts without candidates: the target is the greedy continuation), checked every
   ``check_every`` steps and after the last.

The result is an :class:`EditRecord`: old and new values of the rows in S; ``apply`` / ``revert``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from engram_interp.edit.rows import EditRecord, RowDelta, rows_of
from engram_interp.errors import EngramInterpError

__all__ = ["EditConfig", "edit_rows", "sequence_scores", "encode_pairs"]


@dataclass(frozen=True)
class EditConfig:
    """How :func:`edit_rows` edits (see the module docstring)."""

    steps: int = 60  # most gradient steps
    lr: float = 0.1  # Adam learning rate (table units)
    bound: float = 2.0  # largest ||delta|| per row, in median row norms of its head table
    positions: str = "last"  # "last" | "all": which positions' rows are edited
    margin: float = 1.0  # stop once each target leads every candidate by this many nats
    preserve: float = 1.0  # weight of the KL term on neighbour prompts
    check_every: int = 5  # steps between two checks of the stopping rule


def encode_pairs(model, pairs: Sequence[tuple[str, str]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(prompt, continuation)`` pairs -> ``(tokens [n, pos], starts [n], lengths [n])``: BOS + prompt +
    continuation, right-padded; ``starts[i]``: index of the continuation's first token; ``lengths[i]``:
    its number of tokens. A user error when a continuation is empty or a pair does not fit the context."""
    bos = [model.info.bos_token_id] if model.info.bos_token_id is not None else []
    seqs, starts, lens = [], [], []
    for prompt, cont in pairs:
        p, c = bos + model.encode(prompt), model.encode(cont)
        if not c or len(p) == 0:
            raise EngramInterpError(f"empty prompt or continuation in {prompt[:40]!r} -> {cont[:40]!r}")
        if len(p) + len(c) > model.info.max_seq_len:
            raise EngramInterpError(f"{prompt[:40]!r} + {cont[:40]!r} is longer than the model's {model.info.max_seq_len} tokens")
        seqs.append(p + c)
        starts.append(len(p))
        lens.append(len(c))
    width = max(len(s) for s in seqs)
    tokens = torch.full((len(seqs), width), model.info.pad_token_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        tokens[i, : len(s)] = torch.tensor(s)
    return tokens.to(model.device), torch.tensor(starts), torch.tensor(lens)


def _target_mask(tokens: torch.Tensor, starts: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
    """bool ``[n, pos]``: the positions whose logits predict a continuation token (start - 1 .. start + len - 2)."""
    pos = torch.arange(tokens.shape[1])[None, :]
    return ((pos >= starts[:, None] - 1) & (pos < (starts + lens - 1)[:, None])).to(tokens.device)


def sequence_scores(model, tokens: torch.Tensor, starts: torch.Tensor, lens: torch.Tensor,
                    hooks: list | None = None) -> torch.Tensor:
    """Summed log-probability (nats, float32, differentiable under ``hooks``) of each continuation:
    ``[n]``."""
    logits = model.run_with_hooks(tokens, fwd_hooks=hooks or [])  # [n, pos, vocab]
    mask = _target_mask(tokens, starts, lens)
    nxt = torch.roll(tokens, -1, dims=1)
    lp = F.log_softmax(logits.float(), -1).gather(-1, nxt[..., None])[..., 0]
    return (lp * mask).sum(-1)


def _bounds(model, delta: RowDelta, bound: float) -> dict[int, torch.Tensor]:
    out = {}
    for l in delta.layers:
        heads = model.engram_heads(l)
        med = {}
        for h in sorted({k[1] for k in delta.keys if k[0] == l}):
            rows = torch.arange(heads.head_sizes[h])
            med[h] = float(model.engram_rows(l, h, rows).double().norm(dim=-1).median())
        out[l] = torch.tensor([bound * med[k[1]] for k in delta.keys if k[0] == l], device=model.device)
    return out


def _leads(scores: torch.Tensor, groups: list[list[int]], margin: float) -> torch.Tensor:
    """bool per fact: its target (first index of its group) leads every other member by ``margin``."""
    return torch.tensor([len(g) == 1 or bool(scores[g[0]] - scores[g[1:]].max() >= margin) for g in groups])


def edit_rows(model, facts: Sequence[dict], config: EditConfig = EditConfig(),
              progress: Callable[[int, int], None] | None = None) -> tuple[EditRecord, dict]:
    """Compute the row edit that writes ``facts`` (``{prompt, target, candidates?, neighbours?}``) into the
    model's Engram tables (the model is left unchanged). Returns ``(record, trace)``: the
    :class:`EditRecord`, and ``{steps, loss: [per step], converged, rows}``."""
    if config.positions not in ("last", "all"):
        raise EngramInterpError(f"positions must be 'last' or 'all', not {config.positions!r}")
    tokens, starts, lens = encode_pairs(model, [(f["prompt"], f["target"]) for f in facts])
    keep = _target_mask(tokens, starts, lens)
    if config.positions == "all":
        keep |= (torch.arange(tokens.shape[1], device=tokens.device)[None] >= 1) & (
            torch.arange(tokens.shape[1], device=tokens.device)[None] < starts.to(tokens.device)[:, None])
    delta = RowDelta(model, rows_of(model, tokens, keep))
    bound = _bounds(model, delta, config.bound)
    # candidates: the target first, then the others (each fact's group of rows in the check batch)
    pairs, groups = [], []
    for f in facts:
        others = [c for c in (f.get("candidates") or []) if c != f["target"]]
        groups.append(list(range(len(pairs), len(pairs) + 1 + len(others))))
        pairs += [(f["prompt"], f["target"])] + [(f["prompt"], c) for c in others]
    check = encode_pairs(model, pairs)
    greedy = [i for i, f in enumerate(facts) if not f.get("candidates")]
    neigh = [n if isinstance(n, str) else n["prompt"] for f in facts for n in (f.get("neighbours") or [])]
    n_tok = n_ref = None
    if neigh and config.preserve > 0:
        n_tok = model.to_tokens(neigh)
        n_last = (n_tok != model.info.pad_token_id).sum(1) - 1 if model.info.pad_token_id is not None else None
        with torch.no_grad():
            n_ref = F.log_softmax(model(n_tok)[torch.arange(len(neigh)), n_last].float(), -1)
    def done() -> bool:
        with torch.no_grad():
            ok = _leads(sequence_scores(model, *check, delta.hooks()), groups, config.margin)
            if greedy:
                ok[greedy] = _greedy_hit(model, tokens[greedy], starts[greedy], lens[greedy], delta)
        return bool(ok.all())

    def loss_now() -> torch.Tensor:
        loss = -(sequence_scores(model, tokens, starts, lens, delta.hooks()) / lens.to(model.device)).mean()
        if n_tok is not None:
            logits = model.run_with_hooks(n_tok, fwd_hooks=delta.hooks())[torch.arange(len(neigh)), n_last]
            loss = loss + config.preserve * F.kl_div(F.log_softmax(logits.float(), -1), n_ref, log_target=True,
                                                     reduction="batchmean")
        return loss

    opt = _Adam(list(delta.delta.values()), config.lr)
    losses, converged = [], False
    flags = [p.requires_grad for p in model.parameters()]
    with model.exclusive():
        try:
            for p in model.parameters():
                p.requires_grad_(False)
            for step in range(config.steps + 1):
                if (step % config.check_every == 0 or step == config.steps) and done():
                    converged = True
                    break
                if step == config.steps:
                    break
                loss = loss_now()
                grads = torch.autograd.grad(loss, opt.params)
                opt.step(grads)
                delta.project(bound)
                losses.append(loss.item())
                if progress is not None:
                    progress(step + 1, config.steps)
        finally:
            for p, f in zip(model.parameters(), flags):
                p.requires_grad_(f)
    if not all(math.isfinite(x) for x in losses):
        raise EngramInterpError("the edit diverged (non-finite loss); lower --lr")
    return delta.record(), {"steps": len(losses), "loss": losses, "converged": converged, "rows": len(delta.keys)}


class _Adam:
    """Adam (Kingma & Ba, betas 0.9 / 0.999, eps 1e-8) on a few tensors; ``torch.optim`` would import
    torch._dynamo, which costs seconds on a cold start."""

    def __init__(self, params: list[torch.Tensor], lr: float):
        self.params, self.lr, self.t = params, lr, 0
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]

    @torch.no_grad()
    def step(self, grads: Sequence[torch.Tensor]) -> None:
        self.t += 1
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            m.mul_(0.9).add_(g, alpha=0.1)
            v.mul_(0.999).addcmul_(g, g, value=0.001)
            step = self.lr / (1 - 0.9 ** self.t)
            p.sub_(step * m / ((v / (1 - 0.999 ** self.t)).sqrt() + 1e-8))


@torch.no_grad()
def _greedy_hit(model, tokens, starts, lens, delta: RowDelta) -> torch.Tensor:
    logits = model.run_with_hooks(tokens, fwd_hooks=delta.hooks())
    mask = _target_mask(tokens, starts, lens)
    hit = (logits.argmax(-1) == torch.roll(tokens, -1, dims=1)) | ~mask
    return hit.all(-1).cpu()
