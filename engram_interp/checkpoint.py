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
import mmap
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engram_interp.config import ModelConfig
from engram_interp.errors import CheckpointError, EngramInterpError
from engram_interp.io import loads_strict, open_regular, quote
from engram_interp.tokenizer import Compression

FORMAT = "engram-interp"
FORMAT_VERSION = "1"
SUPPORTED_VERSIONS = {"1"}
_MAX_HEADER = 256 * 1024 * 1024


# safetensors dtype name -> bytes per element. Every tensor of a model is floating point.
DTYPE_SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
               "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1}
FLOAT_DTYPES = {"F64", "F32", "F16", "BF16"}
MAX_DIM = 2**40  # no tensor dimension is larger; bounds every size computed from a header
EXTRA_MEMORY = 64 * 2**20  # bytes a load may need beyond twice the file size (RoPE tables, id tables)
_CHUNK = 1 << 22  # elements per step of the streaming non-finite check
_MAPPED_CHUNK = 1 << 19  # elements per read of a memory-mapped table's non-finite check (2 MiB of fp32)


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


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_entry(path: Path, name: str, entry: Any) -> int:
    """Check one header tensor entry; returns its end offset."""
    where = f"{path}: tensor {quote(name)}"
    if not isinstance(entry, dict):
        raise CheckpointError(f"{where}: the header entry is not an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPE_SIZES:
        raise CheckpointError(f"{where} has no known dtype (got {quote(dtype)})")
    if not isinstance(shape, list) or len(shape) > 8 or not all(_is_int(d) and 0 <= d <= MAX_DIM for d in shape):
        raise CheckpointError(f"{where} has an invalid shape {quote(shape)}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)
            and 0 <= offsets[0] <= offsets[1] <= 2**62):
        raise CheckpointError(f"{where} has invalid data_offsets {quote(offsets)}")
    numel = 1
    for d in shape:
        numel *= d
    if numel * DTYPE_SIZES[dtype] != offsets[1] - offsets[0]:
        raise CheckpointError(f"{where}: shape {shape} of {dtype} needs {numel * DTYPE_SIZES[dtype]} bytes,"
                              f" data_offsets span {offsets[1] - offsets[0]}")
    return offsets[1]


def _raw_header(path: str | os.PathLike) -> tuple[dict[str, Any], int, int]:
    """Validate the container. Returns (header JSON, byte offset of the data, file size)."""
    try:
        fd, size = open_regular(path, "file")
    except CheckpointError:
        raise
    except EngramInterpError as exc:
        raise CheckpointError(str(exc)) from None
    path = Path(path)
    try:
        head = os.pread(fd, 9, 0)
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
        raw = os.pread(fd, n, 8)
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(raw) != n:
        raise CheckpointError(f"{path} is truncated (it changed while being read?)")
    try:
        header = loads_strict(raw, f"the header of {path}")
    except EngramInterpError as exc:
        raise CheckpointError(f"{exc} (not a safetensors file, or damaged)") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} has a corrupt header (not a JSON object)")
    data_end = 0
    for name, entry in header.items():
        if name != "__metadata__":
            data_end = max(data_end, _check_entry(path, name, entry))
    if 8 + n + data_end > size:
        raise CheckpointError(f"{path} is truncated: the header promises {8 + n + data_end} bytes, the file has {size}")
    spans = sorted(tuple(e["data_offsets"]) for k, e in header.items() if k != "__metadata__")
    if any(b < prev_end for (_, prev_end), (b, _) in zip(spans, spans[1:])):  # tensors may not share bytes
        raise CheckpointError(f"{path} has overlapping tensor data_offsets (corrupt header)")
    return header, 8 + n, size


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
    from engram_interp.params import count_params

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


def _nonfinite_count(t: torch.Tensor) -> int:
    flat = t.reshape(-1)
    return sum(int((~torch.isfinite(c)).sum()) for c in flat.split(_CHUNK))


_TORCH_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


_NUMPY_VIEWS = {"F64": (np.float64, torch.float64), "F32": (np.float32, torch.float32),
                "F16": (np.float16, torch.float16), "BF16": (np.uint16, torch.bfloat16)}  # numpy has no bfloat16


def _stream_weights(path: str | os.PathLike, model, allow_nonfinite: bool, map_dtype: torch.dtype | None = None) -> None:
    """Read the file's tensors one at a time (``pread`` at the header's checked offsets) straight
    into ``model``; each is checked for NaN/Inf first. Peak memory: the model plus one tensor.

    Parameters the model holds on the meta device (the Engram tables, built unallocated) become
    tensors of their own: memory-mapped from the file when it stores them as ``map_dtype`` (their
    non-finite check then reads the file in bounded chunks, never the whole table at once),
    otherwise read in whole."""
    header, data_start, _ = _raw_header(path)  # re-read: the offsets belong to the file being read now
    fd, _ = open_regular(path, "file")
    params = dict(model.named_parameters())
    try:
        with torch.no_grad():
            for name, target in model.state_dict().items():
                entry = header.get(name)
                if entry is None or entry["shape"] != list(target.shape) or entry["dtype"] not in _TORCH_DTYPES:
                    raise CheckpointError(f"{path} changed while being read (tensor {name})")
                begin, end = entry["data_offsets"]
                stored = _TORCH_DTYPES[entry["dtype"]]
                if target.is_meta and stored == map_dtype and end > begin:
                    _check_region_finite(fd, path, name, data_start + begin, end - begin, entry["dtype"],
                                         allow_nonfinite)
                    _set_param(model, name, params[name], _map_region(path, data_start + begin, entry))
                    continue
                buf = bytearray(end - begin)
                if os.preadv(fd, [buf], data_start + begin) != len(buf):
                    raise CheckpointError(f"{path} is truncated (tensor {name} is cut short)")
                t = torch.frombuffer(buf, dtype=stored).view(entry["shape"]) if buf else \
                    torch.empty(entry["shape"], dtype=stored)
                if not allow_nonfinite:
                    _refuse_nonfinite(path, name, _nonfinite_count(t))
                if target.is_meta:  # read in whole, in the dtype the rest of the model has
                    _set_param(model, name, params[name], t.to(model.embed.W_E.dtype, copy=True))
                else:
                    target.copy_(t)
                del t, buf
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def _refuse_nonfinite(path, name: str, bad: int) -> None:
    if bad:
        raise CheckpointError(f"{path}: tensor {name} holds {bad:,} NaN/Inf value(s); the model"
                              " would output NaN (pass --allow-nonfinite to load it anyway)")


def _check_region_finite(fd: int, path, name: str, offset: int, nbytes: int, dtype: str, allow_nonfinite: bool) -> None:
    """The non-finite check of one stored tensor, read in chunks of ``_MAPPED_CHUNK`` elements
    (through the page cache, so nothing of it stays in this process's memory)."""
    if allow_nonfinite:
        return
    step = _MAPPED_CHUNK * DTYPE_SIZES[dtype]
    buf = bytearray(min(step, nbytes))
    bad = 0
    for start in range(0, nbytes, step):
        view = memoryview(buf)[: min(step, nbytes - start)]
        if os.preadv(fd, [view], offset + start) != len(view):
            raise CheckpointError(f"{path} is truncated (tensor {name} is cut short)")
        bad += int((~torch.isfinite(torch.frombuffer(view, dtype=_TORCH_DTYPES[dtype]))).sum())
    _refuse_nonfinite(path, name, bad)


def _map_region(path, offset: int, entry: dict) -> torch.Tensor:
    """A stored tensor as a copy-on-write memory map of the file: a page is read when a row on it is
    first touched (no read-ahead: hashed rows are scattered, so neighbouring pages are rarely wanted)
    and a write copies only the page it lands on; the file itself is never changed."""
    np_dtype, torch_dtype = _NUMPY_VIEWS[entry["dtype"]]
    shape = tuple(entry["shape"])
    start = offset - offset % mmap.ALLOCATIONGRANULARITY
    nbytes = math.prod(shape) * DTYPE_SIZES[entry["dtype"]]
    with open(path, "rb") as f:
        region = mmap.mmap(f.fileno(), offset + nbytes - start, access=mmap.ACCESS_COPY, offset=start)
    if hasattr(mmap, "MADV_RANDOM"):
        region.madvise(mmap.MADV_RANDOM)
    array = np.frombuffer(region, dtype=np_dtype, count=math.prod(shape), offset=offset - start).reshape(shape)
    return torch.from_numpy(array).view(torch_dtype)


def _set_param(model, name: str, old: torch.nn.Parameter, value: torch.Tensor) -> None:
    owner, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(owner), leaf, torch.nn.Parameter(value, requires_grad=old.requires_grad))


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
