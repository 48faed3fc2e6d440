"""The safetensors layer of a ``.ckpt``: its header checked before anything is allocated (offsets,
shapes, dtypes, bounded sizes), then its weights read into a built model: tensors streamed in bounded
chunks, Engram tables memory-mapped (copy-on-write) on the CPU, and NaN/Inf refused with the tensor's
name (``allow_nonfinite`` to look anyway)."""

from __future__ import annotations

import math
import mmap
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engram_interp.errors import CheckpointError, EngramInterpError
from engram_interp.io import loads_strict, open_regular, quote

_CHUNK = 1 << 22  # elements per step of the streaming non-finite check
_MAPPED_CHUNK = 1 << 19  # elements per read of a memory-mapped table's non-finite check (2 MiB of fp32)
# safetensors dtype name -> bytes per element. Every tensor of a model is floating point.


def nonfinite_count(t: torch.Tensor) -> int:
    """Number of NaN/Inf entries of ``t`` (0 for non-floating or meta tensors), counted chunk by chunk
    so the check's extra memory is one chunk's mask."""
    if not t.is_floating_point() or t.is_meta:
        return 0
    flat = t.detach().reshape(-1)
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
                    _refuse_nonfinite(path, name, nonfinite_count(t))
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


_MAX_HEADER = 256 * 1024 * 1024


DTYPE_SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
               "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1}


FLOAT_DTYPES = {"F64", "F32", "F16", "BF16"}


MAX_DIM = 2**40  # no tensor dimension is larger; bounds every size computed from a header


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
