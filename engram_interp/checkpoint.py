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

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engram_interp.config import ModelConfig
from engram_interp.errors import CheckpointError, EngramInterpError
from engram_interp.io import loads_strict, quote
from engram_interp.model.weights import FLOAT_DTYPES, _is_int, _raw_header, _stream_weights
from engram_interp.tokenizer import Compression

FORMAT = "engram-interp"
FORMAT_VERSION = "1"
SUPPORTED_VERSIONS = {"1"}


EXTRA_MEMORY = 64 * 2**20  # bytes a load may need beyond twice the file size (RoPE tables, id tables)


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
    size: int = 0  # file size in bytes

    def tokenizer(self):
        """The ``tokenizers.Tokenizer`` of the checkpoint (None when it has none); CheckpointError
        when the stored tokenizer JSON is damaged."""
        from tokenizers import Tokenizer

        if not self.tokenizer_json:
            return None
        try:
            return Tokenizer.from_str(self.tokenizer_json)
        except Exception as exc:  # the tokenizers library raises a bare Exception for bad JSON
            raise CheckpointError(f"{self.path} has a damaged tokenizer: {quote(str(exc))}") from None


def _meta_json(path: Path, meta: dict[str, str], key: str, default: str | None = None) -> Any:
    text = meta.get(key, default)
    if text is None:
        raise CheckpointError(f"{path} lacks the metadata field {key!r}")
    return loads_strict(text, f"{path}: metadata field {key!r}")


def _compression(path: Path, raw: Any, vocab_size: int) -> Compression:
    if not isinstance(raw, list) or len(raw) != vocab_size or not all(_is_int(v) and 0 <= v < vocab_size for v in raw):
        raise CheckpointError(f"{path}: the compression table does not map the {vocab_size}-token vocabulary to ids"
                              f" in 0..{vocab_size - 1}")
    table = np.asarray(raw, dtype=np.int64)
    n_canonical = int(table.max()) + 1 if table.size else 0
    if len(np.unique(table)) != n_canonical:
        raise CheckpointError(f"{path}: the compression table is not onto 0..V'-1")
    return Compression(table=table, n_canonical=n_canonical)


def read_info(path: str | os.PathLike) -> CheckpointInfo:
    """Read and check a checkpoint's container and metadata without loading its tensors. Returns a
    CheckpointInfo; every defect is one CheckpointError line quoting at most ~200 characters of
    the file's own content."""
    header, _, size = _raw_header(path)
    path = Path(path)
    meta = header.get("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise CheckpointError(f"{path}: __metadata__ must be an object of strings")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a safetensors file but not an engram-interp checkpoint (no '{FORMAT}' metadata)")
    version = meta.get("format_version")
    if version not in SUPPORTED_VERSIONS:
        raise CheckpointError(
            f"{path} has format version {quote(version)}; this engram-interp reads {sorted(SUPPORTED_VERSIONS)}"
            " (upgrade engram-interp)"
        )
    try:
        config = ModelConfig.from_dict(_meta_json(path, meta, "config"))
        compression = _compression(path, _meta_json(path, meta, "compression"), config.vocab_size)
        provenance = _meta_json(path, meta, "provenance", "{}")
    except CheckpointError:
        raise
    except EngramInterpError as exc:
        raise CheckpointError(f"{path} has invalid metadata: {exc}") from None
    if not isinstance(provenance, dict):
        raise CheckpointError(f"{path}: the provenance metadata must be a JSON object, got {type(provenance).__name__}")
    tensors = {k: (v["dtype"], list(v["shape"])) for k, v in header.items() if k != "__metadata__"}
    return CheckpointInfo(
        path=path,
        config=config,
        tokenizer_json=meta.get("tokenizer", ""),
        compression=compression,
        provenance=provenance,
        format_version=version,
        tensors=tensors,
        size=size,
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


def load(path: str | os.PathLike, device: str | torch.device | None = None, dtype: torch.dtype | str | None = None,
         allow_nonfinite: bool = False):
    """Load a .ckpt into a ready EngramTransformer (eval mode) on ``device`` (default: CUDA if available).

    Checks everything before allocating: the container, the metadata, the config (bounded sizes),
    the tokenizer, and the config's parameter count and computed buffers against what the file
    holds; then builds the model, compares every tensor name and shape, and streams the weights in
    one tensor at a time, each checked for NaN/Inf (refused, naming the tensor, unless
    ``allow_nonfinite``). Memory: about the model's own size plus one tensor, where the Engram
    memory tables count only with the rows a forward touches: on the CPU, when the file stores them
    in the dtype asked for, they are memory-mapped from the file (copy-on-write) instead of read in.
    """
    target_device, target_dtype = resolve_device(device), resolve_dtype(dtype)
    info = read_info(path)
    tokenizer = info.tokenizer()
    _check_layers(info)
    _check_size(info)
    model = _build(info, tokenizer, table_device="meta")
    _check_tensors(info, {k: list(v.shape) for k, v in model.state_dict().items()})
    map_dtype = (target_dtype or model.embed.W_E.dtype) if target_device.type == "cpu" else None
    _stream_weights(path, model, allow_nonfinite, map_dtype)
    model.provenance = info.provenance
    model.checkpoint_path = info.path
    return model.to(device=target_device, dtype=target_dtype).eval()


def _build(info: CheckpointInfo, tokenizer, table_device=None):
    from engram_interp.model import EngramTransformer

    try:
        return EngramTransformer(info.config, tokenizer=tokenizer, compression=info.compression,
                                 table_device=table_device)
    except CheckpointError:
        raise
    except EngramInterpError as exc:
        raise CheckpointError(f"{info.path}: {exc}") from None


def _check_layers(info: CheckpointInfo) -> None:
    """Cheap first check: the blocks named in the header are exactly 0..n_layers-1 (before anything
    is built from n_layers)."""
    layers = set()
    for name in info.tensors:
        if name.startswith("blocks."):
            head = name.split(".", 2)[1]
            if not head.isdigit() or len(head) > 6:
                raise CheckpointError(f"{info.path} has a tensor of no block: {quote(name)}")
            layers.add(int(head))
    n = info.config.n_layers
    if layers != set(range(n)):
        raise CheckpointError(f"{info.path}: the config has n_layers={n} but the file holds tensors of"
                              f" {len(layers)} block(s)")


def _check_size(info: CheckpointInfo) -> None:
    """Before anything is allocated: the config's parameter count (``count_params``, exact for the
    built model) must not exceed the values the file holds, and the memory the model computes
    rather than stores (RoPE tables, id tables) must stay within ``2 x file size + EXTRA_MEMORY``.
    So a model built from a checkpoint never costs much more than the file itself."""
    from engram_interp.model.params import count_params

    cfg = info.config
    if cfg.engram is not None:
        try:
            cfg = dataclasses.replace(cfg, engram=cfg.engram.resolved(info.compression.n_canonical))
        except EngramInterpError as exc:
            raise CheckpointError(f"{info.path}: {exc}") from None
    counts = count_params(cfg)
    needed = counts.P_tot + counts.embedding
    stored = 0
    for _, shape in info.tensors.values():
        stored += math.prod(shape)
    computed = cfg.n_layers * cfg.max_seq_len * cfg.d_head * 4 + cfg.vocab_size * 8  # RoPE cos+sin, id table
    if needed > stored:
        if 4 * needed + computed <= 2 * info.size + EXTRA_MEMORY:  # small enough to build: name the tensors
            probe = _build(info, info.tokenizer())
            _check_tensors(info, {k: list(v.shape) for k, v in probe.state_dict().items()})
        raise CheckpointError(f"{info.path}: its config describes {needed:,} parameters, the file holds {stored:,}"
                              " values (config and tensors do not match)")
    if 4 * stored + computed > 2 * info.size + EXTRA_MEMORY:
        raise CheckpointError(f"{info.path}: its config needs {(4 * stored + computed) / 2**20:,.0f} MiB of memory"
                              f" for a {info.size / 2**20:,.1f} MiB file (max_seq_len or vocab_size too large)")


def _check_tensors(info: CheckpointInfo, expected: dict[str, list[int]]) -> None:
    path = info.path
    missing = sorted(set(expected) - set(info.tensors))
    extra = sorted(set(info.tensors) - set(expected))
    if missing:
        raise CheckpointError(f"{path} lacks {len(missing)} tensor(s) the config needs, e.g. {quote(missing[:3])}")
    if extra:
        raise CheckpointError(f"{path} has {len(extra)} tensor(s) the config does not know, e.g. {quote(extra[:3])}")
    for name, shape in expected.items():
        dtype, stored = info.tensors[name]
        if stored != shape:
            raise CheckpointError(f"{path}: tensor {name} has shape {quote(stored)}, the config needs {shape}")
        if dtype not in FLOAT_DTYPES:
            raise CheckpointError(f"{path}: tensor {name} is {dtype}; model weights are floating point"
                                  f" ({', '.join(sorted(FLOAT_DTYPES))})")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """None/'auto' -> CUDA when present else CPU; 'cpu', 'cuda', 'cuda:N' -> that device. Anything
    else (mps, meta, a typo, a GPU index that does not exist) is a one-line user error."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise EngramInterpError(f"unknown device {quote(device)} (use cpu, cuda, cuda:N)") from None
    if device.type not in {"cpu", "cuda"}:
        raise EngramInterpError(f"device {quote(str(device))} is not supported (use cpu, cuda, cuda:N)")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise EngramInterpError("device 'cuda' requested but no CUDA GPU is available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise EngramInterpError(f"no GPU {device.index}: this machine has {torch.cuda.device_count()}")
    return device


def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
             "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float64": torch.float64}
    if dtype not in names:
        raise EngramInterpError(f"unknown dtype {quote(dtype)}; use one of {sorted(names)}")
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
