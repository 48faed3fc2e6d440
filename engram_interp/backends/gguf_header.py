"""A bounded walk over a GGUF file's header, before ``gguf.GGUFReader`` (which trusts declared counts
and lengths and can allocate gigabytes for a small file) reads it.

Every count, string length and array length is checked against the bytes left in the file; version 3
only; each tensor's byte size follows from its declared type and shape and must match the region the
file gives it (offsets aligned, in order, no overlap, inside the file); the hyper-parameters a model
needs (``{arch}.block_count``, ``{arch}.context_length``, norm epsilons) must be positive, and the
block count must match the ``blk.{i}.`` tensors present. One ``CheckpointError`` line per problem.
"""

from __future__ import annotations

import math
import re
import struct
from pathlib import Path

from engram_interp.errors import CheckpointError

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
MAX_DIMS = 8
_BLOCK = re.compile(r"^blk\.(\d+)\.")


class _Cursor:
    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.pos, self.path = data, 0, path

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise CheckpointError(f"{self.path} is not a readable GGUF file (truncated or corrupt: {what} runs past the "
                                  "end of the file)")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str, what: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))[0]

    def string(self, what: str) -> str:
        n = self.unpack("<Q", what)
        raw = self.take(n, what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise CheckpointError(f"{self.path}: GGUF {what} is not UTF-8") from None

    def value(self, vtype: int, what: str, depth: int = 0):
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[vtype], what)
        if vtype == _STRING:
            return self.string(what)
        if vtype == _ARRAY and depth == 0:
            itype, count = self.unpack("<I", what), self.unpack("<Q", what)
            smallest = struct.calcsize(_SCALARS[itype]) if itype in _SCALARS else 8
            if itype not in _SCALARS and itype != _STRING or count * smallest > len(self.data) - self.pos:
                raise CheckpointError(f"{self.path}: GGUF {what} declares {count:,} items of type {itype}, "
                                      "more than the file holds")
            items = [self.value(itype, what, depth + 1) for _ in range(count)]
            return items if count <= 64 else None  # long arrays (vocabularies) are checked, not kept
        raise CheckpointError(f"{self.path}: GGUF {what} has unknown value type {vtype}")


def check_gguf_header(path: Path, data: bytes) -> dict:
    """Walk ``data`` (the whole file, memory-mapped) as GGUF; returns the scalar metadata."""
    c = _Cursor(data, path)
    if c.take(4, "magic") != b"GGUF":
        raise CheckpointError(f"{path} is not a readable GGUF file (no GGUF magic)")
    version = c.unpack("<I", "version")
    if version != 3:
        raise CheckpointError(f"{path} is not a readable GGUF file (version {version}; version 3 only)")
    n_tensors, n_kv = c.unpack("<Q", "tensor count"), c.unpack("<Q", "metadata count")
    if n_tensors * 24 > len(data) or n_kv * 13 > len(data):
        raise CheckpointError(f"{path}: GGUF header declares {n_tensors:,} tensors and {n_kv:,} metadata entries, "
                              f"more than {len(data):,} bytes can hold")
    meta: dict = {}
    for _ in range(n_kv):
        key = c.string("metadata key")
        meta[key] = c.value(c.unpack("<I", f"type of {key[:60]}"), f"value of {key[:60]}")
    tensors = []
    for _ in range(n_tensors):
        name = c.string("tensor name")
        n_dims = c.unpack("<I", f"dims of {name[:60]}")
        if not 1 <= n_dims <= MAX_DIMS:
            raise CheckpointError(f"{path}: GGUF tensor {name[:60]} has {n_dims} dimensions")
        shape = [c.unpack("<Q", f"shape of {name[:60]}") for _ in range(n_dims)]
        tensors.append((name, shape, c.unpack("<I", f"type of {name[:60]}"), c.unpack("<Q", f"offset of {name[:60]}")))
    align = meta.get("general.alignment", 32)
    if not isinstance(align, int) or align <= 0 or align & (align - 1):
        raise CheckpointError(f"{path}: GGUF general.alignment {align} is not a power of two")
    start = -(-c.pos // align) * align
    _check_tensors(path, tensors, align, start, len(data))
    _check_hparams(path, meta, tensors)
    return meta


def _check_tensors(path: Path, tensors: list, align: int, start: int, size: int) -> None:
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    regions = []
    for name, shape, ttype, offset in tensors:
        try:
            block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(ttype)]
        except (ValueError, KeyError):
            raise CheckpointError(f"{path}: GGUF tensor {name[:60]} has unknown type {ttype}") from None
        n = math.prod(shape)
        if shape[0] % block:
            raise CheckpointError(f"{path}: GGUF tensor {name[:60]}: a row of {shape[0]} is not whole blocks of {block}")
        if offset % align:
            raise CheckpointError(f"{path}: GGUF tensor {name[:60]} starts at a misaligned offset {offset}")
        regions.append((offset, n // block * type_size, name))
    regions.sort()
    for i, (offset, nbytes, name) in enumerate(regions):
        end = regions[i + 1][0] if i + 1 < len(regions) else size - start
        padded = -(-nbytes // align) * align
        if start + offset + nbytes > size:
            raise CheckpointError(f"{path}: GGUF tensor {name[:60]} runs past the end of the file (truncated?)")
        if not nbytes <= end - offset <= padded + (align if i + 1 == len(regions) else 0):
            raise CheckpointError(f"{path}: GGUF tensor {name[:60]} holds {end - offset:,} bytes but its type and "
                                  f"shape need {nbytes:,} (wrong type, or overlapping tensors)")


def _check_hparams(path: Path, meta: dict, tensors: list) -> None:
    arch = meta.get("general.architecture")
    if not isinstance(arch, str):
        raise CheckpointError(f"{path}: GGUF metadata has no general.architecture")
    blocks = meta.get(f"{arch}.block_count")
    stored = {int(m.group(1)) for name, *_ in tensors if (m := _BLOCK.match(name))}
    if not isinstance(blocks, int) or blocks <= 0:
        raise CheckpointError(f"{path}: GGUF {arch}.block_count = {blocks} must be a positive integer")
    if stored and blocks != max(stored) + 1:
        raise CheckpointError(f"{path}: GGUF {arch}.block_count = {blocks} but the file holds {max(stored) + 1} blocks")
    ctx = meta.get(f"{arch}.context_length")
    if ctx is not None and (not isinstance(ctx, int) or ctx < 2):
        raise CheckpointError(f"{path}: GGUF {arch}.context_length = {ctx} must be at least 2")
    for key, v in meta.items():
        if key.startswith(f"{arch}.") and "epsilon" in key and not (isinstance(v, float) and math.isfinite(v) and v > 0):
            raise CheckpointError(f"{path}: GGUF {key} = {v} must be a positive number")
