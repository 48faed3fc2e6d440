"""Glue between pages and the library: run an analysis from ``engram_interp.analysis`` over the
probe data, cache its result on disk (``state.disk_cached``), and read headline numbers back.
"""

from __future__ import annotations

from collections.abc import Sequence

from app.state import Entry


def summaries(entries: Sequence[Entry]) -> list[tuple[str, list[str]]]:
    return [
        ("1 · LogitLens", ["not computed yet: open the LogitLens page"]),
        ("2 · CKA", ["not computed yet: open the CKA page"]),
        ("3 · Gates", ["not computed yet: open the Gates page"]),
        ("4 · Ablation", ["not computed yet: open the Ablation page"]),
    ]
