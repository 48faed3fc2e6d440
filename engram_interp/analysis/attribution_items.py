"""Direct logit attribution over probe items (entity completions, facts): which components, on average,
write the answer's first token rather than a distractor's.

For each item with a ``candidates`` list, the metric is ``logit(answer's first token) - logit(first
distractor's first token)`` at the end of the prompt (the distractor: the first candidate whose first
token differs). The contrast is the control: what pushes *every* plausible continuation up cancels.
Per component and per kind (embed, engram, attn, mlp), the mean contribution over items comes with a
percentile-bootstrap 95 % interval over items; a mean whose interval covers 0 is "not established".
Memory: one row of floats per item (items are capped by ``max_items``), never per token.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Sequence

import torch

from engram_interp.analysis.attribution import attribute_batch
from engram_interp.analysis.resample import mean_replicates, percentile_ci

__all__ = ["ComponentStat", "ItemAttribution", "attribution_over_items", "KINDS"]

KINDS = ("embed", "engram", "attn", "mlp")


@dataclass
class ComponentStat:
    """Mean contribution (logits) over items with its 95 % bootstrap interval; ``established`` when the
    interval excludes 0."""

    name: str
    mean: float
    ci_low: float
    ci_high: float

    @property
    def established(self) -> bool:
        return self.ci_low > 0 or self.ci_high < 0


@dataclass
class ItemAttribution:
    """One model on one probe suite: ``n_items`` attributed (``n_skipped`` had no usable distractor);
    ``metric`` the mean logit difference answer - distractor; ``kinds`` the sum per component kind
    (``embed``, ``engram``, ``attn``, ``mlp``); ``components`` per component; ``remainder_max`` the
    largest |remainder| over items (bias terms; ~0 for bias-free models)."""

    model: str
    suite: str
    n_items: int
    n_skipped: int
    metric: ComponentStat
    kinds: list[ComponentStat] = field(default_factory=list)
    components: list[ComponentStat] = field(default_factory=list)
    remainder_max: float = 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in ("kinds", "components"):
            for row, stat in zip(d[key], getattr(self, key)):
                row["established"] = stat.established
        d["metric"]["established"] = self.metric.established
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


def _pair(model, item: dict) -> tuple[int, int] | None:
    answer = model.encode(item["answer"])
    if not answer:
        return None
    for cand in item.get("candidates") or []:
        ids = model.encode(cand)
        if cand != item["answer"] and ids and ids[0] != answer[0]:
            return answer[0], ids[0]
    return None


def _stats(names: Sequence[str], values: torch.Tensor, n_boot: int, seed: int) -> list[ComponentStat]:
    """values [n_items, n_names] -> mean and percentile-bootstrap 95 % interval per column."""
    lo, hi = percentile_ci(mean_replicates(values, n_boot, seed))  # [n_names] each
    return [ComponentStat(nm, float(m), float(a), float(b)) for nm, m, a, b in zip(names, values.mean(0), lo, hi)]


@torch.no_grad()
def attribution_over_items(
    model, items: Sequence[dict], *, suite: str = "", max_items: int | None = 100, n_boot: int = 1000,
    seed: int = 0, batch_size: int = 16, progress: bool = False, name: str | None = None,
) -> ItemAttribution | None:
    """DLA averaged over probe ``items`` (dicts with ``prompt``, ``answer``, ``candidates``), the first
    ``max_items`` usable ones, ``batch_size`` prompts per forward. Returns an :class:`ItemAttribution` (logits, 95 % intervals), or None
    when no item is usable (no candidates, or every distractor starts with the answer's token)."""
    rows, names, skipped = [], None, 0
    usable = []
    for item in items:
        pair = _pair(model, item)
        if pair is None or len(model.encode(item["prompt"])) + 1 > model.info.max_seq_len:
            skipped += 1
            continue
        usable.append((item, pair))
        if max_items is not None and len(usable) >= max_items:
            break
    if not usable:
        return None
    batches = [usable[i : i + batch_size] for i in range(0, len(usable), batch_size)]
    if progress:
        from engram_interp.analysis.progress import progress_bar

        batches = progress_bar(batches, desc=f"attribution {name or model.info.name}", unit="batch", leave=False)
    for batch in batches:
        prompts = [item["prompt"] for item, _ in batch]
        tokens = model.to_tokens(prompts)
        bos = int(model.info.bos_token_id is not None)
        last = [len(model.encode(p)) + bos - 1 for p in prompts]  # right-padded: each row's own end
        results = attribute_batch(model, tokens, last, [t for _, (t, _) in batch], [c for _, (_, c) in batch])
        for comps, logit, _, remainder in results:
            names = names or [c.name for c in comps]
            by_kind = [sum(c.contribution for c in comps if c.kind == k) for k in KINDS]
            rows.append([logit, *by_kind, remainder, *(c.contribution for c in comps)])
    values = torch.tensor(rows, dtype=torch.float64)
    remainder_max = float(values[:, 1 + len(KINDS)].abs().max())
    values = torch.cat([values[:, : 1 + len(KINDS)], values[:, 2 + len(KINDS) :]], dim=1)
    stats = _stats(["metric", *KINDS, *names], values, n_boot, seed)
    k = 1 + len(KINDS)
    return ItemAttribution(model=name or model.info.name, suite=suite, n_items=len(rows), n_skipped=skipped,
                           metric=stats[0], kinds=stats[1:k], components=stats[k:], remainder_max=remainder_max)
