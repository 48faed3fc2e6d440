"""Engram table rows as the unit of an edit: which rows a text reads, a trainable offset on a set of
rows that acts exactly as writing the table would, and the record of an edit (old and new values)
that applies and reverts it bit for bit.

A row is ``(layer, head, row)``: Engram layer, hash head (column of ``hook_hash_ids``, see
``EngramHeads``) and the row within that head's table. Everything goes through the model interface:
``hook_hash_ids`` / ``hook_memory`` and ``engram_rows`` / ``set_engram_rows``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import torch

from engram_interp.analysis.locate import rows_read, within_head_rows

__all__ = ["RowKey", "RowDelta", "EditRecord", "rows_of", "applied"]

RowKey = tuple[int, int, int]  # (layer, head, row within the head)


def rows_of(model, tokens: torch.Tensor, keep: torch.Tensor | None = None) -> list[RowKey]:
    """The distinct rows ``tokens`` ``[b, pos]`` read at the positions where ``keep`` ``[b, pos]`` (bool;
    default: every position) is True, sorted. One forward pass (``locate.rows_read``)."""
    out: set[RowKey] = set()
    for l, hid in rows_read(model, tokens).items():  # [b, pos, H]
        picked = hid[keep.to(hid.device)] if keep is not None else hid.reshape(-1, hid.shape[-1])  # [n, H]
        for h in range(picked.shape[-1]):
            out.update((l, h, int(r)) for r in torch.unique(picked[:, h]).tolist())
    return sorted(out)


class RowDelta(torch.nn.Module):
    """A trainable offset ``delta[k]`` ``[d_head]`` per row in ``keys``, added wherever the model reads that
    row: ``hooks()`` adds ``delta`` to the row's slice of ``hook_memory`` at every position whose hash
    reads it, which is what writing ``row + delta`` into the table does (same float32 sum)."""

    def __init__(self, model, keys: Iterable[RowKey]):
        super().__init__()
        self.keys = sorted(set(keys))
        self.layers = sorted({k[0] for k in self.keys})
        d_head = {l: model.engram_heads(l).d_head for l in self.layers}
        self.delta = torch.nn.ParameterDict({
            str(l): torch.nn.Parameter(torch.zeros(sum(k[0] == l for k in self.keys), d_head[l], device=model.device))
            for l in self.layers})
        self._lut: dict[int, torch.Tensor] = {}  # layer -> [H, max head size] index into delta[l], -1 = untouched
        for l in self.layers:
            heads = model.engram_heads(l)
            lut = torch.full((heads.n_heads, max(heads.head_sizes)), -1, dtype=torch.long, device=model.device)
            for i, (_, h, r) in enumerate(k for k in self.keys if k[0] == l):
                lut[h, r] = i
            self._lut[l] = lut
        self._model_ref = (model,)  # a tuple: a Module attribute would register the model as a submodule

    def hooks(self) -> list[tuple[str, object]]:
        """``fwd_hooks`` for ``run_with_hooks``: remember each layer's hash ids, add the offsets to e_t."""
        hooks, seen = [], {}
        for l in self.layers:
            def keep_ids(ids: torch.Tensor, hook, l=l) -> None:
                seen[l] = within_head_rows(self._model_ref[0], l, ids)  # [b, pos, H]

            def add(e: torch.Tensor, hook, l=l) -> torch.Tensor:
                ids = seen[l]
                lut = self._lut[l]
                idx = lut[torch.arange(ids.shape[-1], device=ids.device), ids]  # [b, pos, H]
                d = self.delta[str(l)]
                extra = d[idx.clamp_min(0)] * (idx >= 0)[..., None].to(d.dtype)  # [b, pos, H, d_head]
                return e + extra.flatten(-2).to(e.dtype)  # [b, pos, d_mem]

            hooks += [(f"blocks.{l}.engram.hook_hash_ids", keep_ids), (f"blocks.{l}.engram.hook_memory", add)]
        return hooks

    @torch.no_grad()
    def project(self, bound: dict[int, torch.Tensor]) -> None:
        """Clip each row's offset to the L2 norm ``bound[layer][i]`` (in place)."""
        for l in self.layers:
            d = self.delta[str(l)]
            norm = d.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            d.mul_(torch.clamp(bound[l][:, None].to(d) / norm, max=1.0))

    @torch.no_grad()
    def record(self) -> "EditRecord":
        """The table edit these offsets stand for: old rows (read from the model) and old + delta."""
        rec = EditRecord()
        for l in self.layers:
            keys = [k for k in self.keys if k[0] == l]
            d = self.delta[str(l)].detach()
            for h in sorted({k[1] for k in keys}):
                pick = [i for i, k in enumerate(keys) if k[1] == h]
                rows = torch.tensor([keys[i][2] for i in pick], dtype=torch.long)
                old = self._model_ref[0].engram_rows(l, h, rows)
                rec.parts.append(RowEditPart(l, h, rows, old.cpu(), (old + d[pick].to(old)).cpu()))
        return rec


@dataclass
class RowEditPart:
    """Rows ``rows`` ``[n]`` of head ``head`` in layer ``layer``: ``old`` and ``new`` values ``[n, d_head]``."""

    layer: int
    head: int
    rows: torch.Tensor
    old: torch.Tensor
    new: torch.Tensor


@dataclass
class EditRecord:
    """A table edit: per (layer, head) the rows and their old and new values. ``apply(model)`` writes
    the new values, ``revert(model)`` writes the old ones back (bit-identical to before)."""

    parts: list[RowEditPart] = field(default_factory=list)

    @property
    def keys(self) -> list[RowKey]:
        return sorted((p.layer, p.head, int(r)) for p in self.parts for r in p.rows.tolist())

    @property
    def n_rows(self) -> int:
        return sum(len(p.rows) for p in self.parts)

    def apply(self, model) -> None:
        for p in self.parts:
            model.set_engram_rows(p.layer, p.head, p.rows, p.new)

    def revert(self, model) -> None:
        for p in self.parts:
            model.set_engram_rows(p.layer, p.head, p.rows, p.old)

    def changes(self) -> list[dict]:
        """Per row: ``{layer, head, row, norm_old, norm_delta}`` (L2 norms of the old row and of new - old)."""
        out = []
        for p in self.parts:
            d = (p.new.double() - p.old.double()).norm(dim=-1).tolist()
            o = p.old.double().norm(dim=-1).tolist()
            out += [{"layer": p.layer, "head": p.head, "row": int(r), "norm_old": o[i], "norm_delta": d[i]}
                    for i, r in enumerate(p.rows.tolist())]
        return out


@contextlib.contextmanager
def applied(model, record: EditRecord) -> Iterator[None]:
    """The model with ``record`` applied for the block (holding ``model.exclusive()``), reverted after."""
    with model.exclusive():
        record.apply(model)
        try:
            yield
        finally:
            record.revert(model)
