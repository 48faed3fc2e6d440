"""One task-suite item seen closely: what the ablation scored, with the full model and with Engram
suppressed (docs/ANALYSES.md section 4).

For a multiple-choice item every candidate's summed log-probability after the prompt (the rule the
ablation score uses: correct when the answer scores strictly highest); for an exact-match item the
answer's own tokens, each with its probability and whether it is the greedy choice. Uses only the
model interface (``encode``, ``decode_token``, forward, ``engram_suppressed``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from engram_interp.errors import EngramInterpError

__all__ = ["CandidateScore", "item_candidates"]


@dataclass
class CandidateScore:
    """One scored continuation: its text, its tokens (display strings), the summed log-probability
    (nats) after the prompt and ``prob = exp(logprob)``, for the full model and with Engram
    suppressed; ``greedy_full``/``greedy_ablated``: every token is the argmax (exact-match rule)."""

    text: str
    tokens: list[str]
    is_answer: bool
    logprob_full: float
    logprob_ablated: float
    greedy_full: bool
    greedy_ablated: bool

    @property
    def prob_full(self) -> float:
        return math.exp(self.logprob_full)

    @property
    def prob_ablated(self) -> float:
        return math.exp(self.logprob_ablated)


def _score(model, prompt_ids: list[int], cont: list[int]) -> tuple[float, bool]:
    seq = torch.tensor([prompt_ids + cont], dtype=torch.long, device=model.device)
    logp = F.log_softmax(model(seq)[0].float(), dim=-1)  # [pos, vocab]
    start = len(prompt_ids)
    rows = logp[start - 1: start - 1 + len(cont)]
    target = torch.tensor(cont, device=rows.device)
    return float(rows.gather(-1, target[:, None]).sum()), bool((rows.argmax(-1) == target).all())


@torch.no_grad()
def item_candidates(model, item: dict, layers: list[int] | None = None) -> list[CandidateScore]:
    """Score every candidate of ``item`` (``{"prompt", "answer", "candidates"?}``; without candidates
    only the answer) with the full model and with Engram suppressed at ``layers`` (default all).
    Returns one :class:`CandidateScore` per candidate, in the item's order. A user error for an
    empty continuation or a prompt longer than the model's context."""
    bos = model.info.bos_token_id
    prompt = ([bos] if bos is not None else []) + model.encode(item["prompt"])
    conts = list(item.get("candidates") or [item["answer"]])
    out = []
    for text in conts:
        ids = model.encode(text)
        if not ids:
            raise EngramInterpError(f"empty candidate {text!r} for prompt {item['prompt'][:40]!r}")
        if len(prompt) + len(ids) > model.info.max_seq_len:
            raise EngramInterpError("the prompt and its answer are longer than the model's context")
        lp_full, g_full = _score(model, prompt, ids)
        if model.engram_layers:
            with model.engram_suppressed(layers):
                lp_abl, g_abl = _score(model, prompt, ids)
        else:
            lp_abl, g_abl = lp_full, g_full
        out.append(CandidateScore(text=text, tokens=[model.decode_token(i) for i in ids], is_answer=text == item["answer"],
                                  logprob_full=lp_full, logprob_ablated=lp_abl, greedy_full=g_full, greedy_ablated=g_abl))
    return out
