"""Scoring task items from packed forward passes (the engine behind ``ablation.score_items``).

Each item yields continuations: the answer (greedy exact match) or every candidate (rank by summed
log-prob). A continuation ``c`` after prompt ``p`` is read from the logits at the positions of
``p + c[:-1]``; in a causal model those logits depend on nothing after them, so every input that
starts with ``p + c[:-1]`` gives the same numbers. The plan therefore keeps only the distinct
input sequences that are not a prefix of another one (all one-token candidates of a prompt share
the prompt's row; an item's prompt is computed once, not once per candidate), sorts them by length
and packs them into batches of at most ``batch_size * min(max_seq_len, 1024)`` padded tokens.
Logits are computed only at the scored positions (unembedding at the last layer point with
``model.lens_logits``, which equals the model's own head), and the per-item rules run as tensor
reductions: no Python loop over tokens.

Scores equal those of scoring each (prompt, continuation) pair in its own padded row (the test
keeps that reference), up to float rounding of the log-probs (~1e-6 nats).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from engram_interp.errors import EngramInterpError

__all__ = ["ScoringPlan", "plan_scoring", "run_plan"]

Progress = Callable[[int, int], None]  # (forward passes done, total)


@dataclass
class ScoringPlan:
    """What to run and where to read it. ``rows``: distinct input sequences (BOS included), longest
    first; ``batches``: row indices per forward pass. Per scored token (a "point"): ``point_row``,
    ``point_pos`` (position whose logits predict it), ``point_target`` (its id) and ``point_cont``
    (its continuation). Per continuation: ``cont_item`` and ``cont_answer`` (is it the gold one).
    ``item_ranked``: True where the item is scored by rank among candidates."""

    rows: list[list[int]]
    batches: list[list[int]]
    point_row: torch.Tensor
    point_pos: torch.Tensor
    point_target: torch.Tensor
    point_cont: torch.Tensor
    cont_item: torch.Tensor
    cont_answer: torch.Tensor
    item_ranked: torch.Tensor
    pad_id: int

    @property
    def n_forwards(self) -> int:
        return len(self.batches)

    @property
    def n_forwards_here(self) -> int:
        """Forward passes this process runs (its share under ``torchrun``; all of them otherwise)."""
        from engram_interp.analysis._dist import rank, world_size

        return len(range(rank(), len(self.batches), world_size()))

    @property
    def n_tokens(self) -> int:
        """Padded tokens over all forward passes of one run of the plan."""
        return sum(len(b) * len(self.rows[b[0]]) for b in self.batches)


def _continuation(model, prompt_ids: list[int], cont: str, prompt: str) -> tuple[list[int], int, list[int]]:
    """(input ids, position of the first scored logit, target ids) of one (prompt, continuation)."""
    c = model.encode(cont)
    if not c:
        raise EngramInterpError(f"empty answer/candidate for prompt {prompt[:40]!r}")
    full = (prompt_ids + c)[-model.info.max_seq_len:]
    start = len(full) - len(c)
    if start < 1:
        raise EngramInterpError("an answer is longer than the model's context")
    return full[:-1], start - 1, full[start:]


def plan_scoring(model, items: Sequence[dict], batch_size: int = 16) -> ScoringPlan:
    """Tokenize ``items`` and lay out the packed forward passes that score them all. Returns a ScoringPlan."""
    bos = model.info.bos_token_id
    seqs: list[tuple[int, ...]] = []
    reads: list[tuple[int, int, list[int]]] = []  # (seq index, first logit position, targets)
    cont_item, cont_answer, item_ranked = [], [], []
    seq_index: dict[tuple[int, ...], int] = {}
    for i, it in enumerate(items):
        p = ([bos] if bos is not None else []) + model.encode(it["prompt"])
        cands = it.get("candidates") or None
        item_ranked.append(cands is not None)
        for cont in (cands or [it["answer"]]):
            inp, pos, tgt = _continuation(model, p, cont, it["prompt"])
            key = tuple(inp)
            if key not in seq_index:
                seq_index[key] = len(seqs)
                seqs.append(key)
            reads.append((seq_index[key], pos, tgt))
            cont_item.append(i)
            cont_answer.append(cont == it["answer"])
    # a sequence that is a prefix of another is read from the longer one: in sorted order a prefix
    # of anything is a prefix of its successor, so one backward sweep finds each one's longest row
    order = sorted(range(len(seqs)), key=lambda k: seqs[k])
    owner = list(range(len(seqs)))
    for a, b in zip(reversed(order[:-1]), reversed(order[1:])):
        sa, sb = seqs[a], seqs[b]
        if len(sa) <= len(sb) and sb[: len(sa)] == sa:
            owner[a] = owner[b]
    kept = sorted({owner[k] for k in range(len(seqs))}, key=lambda k: (-len(seqs[k]), seqs[k]))
    row_of = {k: r for r, k in enumerate(kept)}
    rows = [list(seqs[k]) for k in kept]
    budget = max(1, batch_size) * min(model.info.max_seq_len, 1024)
    batches: list[list[int]] = []
    for r, row in enumerate(rows):  # longest first: the first row of a batch sets its width
        if batches and (len(batches[-1]) + 1) * len(rows[batches[-1][0]]) <= budget:
            batches[-1].append(r)
        else:
            batches.append([r])
    pr, pp, pt, pc = [], [], [], []
    for ci, (k, pos, tgt) in enumerate(reads):
        r = row_of[owner[k]]
        pr += [r] * len(tgt)
        pp += range(pos, pos + len(tgt))
        pt += tgt
        pc += [ci] * len(tgt)
    long = dict(dtype=torch.long)
    return ScoringPlan(rows=rows, batches=batches, point_row=torch.tensor(pr, **long),
                       point_pos=torch.tensor(pp, **long), point_target=torch.tensor(pt, **long),
                       point_cont=torch.tensor(pc, **long), cont_item=torch.tensor(cont_item, **long),
                       cont_answer=torch.tensor(cont_answer, dtype=torch.bool),
                       item_ranked=torch.tensor(item_ranked, dtype=torch.bool), pad_id=model.info.pad_token_id)


@torch.no_grad()
def _point_scores(model, plan: ScoringPlan, progress: Progress | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob (float32) and greedy hit (bool) of every scored token, ``[n_points]`` each, CPU.

    Under ``torchrun`` each process runs every world-size-th forward pass and the points are summed
    across processes (each point is written by exactly one), so every process returns the whole."""
    from engram_interp.analysis import _dist

    last = model.layer_point_names()[-1]
    lp = torch.zeros(len(plan.point_row), dtype=torch.float32)
    hit = torch.zeros(len(plan.point_row), dtype=torch.bool)
    batch_of_row = torch.empty(len(plan.rows), dtype=torch.long)
    local_of_row = torch.empty(len(plan.rows), dtype=torch.long)
    for b, rows in enumerate(plan.batches):
        batch_of_row[rows] = b
        local_of_row[rows] = torch.arange(len(rows))
    point_batch = batch_of_row[plan.point_row]
    by_batch = torch.argsort(point_batch, stable=True)
    bounds = torch.searchsorted(point_batch[by_batch], torch.arange(len(plan.batches) + 1)).tolist()
    mine = list(_dist.shard(range(len(plan.batches))))
    for done, b in enumerate(mine, 1):
        rows = plan.batches[b]
        width = len(plan.rows[rows[0]])
        tokens = torch.full((len(rows), width), plan.pad_id, dtype=torch.long)
        for j, r in enumerate(rows):
            tokens[j, : len(plan.rows[r])] = torch.tensor(plan.rows[r], dtype=torch.long)
        _, cache = model.run_with_cache(tokens.to(model.device), names_filter=lambda n: n == last, return_type=None)
        pts = by_batch[bounds[b]:bounds[b + 1]]
        dev = cache[last].device
        h = cache[last][local_of_row[plan.point_row[pts]].to(dev), plan.point_pos[pts].to(dev)]  # [n, d] / [n, M, d]
        del cache
        logits = model.lens_logits(h.unsqueeze(0))[0]
        target = plan.point_target[pts].to(dev)
        lp[pts] = F.log_softmax(logits.float(), dim=-1).gather(-1, target[:, None])[:, 0].cpu()
        hit[pts] = (logits.argmax(-1) == target).cpu()
        if progress is not None:
            progress(done, len(mine))
    if _dist.dist_active():
        hits = hit.double()
        _dist.all_reduce_sum_([lp, hits])
        hit = hits > 0.5
    return lp, hit


def run_plan(model, plan: ScoringPlan, progress: Progress | None = None) -> torch.Tensor:
    """Run the plan's forward passes (under whatever intervention the caller holds) and apply the
    scoring rules: 1.0/0.0 per item, ``[n_items]`` float64, CPU. ``progress(done, total)`` after
    each forward pass."""
    lp, hit = _point_scores(model, plan, progress)
    n_items, n_cont = len(plan.item_ranked), len(plan.cont_item)
    cont_lp = torch.zeros(n_cont, dtype=torch.float64).index_add_(0, plan.point_cont, lp.double())
    cont_miss = torch.zeros(n_cont, dtype=torch.long).index_add_(0, plan.point_cont, (~hit).long())
    gold = plan.cont_answer
    gold_lp = torch.full((n_items,), float("nan"), dtype=torch.float64).index_copy_(
        0, plan.cont_item[gold], cont_lp[gold])
    gold_exact = torch.zeros(n_items, dtype=torch.bool).index_copy_(0, plan.cont_item[gold], cont_miss[gold] == 0)
    other_max = torch.full((n_items,), -float("inf"), dtype=torch.float64).scatter_reduce_(
        0, plan.cont_item[~gold], cont_lp[~gold], reduce="amax")
    ranked_ok = gold_lp > other_max  # strictly highest; ties count as wrong; no other candidate: correct
    return torch.where(plan.item_ranked, ranked_ok, gold_exact).double()
