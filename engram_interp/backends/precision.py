"""Which dtype a Hugging Face model is loaded in, and why (``engram-interp info`` says both).

``--dtype`` / ``ei.load(dtype=)`` wins. Otherwise: on a GPU the checkpoint's own dtype (its
``config.json`` ``dtype``; a bf16 checkpoint stays bf16: half the memory, and the arithmetic it was
trained in); on the CPU float32 (CPU kernels in half precision are slow and some are missing).
Whatever the model's dtype, the analyses accumulate in float32/float64 (each casts activations on
the way in).
"""

from __future__ import annotations

import torch

__all__ = ["choose_dtype", "stored_dtype"]

_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16", torch.float64: "float64"}


def stored_dtype(config) -> torch.dtype | None:
    """The dtype the checkpoint declares (``config.dtype``), or None when it declares none (a GGUF)."""
    d = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(d, str):
        d = getattr(torch, d, None)
    return d if isinstance(d, torch.dtype) and d.is_floating_point else None


def choose_dtype(asked: torch.dtype | None, config, on_gpu: bool) -> tuple[torch.dtype, str]:
    """``(dtype, why)``: ``asked`` if given, else the checkpoint's own dtype on a GPU, else float32."""
    stored = stored_dtype(config)
    where = f"the checkpoint stores {_NAMES.get(stored, str(stored))}" if stored else "the checkpoint declares no dtype"
    if asked is not None:
        return asked, f"asked for with --dtype ({where})"
    if on_gpu and stored is not None:
        return stored, "the checkpoint's own dtype (the default on a GPU)"
    if on_gpu:
        return torch.float32, f"the default when {where}"
    keep = f"; --dtype {_NAMES[stored]} keeps it" if stored is not None and stored != torch.float32 else ""
    return torch.float32, f"the default on the CPU ({where}{keep})"
