"""Engram-ablation sensitivity (docs/ANALYSES.md section 4): task suites scored with the full model and with
the Engram output suppressed (Y = 0, or Y = its mean over a reference corpus) at all Engram layers
and at each alone. Retained % = 100 * ablated score / full score, with a paired Poisson-bootstrap
95% CI over examples (replicate weights keyed by example index: sharded runs give the same CIs).

Suite items (JSONL, read with ``engram_interp.data.suite_files.read_suites``):
``{"id", "suite", "prompt", "answer", "candidates"?}``. Scoring:
- no candidates: greedy exact match: the answer's tokens (tokenized on their own, appended to
  the prompt's) are each the argmax of the model given the prompt and the previous answer tokens
  (= greedy decoding reproduces them; one teacher-forced forward pass).
- candidates: rank 1 by summed log-prob of each candidate's tokens after the prompt; correct when
  the answer scores strictly highest (ties count as wrong).
A model without Engram (the MoE baseline) has nothing to suppress: its ablated score is its full
score, retained exactly 100%.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Sequence

import torch

from engram_interp.analysis import _dist
from engram_interp.analysis._dist import all_reduce_sum_, poisson_weights
from engram_interp.analysis.common import require_engram, token_batches
from engram_interp.analysis.scoring import plan_scoring, run_plan
from engram_interp.errors import EngramInterpError

__all__ = ["score_items", "candidate_prior_accuracy", "AblationAccumulator", "SuiteScore", "AblationResult",
           "ablation_sensitivity", "mean_engram_output"]


@torch.no_grad()
def score_items(model, items: Sequence[dict], batch_size: int = 16) -> torch.Tensor:
    """1.0/0.0 per item (see module doc for the two scoring rules): ``[n_items]`` float64, CPU.

    Packed scoring (``engram_interp.analysis.scoring``): each prompt runs once for all of its
    candidates, forward passes hold at most ``batch_size * min(max_seq_len, 1024)`` padded tokens."""
    return run_plan(model, plan_scoring(model, items, batch_size))


def candidate_prior_accuracy(model, items: Sequence[dict], batch_size: int = 16) -> float | None:
    """Accuracy (0..1) of the full model on the multiple-choice ``items`` with their prompts removed:
    the candidates ranked by their unconditional log-prob (after BOS, or after one space for a model
    without BOS). A suite a model answers this well without reading the prompt measures a candidate
    prior, not the prompt. None when no item has candidates."""
    ranked = [it for it in items if it.get("candidates")]
    if not ranked:
        return None
    empty = "" if model.info.bos_token_id is not None else " "
    return float(score_items(model, [{**it, "prompt": empty} for it in ranked], batch_size).mean())


class AblationAccumulator:
    """Paired sums of full and ablated scores over examples with Poisson-bootstrap replicates."""

    def __init__(self, n_boot: int = 1000, seed: int = 0):
        self.n_boot, self.seed = n_boot, seed
        self.sums = torch.zeros(3, dtype=torch.float64)  # [n, full, ablated]
        self.boot = torch.zeros(n_boot, 3, dtype=torch.float64)

    def update(self, full: torch.Tensor, ablated: torch.Tensor, first_index: int = 0) -> None:
        """Add per-example scores (same examples, same order); ``first_index``: global index of the
        first example (keys its bootstrap weights)."""
        full, ablated = full.double().cpu(), ablated.double().cpu()
        if len(full) == 0:
            return
        v = torch.stack([torch.ones_like(full), full, ablated], dim=1)  # [n, 3]
        w = torch.stack([poisson_weights(self.seed, first_index + j, self.n_boot) for j in range(len(full))])
        self.boot += w.T @ v  # [n_boot, 3]; integer-valued sums, exact in float64
        self.sums += v.sum(0)

    def all_reduce(self, group=None) -> "AblationAccumulator":
        all_reduce_sum_([self.sums, self.boot], group)
        return self

    def result(self) -> dict:
        """``full``, ``ablated`` (accuracy 0..1), ``retained`` (%; None if full is 0) and its 95% ``ci``."""
        n, f, a = self.sums.tolist()
        retained = 100.0 * a / f if f > 0 else None
        ci = None
        if f > 0:
            bf, ba = self.boot[:, 1], self.boot[:, 2]
            ok = bf > 0
            r = 100.0 * ba[ok] / bf[ok]
            if r.numel():
                ci = [float(torch.quantile(r, 0.025)), float(torch.quantile(r, 0.975))]
        return {"n": int(n), "full": f / max(n, 1), "ablated": a / max(n, 1), "retained": retained, "ci": ci}


@torch.no_grad()
def mean_engram_output(model, texts: Iterable[str], batch_size: int = 8, max_tokens: int | None = 20000) -> dict[int, torch.Tensor]:
    """Mean of Y (``blocks.{l}.engram.hook_out``) over the real tokens of a reference corpus, per
    Engram layer: ``{layer: [d_model]}`` (``[branch, d_model]`` for mHC). For mean-ablation."""
    require_engram(model, "mean-ablation")
    names = {f"blocks.{l}.engram.hook_out": l for l in model.engram_layers}
    sums: dict[int, torch.Tensor] = {}
    n = 0
    for batch in token_batches(model, texts, batch_size, max_tokens, shard=True):
        _, cache = model.run_with_cache(batch.tokens, names_filter=lambda x: x in names, return_type=None)
        for name, l in names.items():
            s = cache[name][batch.mask].double().sum(0)
            sums[l] = sums.get(l, 0) + s
        n += int(batch.mask.sum())
    if _dist.dist_active():  # under torchrun: sums over every process's share of the corpus
        parts = _dist.all_gather_objects((n, {l: s.cpu() for l, s in sums.items()}))
        n = sum(k for k, _ in parts)
        sums = {l: sum(p[l] for _, p in parts if l in p).to(model.device) for l in names.values()
                if any(l in p for _, p in parts)}
    if n == 0:
        raise EngramInterpError("the reference corpus for mean-ablation is empty")
    return {l: (s / n).float() for l, s in sums.items()}


@dataclass
class SuiteScore:
    """One suite under one ablation: accuracies ``full``/``ablated`` (0..1), ``retained`` (%),
    ``ci`` (95% bootstrap interval of retained, %), ``n`` items."""

    full: float
    ablated: float
    retained: float | None
    ci: list[float] | None
    n: int
    per_layer: dict[str, dict] = field(default_factory=dict)


@dataclass
class AblationResult:
    """``models[i] = {"name", "engram_layers", "mode", "suites": {suite: SuiteScore}}``; ``suites``
    is the first model's table (the CLI's top-level JSON key)."""

    models: list[dict]
    mode: str

    @property
    def suites(self) -> dict[str, SuiteScore]:
        return self.models[0]["suites"] if self.models else {}

    def to_dict(self) -> dict:
        ms = [{**m, "suites": {k: asdict(v) for k, v in m["suites"].items()}} for m in self.models]
        return {"mode": self.mode, "suites": ms[0]["suites"] if ms else {}, "models": ms}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


def ablation_sensitivity(
    models: Sequence | dict,
    suites: dict[str, list[dict]],
    *,
    mode: str = "zero",
    reference_texts: Sequence[str] | None = None,
    per_layer: bool = True,
    batch_size: int = 16,
    max_tokens: int | None = 20000,
    n_boot: int = 1000,
    seed: int = 0,
    progress: bool = False,
    names: Sequence[str] | None = None,
    on_progress: Callable[[int, int, str], None] | None = None,
) -> AblationResult:
    """Score each suite with each model: full, Engram suppressed at all Engram layers and (if
    ``per_layer``) at each alone. ``mode``: ``"zero"`` (Y = 0) or ``"mean"`` (Y = its mean over
    ``reference_texts``). Models without Engram report ablated = full (retained 100%).

    All suites of a model are scored together: one packed plan (``scoring.plan_scoring``) run once
    per variant. ``progress`` shows a bar over every forward pass of every model and variant;
    ``on_progress(done, total, what)`` is called after each one (the app's progress bar).
    Returns an AblationResult."""
    from engram_interp.analysis.logit_lens import _named

    if mode not in ("zero", "mean"):
        raise EngramInterpError(f"unknown ablation mode {mode!r}: use 'zero' or 'mean'")
    if not suites or not any(suites.values()):
        raise EngramInterpError("no task items to score")
    named = _named(models, names)
    order = list(suites.items())
    flat = [it for _, items in order for it in items]
    jobs = []  # (name, model, plan, variants)
    for name, model in named:
        variants: list[tuple[str, list[int] | None]] = [("full", [])]
        if model.engram_layers:
            variants.append(("all", None))
            if per_layer and len(model.engram_layers) > 1:
                variants += [(str(l), [l]) for l in model.engram_layers]
        jobs.append((name, model, plan_scoring(model, flat, batch_size), variants))
    total = sum(plan.n_forwards_here * len(variants) for _, _, plan, variants in jobs)
    bar = None
    if progress:
        from engram_interp.analysis.progress import progress_bar

        bar = progress_bar(total=total, desc="ablate", unit="forward", leave=False)
    done = 0
    out = []
    for name, model, plan, variants in jobs:
        repl = None
        if mode == "mean" and model.engram_layers:
            if not reference_texts:
                raise EngramInterpError("mean-ablation needs a reference corpus")
            repl = mean_engram_output(model, reference_texts, max_tokens=max_tokens)
        scores: dict[str, torch.Tensor] = {}
        for label, layers in variants:
            what = f"{name}: {'full model' if label == 'full' else 'Engram off at ' + ('all layers' if layers is None else f'layer {label}')}"
            if bar is not None:
                bar.set_description(f"ablate {what}")

            def tick(i: int, n: int, base: int = done, what: str = what) -> None:
                if bar is not None:
                    bar.update(1)
                if on_progress is not None:
                    on_progress(base + i, total, what)

            if label == "full":
                scores[label] = run_plan(model, plan, tick)
            else:
                r = None if repl is None else {l: repl[l] for l in (layers or model.engram_layers)}
                with model.engram_suppressed(layers=layers, replacement=r):
                    scores[label] = run_plan(model, plan, tick)
            done += plan.n_forwards_here
        if not model.engram_layers:
            scores["all"] = scores["full"]
        table, first = {}, 0
        for suite, items in order:
            part = {k: v[first:first + len(items)] for k, v in scores.items()}
            first += len(items)
            res = {}
            for label in [k for k in scores if k != "full"]:
                acc = AblationAccumulator(n_boot, seed)
                acc.update(part["full"], part[label])
                res[label] = acc.result()
            a = res.pop("all")
            table[suite] = SuiteScore(full=a["full"], ablated=a["ablated"], retained=a["retained"], ci=a["ci"],
                                      n=a["n"], per_layer=res)
        out.append({"name": name, "engram_layers": list(model.engram_layers), "mode": mode, "suites": table})
    if bar is not None:
        bar.close()
    return AblationResult(models=out, mode=mode)
