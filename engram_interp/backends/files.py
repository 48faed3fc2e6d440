"""Checks on a Hugging Face folder or a GGUF file before transformers reads it: safe formats only, one
clear line for every problem a user can fix (never unpickles, never runs code from the folder)."""

from __future__ import annotations

import json
from pathlib import Path

from engram_interp.errors import CheckpointError

# Architectures whose Hugging Face forward the backend hooks (see engram_interp/backends/adapters.py).
SUPPORTED = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "Qwen4ExpForCausalLM")
# GGUF ``general.architecture`` values transformers turns into one of SUPPORTED.
GGUF_ARCHITECTURES = ("llama", "mistral", "qwen2", "qwen3")
PICKLED = ("*.bin", "*.pt", "*.pth", "*.pkl", "*.ckpt")


def check_folder(folder: Path) -> str:
    """Validate a Hugging Face model folder; returns its architecture name (one of SUPPORTED).

    Refuses (CheckpointError, one line): no/unreadable config.json, an unsupported architecture,
    pickled weights only, an index naming missing shards, a shard whose safetensors header or length
    is wrong, a folder without tokenizer.json."""
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise CheckpointError(f"{folder} is not a Hugging Face model folder (no config.json)")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{cfg_path} is not valid JSON: {exc}") from None
    archs = cfg.get("architectures") or []
    arch = archs[0] if archs else ""
    if arch not in SUPPORTED:
        raise CheckpointError(
            f"{folder}: unsupported architecture {arch or '(none in config.json)'!r}; supported: {', '.join(SUPPORTED)}"
        )
    for shard in weight_files(folder):
        check_safetensors(shard)
    if not (folder / "tokenizer.json").is_file():
        raise CheckpointError(f"{folder} has no tokenizer.json; text analyses need the model's own (fast) tokenizer")
    return arch


def weight_files(folder: Path) -> list[Path]:
    """The safetensors shards of ``folder`` (from ``model.safetensors.index.json`` when present)."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            names = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, AttributeError, TypeError):
            raise CheckpointError(f"{index} is not a valid safetensors index (needs a 'weight_map')") from None
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise CheckpointError(f"{folder}: the index names {len(missing)} missing shard(s), e.g. {missing[0]}")
        return [folder / n for n in names]
    shards = sorted(folder.glob("*.safetensors"))
    if shards:
        return shards
    pickled = sorted(p.name for pattern in PICKLED for p in folder.glob(pattern))
    if pickled:
        raise CheckpointError(
            f"{folder} holds only pickled weights ({pickled[0]}); engram-interp never unpickles: convert them to "
            "safetensors first (e.g. model.save_pretrained(folder, safe_serialization=True) in a trusted environment)"
        )
    raise CheckpointError(f"{folder} has no weights (*.safetensors)")


def check_safetensors(path: Path) -> None:
    """A safetensors file whose header parses and whose tensors fit in the file, else CheckpointError."""
    size = path.stat().st_size
    try:
        with path.open("rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            if n <= 0 or 8 + n > size:
                raise ValueError("header length out of range")
            header = json.loads(fh.read(n))
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (OSError, ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError):
        raise CheckpointError(f"{path} is corrupt (not a readable safetensors file)") from None
    if 8 + n + end > size:
        raise CheckpointError(f"{path} is corrupt (truncated: {size} bytes, header needs {8 + n + end})")


def check_gguf(path: Path) -> str:
    """Validate a GGUF file; returns its ``general.architecture``. One line for: gguf not installed,
    a file that is not GGUF, an architecture transformers cannot map, a tensor type gguf cannot read."""
    if not path.is_file():
        raise CheckpointError(f"no such GGUF file: {path}")
    try:
        import gguf
        from gguf.quants import _type_traits  # the tensor types gguf can dequantize
    except ImportError:
        raise CheckpointError("reading .gguf files needs the gguf package: pip install gguf==0.19.0") from None
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
