"""Model backends other than our own ``EngramTransformer``: Hugging Face folders and GGUF files.

``engram_interp.load(path)`` dispatches here (:func:`is_foreign`) for a folder with a ``config.json``,
a ``.gguf`` file, or a known model name (``engram_interp.backends.known``).
"""

from __future__ import annotations

import os
from pathlib import Path


def is_foreign(path: str | os.PathLike) -> bool:
    """True when ``path`` is for the Hugging Face backend: a folder, a ``.gguf`` file, or a known name."""
    from engram_interp.backends.known import KNOWN

    p = Path(path)
    return p.is_dir() or p.suffix.lower() == ".gguf" or (not p.exists() and str(path) in KNOWN)


def load_foreign(path: str | os.PathLike, device=None, dtype=None, allow_nonfinite: bool = False, placement=None):
    """Load a Hugging Face folder, a ``.gguf`` file or a known model name -> ``HFModel`` (eval mode);
    ``placement``: a ``backends.placement.Placement`` (accelerate places the layers) or None."""
    from engram_interp.backends.huggingface import load_hf
    from engram_interp.backends.known import KNOWN, locate

    p = Path(path)
    if not p.exists() and str(path) in KNOWN:
        p = locate(str(path))
    return load_hf(p, device=device, dtype=dtype, allow_nonfinite=allow_nonfinite, placement=placement)
