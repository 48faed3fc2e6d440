"""Qwen4-Exp PLE tables read from their safetensors shards, never resident (docs/SCALE.md).

transformers would materialise every n-gram table (``model.layers.{i}.ple.ple_embedding.ngram_embedding``,
~95 GiB in Qwen3.8-Flash-Next) as a parameter in RAM. Here the model class is subclassed so that,
right after transformers builds it (on the meta device, before any weight is read), each table's
``nn.Embedding`` is replaced by a :class:`MappedTable` that holds no parameter: the checkpoint's table
tensors then match nothing in the model and transformers never reads them. After the load the module
is bound to a positioned-read view of the table's rows (``memory/ple.ShardedRows`` over
``memory/sources.SafetensorsRows``; ``shard_{i}`` row blocks included), and a forward reads only the
distinct rows it touches, casts them to the model's dtype and returns them on the ids' device.

The hook points (``blocks.{l}.engram.*``) are unchanged: ``hook_hash_ids`` still feeds this module.
Used when the table is F32 / BF16 / F16 (a float32 read then the cast is the eager load's own cast),
with or without a device map (the table is then no parameter accelerate places or offloads); other
dtypes and GGUF files load eagerly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from engram_interp.errors import CheckpointError, EngramInterpError

MAPPED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
CHECK_BYTES = 4 << 20  # bytes per block of the NaN/Inf scan


class MappedTable(nn.Module):
    """Stands in for one PLE ``nn.Embedding`` ``[rows, dim]``: ``forward(ids)`` -> ``[*ids.shape, dim]``."""

    def __init__(self, rows: int, dim: int) -> None:
        super().__init__()
        self.rows, self.dim = int(rows), int(dim)
        self.dtype = torch.float32
        self.reader = None  # bound by bind_tables after the load

    @property
    def weight(self) -> torch.Tensor:
        """A meta tensor of the table's shape and dtype (transformers reads ``weight.device``; ours its shape)."""
        return torch.empty(self.rows, self.dim, dtype=self.dtype, device="meta")

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        flat = ids.detach().reshape(-1).cpu().numpy()
        uniq, inverse = np.unique(flat, return_inverse=True)
        rows = torch.from_numpy(self.reader.read(uniq)).to(self.dtype)
        return rows[torch.from_numpy(inverse)].reshape(*ids.shape, self.dim).to(ids.device)

    def extra_repr(self) -> str:
        return f"{self.rows}, {self.dim}, dtype={self.dtype}, memory-mapped"


def _swap(model: nn.Module) -> None:
    for layer in model.model.layers:
        ple = getattr(layer, "ple", None)
        if ple is not None:
            w = ple.ple_embedding.ngram_embedding.weight
            ple.ple_embedding.ngram_embedding = MappedTable(*w.shape)


def mapped_class(cls: type) -> type:
    """``cls`` (a ``*ForCausalLM``) whose PLE tables are :class:`MappedTable` from construction on
    (same name, so ``type(hf).__name__`` is unchanged)."""

    class Mapped(cls):
        def __init__(self, config, *args, **kwargs):
            super().__init__(config, *args, **kwargs)
            _swap(self)

    Mapped.__name__, Mapped.__qualname__ = cls.__name__, cls.__qualname__
    return Mapped


def table_readers(folder: Path) -> dict:
    """``{block: ShardedRows}`` of a folder's PLE tables (headers read only)."""
    from engram_interp.memory.ple import ShardedRows, _ple_tensors
    from engram_interp.memory.sources import SafetensorsRows

    return {l: ShardedRows([SafetensorsRows(f, name) for _, f, name in sorted(parts)])
            for l, parts in _ple_tensors(folder).items()}


def mappable(config, folder: Path) -> bool:
    """Whether ``folder``'s PLE tables can be mapped: a Qwen4-Exp config with PLE layers, every table
    present, F32 / BF16 / F16."""
    tc = getattr(config, "text_config", None) or config
    layers = [int(p) - 1 for p in (getattr(tc, "ple_layer_ids", None) or [])]
    if not layers or "qwen4_exp" not in str(getattr(config, "model_type", "")):
        return False
    try:
        readers = table_readers(folder)
    except Exception:  # noqa: BLE001 - a table we cannot read goes the eager way, which names the problem
        return False
    return all(l in readers and all(p.dtype in MAPPED_DTYPES for p in readers[l].parts) for l in layers)


def bind_tables(hf: nn.Module, folder: Path, dtype: torch.dtype, check_finite: bool = True) -> None:
    """Bind every :class:`MappedTable` of ``hf`` to its rows in ``folder`` (shape checked), reading
    rows as ``dtype``; with ``check_finite`` each table is scanned for NaN/Inf in blocks of
    ``CHECK_BYTES`` (never whole)."""
    from engram_interp.model.weights import nonfinite_count

    try:
        readers = table_readers(folder)
    except EngramInterpError as exc:
        raise CheckpointError(f"{folder}: {exc}") from None
    for l, layer in enumerate(hf.model.layers):
        ple = getattr(layer, "ple", None)
        if ple is None:
            continue
        table, name = ple.ple_embedding.ngram_embedding, f"model.layers.{l}.ple.ple_embedding.ngram_embedding.weight"
        reader = readers.get(l)
        if reader is None:
            raise CheckpointError(f"{folder} lacks {name}")
        if tuple(reader.shape) != (table.rows, table.dim):
            raise CheckpointError(f"{folder}: {name} is {list(reader.shape)}; the config gives {[table.rows, table.dim]}")
        if check_finite:
            for part in reader.parts:
                step = max(1, CHECK_BYTES // (part.shape[1] * part.dtype.itemsize))
                for lo in range(0, part.shape[0], step):
                    bad = nonfinite_count(part._rows(part._w, lo, min(lo + step, part.shape[0])))
                    if bad:
                        raise CheckpointError(f"{folder}: weight {name} holds {bad:,} NaN/Inf value(s) "
                                              "(pass --allow-nonfinite to look anyway)")
        table.reader, table.dtype = reader, dtype


def table_parameters(hf: nn.Module) -> int:
    """Entries of the mapped tables (not in ``hf.parameters()``)."""
    return sum(m.rows * m.dim for m in hf.modules() if isinstance(m, MappedTable))
