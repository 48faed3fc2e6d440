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
        self.last_count = 0  # items in the last array read

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
            self.last_count = count
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
    counts: dict[str, int] = {}  # array lengths (long arrays are not kept in meta)
    for _ in range(n_kv):
        key = c.string("metadata key")
        vtype = c.unpack("<I", f"type of {key[:60]}")
        meta[key] = c.value(vtype, f"value of {key[:60]}")
        if vtype == _ARRAY:
            counts[key] = c.last_count
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
    _check_shapes(path, meta, tensors, counts)
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


def _check_shapes(path: Path, meta: dict, tensors: list, counts: dict[str, int]) -> None:
    """The sizes the metadata declares against the tensors' shapes (GGUF lists the innermost dimension
    first: ``token_embd.weight`` is ``[hidden, vocab]``): embedding length, vocabulary, feed-forward
    length, head counts and RoPE dimensions that transformers would build a model from, and token ids
    inside the token list."""
    arch = meta["general.architecture"]
    shapes = {name: shape for name, shape, *_ in tensors}

    def bad(key: str, why: str) -> CheckpointError:
        return CheckpointError(f"{path}: GGUF {key} = {str(meta.get(key))[:40]} {why}")

    n_tokens = counts.get("tokenizer.ggml.tokens")
    for key, v in meta.items():
        if key.startswith("tokenizer.ggml.") and key.endswith("_token_id") and n_tokens is not None:
            if not isinstance(v, int) or not 0 <= v < n_tokens:
                raise bad(key, f"is not a token id of the {n_tokens}-token list")
    emb = shapes.get("token_embd.weight")
    if emb is None or len(emb) != 2:
        return
    hidden, vocab = emb
    for key, want, what in ((f"{arch}.embedding_length", hidden, "token_embd.weight rows are"),
                            (f"{arch}.vocab_size", vocab, "token_embd.weight holds"),
                            (f"{arch}.feed_forward_length", (shapes.get("blk.0.ffn_up.weight") or [0, None])[-1],
                             "blk.0.ffn_up.weight has")):
        if key in meta and want is not None and meta[key] != want:
            raise bad(key, f"but {what} {want} (the tensors decide the model's shape)")
    if n_tokens is not None and n_tokens > vocab:
        raise CheckpointError(f"{path}: GGUF token list has {n_tokens} tokens but token_embd.weight only {vocab} rows")
    q, k = shapes.get("blk.0.attn_q.weight"), shapes.get("blk.0.attn_k.weight")
    heads = meta.get(f"{arch}.attention.head_count")
    kv = meta.get(f"{arch}.attention.head_count_kv", heads)
    if q is None or k is None or heads is None:
        return
    for key, n, out in ((f"{arch}.attention.head_count", heads, q[-1]), (f"{arch}.attention.head_count_kv", kv, k[-1])):
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0 or out % n:
            raise bad(key, f"does not divide the {out} outputs of blk.0's attention projection")
    head_dim = q[-1] // heads
    if k[-1] // kv != head_dim:
        raise bad(f"{arch}.attention.head_count_kv", f"gives keys of {k[-1] // kv} dimensions but queries of {head_dim}")
    rope = meta.get(f"{arch}.rope.dimension_count")
    if rope is not None and (not isinstance(rope, int) or not 0 < rope <= head_dim or rope % 2):
        raise bad(f"{arch}.rope.dimension_count", f"must be an even number in 2..{head_dim} (the head dimension)")
