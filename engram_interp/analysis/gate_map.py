"""Gate map of one text (docs/ANALYSES.md section 3): alpha_t per token, Engram layer and branch."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import torch

from engram_interp.analysis.common import check_texts, model_name, require_engram

__all__ = ["GateMap", "gate_map"]


def _gate_names(model) -> list[str]:
    return [f"blocks.{l}.engram.hook_gate" for l in model.engram_layers]


@dataclass
class GateMap:
    """Gates of one text. ``tokens``: token strings (BOS first); ``gates[layer]``: ``[pos][branch]``
    alpha values in (0, 1); ``ngrams[pos]``: the suffix 2- and 3-gram strings ending at pos."""

    name: str
    tokens: list[str]
    layers: list[int]
    n_branches: int
    gates: dict[int, list[list[float]]]
    ngrams: list[list[str]]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["gates"] = {str(k): v for k, v in self.gates.items()}
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


@torch.no_grad()
def gate_map(model, text: str, name: str | None = None) -> GateMap:
    """Gate values of every token of ``text`` at every Engram layer and branch (user error for a
    model without Engram or an empty text)."""
    require_engram(model, "a gate map")
    text = check_texts(text)[0]
    tokens = model.to_tokens(text)
    names = _gate_names(model)
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names, return_type=None)
    strs = model.to_str_tokens(tokens[0])
    gates = {l: cache[n][0].float().cpu().tolist() for l, n in zip(model.engram_layers, names)}
    ngrams = [["".join(strs[max(0, t - n + 1): t + 1]) if t - n + 1 >= 1 else "" for n in (2, 3)] for t in range(len(strs))]
    return GateMap(name=name or model_name(model), tokens=strs, layers=list(model.engram_layers),
                   n_branches=model.info.n_branches, gates=gates, ngrams=ngrams)
