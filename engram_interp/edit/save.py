"""Writing an edited model: a new ``.ckpt``, never the source, never an existing file without ``force``.

Only the engram-interp backend can be written (``checkpoint.save``: its tensors exactly as they are
in memory, so every tensor the edit did not touch keeps its bytes). A Hugging Face model (Qwen4-Exp
PLE tables included) is refused in one line: its tables cannot be edited through the interface yet.
"""

from __future__ import annotations

import os
from pathlib import Path

from engram_interp.errors import EngramInterpError
from engram_interp.io import check_output_file, quote

__all__ = ["check_editable", "check_destination", "write_edited"]


def check_editable(model) -> None:
    """A one-line user error unless ``model`` is an engram-interp Engram model whose rows can be written."""
    if not model.engram_layers:
        raise EngramInterpError(f"this {model.info.kind} model has no Engram layers: there are no table rows to edit")
    if model.info.backend != "engram-interp":
        raise EngramInterpError(f"{model.info.architecture} ({model.info.backend} backend): editing is supported for "
                                "engram-interp .ckpt models only; Hugging Face folders (Qwen4-Exp PLE) cannot be written yet")


def check_destination(source: str | os.PathLike, out: str | os.PathLike, force: bool = False) -> Path:
    """Check before editing that ``out`` may receive the edited model: a ``.ckpt`` file name, not the
    source itself (refused even with ``force``), not an existing file unless ``force``. Returns the Path."""
    p, src = Path(out), Path(source)
    if p.exists() and src.exists() and os.path.samefile(p, src) or p.resolve() == src.resolve():
        raise EngramInterpError(f"--out {quote(str(out))} is the source model; an edit is written to a new file")
    out = check_output_file(out, force)
    if out.suffix != ".ckpt":
        raise EngramInterpError(f"--out {quote(str(out))}: the edited model is written as a .ckpt file (name it *.ckpt)")
    return out


def write_edited(model, out: str | os.PathLike, provenance_edit: dict, force: bool = False) -> Path:
    """Save the (edited, in memory) ``model`` to ``out`` with its provenance plus ``{"edit": provenance_edit}``.
    Returns the Path."""
    from engram_interp.checkpoint import save

    check_editable(model)
    out = check_destination(model.info.source, out, force)
    provenance = dict(getattr(model, "provenance", None) or {})
    provenance["edit"] = {**provenance_edit, "source": str(model.info.source)}
    return save(model, out, provenance=provenance, overwrite=force)
