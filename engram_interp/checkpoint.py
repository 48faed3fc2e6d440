"""The .ckpt format: ONE safetensors file = weights + metadata JSON. Nothing is ever unpickled.

Metadata (all strings, as safetensors requires):
    format          "engram-interp"
    format_version  "1"
    config          ModelConfig JSON, Engram multipliers and table sizes frozen in it
    tokenizer       the `tokenizers` JSON ("" when the model has none)
    compression     JSON list: raw id -> canonical id
    provenance      JSON object: how the weights were made (recipe, data, steps, hardware, ...)
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engram_interp.config import ModelConfig
from engram_interp.errors import CheckpointError, EngramInterpError
from engram_interp.tokenizer import Compression

FORMAT = "engram-interp"
FORMAT_VERSION = "1"
SUPPORTED_VERSIONS = {"1"}
_MAX_HEADER = 256 * 1024 * 1024


@dataclass
class CheckpointInfo:
    """Everything in a .ckpt except the tensor data."""

    path: Path
    config: ModelConfig
    tokenizer_json: str
    compression: Compression
    provenance: dict[str, Any]
    format_version: str
    tensors: dict[str, tuple[str, list[int]]] = field(default_factory=dict)  # name -> (dtype, shape)

    def tokenizer(self):
        from tokenizers import Tokenizer

        return Tokenizer.from_str(self.tokenizer_json) if self.tokenizer_json else None


def _raw_header(path: Path) -> tuple[dict[str, Any], int]:
    """Validate the container and return (header JSON, byte offset of the data)."""
    if not path.exists():
        raise CheckpointError(f"no such file: {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, not a .ckpt file")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(9)  # u64 header length, then the header JSON, which starts with '{'
        if len(head) == 9 and head[8:9] == b"{":
            (n,) = struct.unpack("<Q", head[:8])
        elif head[:2] == b"PK":
            raise CheckpointError(
                f"{path} is a zip archive (a torch.save / PyTorch pickle checkpoint?). engram-interp reads only"
                " its own safetensors .ckpt files and never unpickles anything"
            )
        elif head[:1] == b"\x80":
            raise CheckpointError(f"{path} is a Python pickle; engram-interp never unpickles files")
        elif len(head) < 9:
            raise CheckpointError(f"{path} is too short ({size} bytes) to be a checkpoint")
        else:
            raise CheckpointError(f"{path} is not a safetensors file")
        if n < 2 or n > _MAX_HEADER or n > size - 8:
            raise CheckpointError(f"{path} is not a safetensors file (or its header is truncated)")
        f.seek(8)
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"{path} has a corrupt header: not a safetensors file or damaged") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} has a corrupt header")
    data_end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            data_end = max(data_end, int(entry["data_offsets"][1]))
        except (KeyError, TypeError, IndexError, ValueError):
            raise CheckpointError(f"{path} has a corrupt entry for tensor {name!r}") from None
    if 8 + n + data_end > size:
        raise CheckpointError(f"{path} is truncated: the header promises {8 + n + data_end} bytes, the file has {size}")
    return header, 8 + n


def read_info(path: str | os.PathLike) -> CheckpointInfo:
    """Read and check a checkpoint's metadata without loading its tensors."""
    path = Path(path)
    header, _ = _raw_header(path)
    meta = header.get("__metadata__") or {}
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a safetensors file but not an engram-interp checkpoint (no '{FORMAT}' metadata)")
    version = meta.get("format_version")
    if version not in SUPPORTED_VERSIONS:
        raise CheckpointError(
            f"{path} has format version {version!r}; this engram-interp reads {sorted(SUPPORTED_VERSIONS)}"
            " (upgrade engram-interp)"
        )
    try:
        config = ModelConfig.from_json(meta["config"])
        table = np.asarray(json.loads(meta["compression"]), dtype=np.int64)
        provenance = json.loads(meta.get("provenance") or "{}")
    except KeyError as exc:
        raise CheckpointError(f"{path} lacks the metadata field {exc.args[0]!r}") from None
    except (json.JSONDecodeError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path} has invalid metadata: {exc}") from None
    if table.ndim != 1 or table.shape[0] != config.vocab_size or (table.size and table.min() < 0):
        raise CheckpointError(f"{path}: the compression table does not cover the {config.vocab_size}-token vocabulary")
    n_canonical = int(table.max()) + 1 if table.size else 0
    if len(np.unique(table)) != n_canonical:
        raise CheckpointError(f"{path}: the compression table is not onto 0..V'-1")
    tensors = {k: (v["dtype"], list(v["shape"])) for k, v in header.items() if k != "__metadata__"}
    return CheckpointInfo(
        path=path,
        config=config,
        tokenizer_json=meta.get("tokenizer", ""),
        compression=Compression(table=table, n_canonical=n_canonical),
        provenance=provenance,
        format_version=version,
        tensors=tensors,
    )


def save(model, path: str | os.PathLike, provenance: dict[str, Any] | None = None, overwrite: bool = False) -> Path:
    """Write ``model`` (an EngramTransformer) to ``path``; refuses to replace a file unless ``overwrite``."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.exists() and not overwrite:
        raise CheckpointError(f"{path} exists; pass overwrite=True (CLI: --force) to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.detach().to("cpu").contiguous().clone() for name, t in model.state_dict().items()}
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": model.cfg.to_json(indent=None),
        "tokenizer": model.tokenizer.to_str() if model.tokenizer is not None else "",
        "compression": json.dumps(model.compression.table.tolist()),
        "provenance": json.dumps(provenance or {}),
    }
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)  # never leave a half-written checkpoint under the real name
    return path


def load(path: str | os.PathLike, device: str | torch.device | None = None, dtype: torch.dtype | str | None = None):
    """Load a .ckpt into a ready EngramTransformer (eval mode) on ``device`` (default: CUDA if available)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from engram_interp.model import EngramTransformer

    info = read_info(path)
    model = EngramTransformer(info.config, tokenizer=info.tokenizer(), compression=info.compression)
    expected = {k: list(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(info.tensors))
    extra = sorted(set(info.tensors) - set(expected))
    if missing:
        raise CheckpointError(f"{path} lacks {len(missing)} tensor(s) the config needs, e.g. {missing[:3]}")
    if extra:
        raise CheckpointError(f"{path} has {len(extra)} tensor(s) the config does not know, e.g. {extra[:3]}")
    for name, shape in expected.items():
        if info.tensors[name][1] != shape:
            raise CheckpointError(f"{path}: tensor {name} has shape {info.tensors[name][1]}, the config needs {shape}")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is corrupt: {exc}") from None
    model.load_state_dict(state, strict=True)
    model.provenance = info.provenance
    model.checkpoint_path = info.path
    return model.to(device=resolve_device(device), dtype=resolve_dtype(dtype)).eval()


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError:
        raise EngramInterpError(f"unknown device {device!r} (use cpu, cuda, cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EngramInterpError("device 'cuda' requested but no CUDA GPU is available")
    return device


def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
             "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float64": torch.float64}
    if dtype not in names:
        raise EngramInterpError(f"unknown dtype {dtype!r}; use one of {sorted(names)}")
    return names[dtype]


def assert_same_tokenizer(*models) -> None:
    """Raise if models in a comparison do not share one tokenizer (token positions would not align):
    compares ``info.tokenizer_id`` and ``info.vocab_size``, so it works across backends."""
    ref = models[0].info
    for other in (m.info for m in models[1:]):
        if ref.tokenizer_id != other.tokenizer_id or ref.vocab_size != other.vocab_size:
            raise EngramInterpError(
                f"{_label(ref)} and {_label(other)} use different tokenizers; paired analyses need one tokenizer"
            )


def _label(info) -> str:
    return info.source or info.name


def load_demo_engram_state(engram, state: dict[str, torch.Tensor]) -> None:
    """Load one Engram layer's weights named as in DeepSeek's demo module into our ``Engram``."""
    from engram_interp.model.engram import demo_names

    names = demo_names(engram.n_branches)
    unknown = sorted(set(state) - set(names))
    if unknown:
        raise CheckpointError(f"unknown demo Engram tensor(s): {unknown[:3]}")
    mapped = {names[k]: v for k, v in state.items()}
    own = engram.state_dict()
    missing = sorted(set(own) - set(mapped))
    if missing:
        raise CheckpointError(f"demo Engram state lacks {missing[:3]}")
    for name, tensor in mapped.items():
        if tuple(tensor.shape) != tuple(own[name].shape):
            raise CheckpointError(f"demo tensor for {name} has shape {tuple(tensor.shape)}, expected {tuple(own[name].shape)}")
    engram.load_state_dict(mapped, strict=True)
