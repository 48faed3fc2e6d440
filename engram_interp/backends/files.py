"""Checks on a Hugging Face folder or a GGUF file before transformers reads it: safe formats only, one
clear line for every problem a user can fix (never unpickles, never runs code from the folder)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from engram_interp.backends.bounds import check_against_weights, check_config
from engram_interp.errors import CheckpointError, EngramInterpError
from engram_interp.io import open_regular, quote

# Architectures whose Hugging Face forward the backend hooks (see engram_interp/backends/adapters.py).
SUPPORTED = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "Qwen4ExpForCausalLM",
             # mixture-of-experts baselines (routing hooks: engram_interp/backends/moe_hooks.py)
             "MixtralForCausalLM", "Qwen2MoeForCausalLM", "Qwen3MoeForCausalLM", "OlmoeForCausalLM",
             "DeepseekV3ForCausalLM",
             # run by TransformerLens's TransformerBridge (engram_interp/backends/bridge.py)
             "GPT2LMHeadModel", "GPTNeoXForCausalLM", "Gemma2ForCausalLM", "Gemma3ForCausalLM", "Phi3ForCausalLM",
             "Olmo2ForCausalLM")
# GGUF ``general.architecture`` values transformers turns into one of SUPPORTED.
GGUF_ARCHITECTURES = ("llama", "mistral", "qwen2", "qwen3")
PICKLED = ("*.bin", "*.pt", "*.pth", "*.pkl", "*.ckpt")
MAX_JSON_BYTES = 64 * 2**20  # config, index and tokenizer files larger than this are refused
MAX_SAFETENSORS_HEADER = 256 * 2**20


def regular_file(path: Path, what: str) -> Path:
    """``path`` if it is (or links to) a regular file; one line for a FIFO, device, socket or directory,
    decided by ``stat`` before anything opens it (so nothing can block)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such {what}") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        kind = ("a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode)
                else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "not a regular file")
        raise CheckpointError(f"{path} is {kind}, not a regular {what}")
    return path


def read_json(path: Path, what: str):
    """The JSON object of a small regular file; one line for a special file, an oversized, invalid,
    non-UTF-8 or too deeply nested document."""
    try:
        fd, size = open_regular(path, what)
    except EngramInterpError as exc:
        raise CheckpointError(str(exc)) from None
    with os.fdopen(fd, "rb") as fh:
        if size > MAX_JSON_BYTES:
            raise CheckpointError(f"{path}: {what} of {size:,} bytes is larger than {MAX_JSON_BYTES:,}")
        data = fh.read(MAX_JSON_BYTES + 1)
    try:
        return json.loads(data.decode("utf-8"))
    except RecursionError:
        raise CheckpointError(f"{path}: {what} is nested too deeply to be a real {what}") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{path} is not valid JSON: {str(exc)[:120]}") from None


def plain_name(folder: Path, name, where: Path) -> Path:
    """A file an index names, as a path inside ``folder``: a plain file name (no folder part, no
    ``..``, not absolute), else one line. Symlinks are followed later only to regular files."""
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name \
            or os.path.isabs(name) or "\x00" in name:
        raise CheckpointError(f"{where}: shard name {quote(name, 80)} is not a plain file name inside the folder")
    return folder / name


def check_folder(folder: Path) -> str:
    """Validate a Hugging Face model folder; returns its architecture name (one of SUPPORTED).

    Refuses (CheckpointError, one line): no/unreadable config.json, an unsupported architecture,
    pickled weights only, an index naming missing shards, a shard whose safetensors header or length
    is wrong, a folder without tokenizer.json."""
    cfg_path = folder / "config.json"
    if not os.path.lexists(cfg_path):
        raise CheckpointError(f"{folder} is not a Hugging Face model folder (no config.json)")
    cfg = read_json(cfg_path, "config file")
    tc = check_config(cfg, str(cfg_path))
    archs = cfg.get("architectures") or []
    arch = archs[0] if archs else ""
    if arch not in SUPPORTED:
        raise CheckpointError(
            f"{folder}: unsupported architecture {arch or '(none in config.json)'!r}; supported: {', '.join(SUPPORTED)}"
        )
    headers: dict[str, dict] = {}
    for shard in weight_files(folder):
        headers.update(check_safetensors(shard))
    check_against_weights(tc, headers, str(folder))
    tok = folder / "tokenizer.json"
    if not os.path.lexists(tok):
        raise CheckpointError(f"{folder} has no tokenizer.json; text analyses need the model's own (fast) tokenizer")
    regular_file(tok, "tokenizer file")
    for name in ("tokenizer_config.json", "generation_config.json", "special_tokens_map.json"):
        if os.path.lexists(folder / name):
            read_json(folder / name, name)
    return arch


def weight_files(folder: Path) -> list[Path]:
    """The safetensors shards of ``folder`` (from ``model.safetensors.index.json`` when present)."""
    index = folder / "model.safetensors.index.json"
    if os.path.lexists(index):
        doc = read_json(index, "safetensors index")
        wmap = doc.get("weight_map") if isinstance(doc, dict) else None
        if not isinstance(wmap, dict) or not wmap:
            raise CheckpointError(f"{index} is not a valid safetensors index (needs a 'weight_map')")
        paths = sorted({plain_name(folder, n, index) for n in wmap.values()})
        missing = [p.name for p in paths if not os.path.lexists(p)]
        if missing:
            raise CheckpointError(f"{folder}: the index names {len(missing)} missing shard(s), e.g. {missing[0]}")
        return [regular_file(p, "safetensors shard") for p in paths]
    shards = sorted(folder.glob("*.safetensors"))
    if shards:
        return [regular_file(p, "safetensors shard") for p in shards]
    pickled = sorted(p.name for pattern in PICKLED for p in folder.glob(pattern))
    if pickled:
        raise CheckpointError(
            f"{folder} holds only pickled weights ({pickled[0]}); engram-interp never unpickles: convert them to "
            "safetensors first (e.g. model.save_pretrained(folder, safe_serialization=True) in a trusted environment)"
        )
    raise CheckpointError(f"{folder} has no weights (*.safetensors)")


def _int_list(value) -> bool:
    return isinstance(value, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in value)


def check_safetensors(path: Path) -> dict[str, dict]:
    """A safetensors file whose header parses and whose tensors fit in the file, else CheckpointError.
    Returns its tensor entries (name -> dtype, shape, data_offsets). Opened non-blocking: a FIFO never hangs."""
    try:
        fd, size = open_regular(path, "safetensors shard")
    except EngramInterpError as exc:
        raise CheckpointError(str(exc)) from None
    try:
        with os.fdopen(fd, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            if n <= 0 or 8 + n > size or n > MAX_SAFETENSORS_HEADER:
                raise ValueError("header length out of range")
            header = json.loads(fh.read(n))
        if not isinstance(header, dict):
            raise ValueError("header is not an object")
        tensors = {k: v for k, v in header.items() if k != "__metadata__"}
        end = 0
        for v in tensors.values():
            if not (isinstance(v, dict) and isinstance(v.get("dtype"), str) and _int_list(v.get("shape"))
                    and _int_list(v.get("data_offsets")) and len(v["data_offsets"]) == 2):
                raise ValueError("a tensor entry is not {dtype: str, shape: [int], data_offsets: [int, int]}")
            a, b = v["data_offsets"]
            if not 0 <= a <= b or any(d < 0 for d in v["shape"]):
                raise ValueError("bad offsets")
            end = max(end, b)
    except RecursionError:
        raise CheckpointError(f"{path} is corrupt (its safetensors header is nested too deeply)") from None
    except (OSError, ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError, AttributeError):
        raise CheckpointError(f"{path} is corrupt (not a readable safetensors file)") from None
    if 8 + n + end > size:
        raise CheckpointError(f"{path} is corrupt (truncated: {size} bytes, header needs {8 + n + end})")
    return tensors


def check_gguf(path: Path) -> str:
    """Validate a GGUF file; returns its ``general.architecture``. One line for: gguf not installed,
    a file that is not GGUF, an architecture transformers cannot map, a tensor type gguf cannot read."""
    if not os.path.lexists(path):
        raise CheckpointError(f"no such GGUF file: {path}")
    regular_file(path, "GGUF file")
    try:
        import gguf
        from gguf.quants import _type_traits  # the tensor types gguf can dequantize
    except ImportError:
        raise CheckpointError("reading .gguf files needs the gguf package: pip install gguf==0.19.0") from None
    import mmap

    from engram_interp.backends.gguf_header import check_gguf_header

    try:
        fd, size = open_regular(path, "GGUF file")
    except EngramInterpError as exc:
        raise CheckpointError(str(exc)) from None
    try:
        if size < 24:
            raise CheckpointError(f"{path} is not a readable GGUF file ({size} bytes)")
        with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as data:
            check_gguf_header(path, data)
    finally:
        os.close(fd)
    try:
        reader = gguf.GGUFReader(str(path))
        field = reader.fields["general.architecture"]
        arch = bytes(field.parts[field.data[0]]).decode("utf-8")
    except (OSError, ValueError, KeyError, IndexError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not a readable GGUF file ({type(exc).__name__}: {str(exc)[:120]})") from None
    if arch not in GGUF_ARCHITECTURES:
        raise CheckpointError(f"{path}: unsupported GGUF architecture {arch!r}; supported: {', '.join(GGUF_ARCHITECTURES)}")
    plain = {gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.BF16}
    for t in reader.tensors:
        if t.tensor_type not in plain and t.tensor_type not in _type_traits:
            raise CheckpointError(f"{path}: tensor {t.name} has type {t.tensor_type.name}, which gguf cannot dequantize")
    return arch
