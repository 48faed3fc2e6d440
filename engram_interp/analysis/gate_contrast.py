"""Do Engram gates open at the last token of named entities? (the paper's gate finding, as a number)

On the entity probe set (``probes/entities_ner.jsonl``: texts with the character offset of the
final character of each named entity) every Engram gate alpha_t is split into two groups: the
final tokens of the entities, and every other real token of the same texts. The contrast is the
difference of the two group means per Engram layer (gate units, alpha in (0, 1); mean over
branches). A positive contrast says the gate is higher where an entity completes. Streaming:
only per-layer sums are kept. The Engram-null arm (one memory row per head) is the control: its
gate sees the hidden state but no n-gram identity, so a contrast it shares is not memory lookup.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from engram_interp.analysis._dist import all_reduce_sum_, shard
from engram_interp.analysis.common import entity_batches, model_name, read_entity_probes, require_engram, selected_mask

__all__ = ["GateContrast", "entity_gate_contrast"]


@dataclass
class GateContrast:
    """Per Engram layer: ``entity`` mean gate at entity-final tokens, ``other`` mean gate at the other
    tokens of the same texts, ``contrast`` = entity - other (gate units), token counts ``n_entity``
    and ``n_other``."""

    name: str
    layers: list[int]
    entity: list[float]
    other: list[float]
    contrast: list[float]
    n_entity: int
    n_other: int

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def entity_gate_contrast(model, probes: str | None = None, *, batch_size: int = 8, max_tokens: int | None = 4000,
                         name: str | None = None) -> GateContrast:
    """Mean gate at entity-final tokens vs the other tokens, per Engram layer (see module doc).
    ``max_tokens`` caps the entity-final tokens used. Returns a :class:`GateContrast`."""
    require_engram(model, "the entity gate contrast")
    layers = list(model.engram_layers)
    names = [f"blocks.{l}.engram.hook_gate" for l in layers]
    s_ent = torch.zeros(len(layers), dtype=torch.float64)
    s_oth = torch.zeros(len(layers), dtype=torch.float64)
    n_ent = n_oth = 0
    for batch in shard(entity_batches(model, read_entity_probes(probes), batch_size, max_tokens)):  # torchrun: a share
        _, cache = model.run_with_cache(batch.tokens, names_filter=lambda n: n in names, return_type=None)
        ent = selected_mask(batch)
        oth = batch.mask & ~ent
        for i, n in enumerate(names):
            g = cache[n].double().mean(-1).cpu()  # [b, p], mean over branches
            s_ent[i] += g[ent.cpu()].sum()
            s_oth[i] += g[oth.cpu()].sum()
        n_ent += int(ent.sum())
        n_oth += int(oth.sum())
    counts = torch.tensor([n_ent, n_oth], dtype=torch.float64)
    all_reduce_sum_([s_ent, s_oth, counts])
    n_ent, n_oth = (int(x) for x in counts.tolist())
    e = (s_ent / max(n_ent, 1)).tolist()
    o = (s_oth / max(n_oth, 1)).tolist()
    return GateContrast(name=name or model_name(model), layers=layers, entity=e, other=o,
                        contrast=[a - b for a, b in zip(e, o)], n_entity=n_ent, n_other=n_oth)
