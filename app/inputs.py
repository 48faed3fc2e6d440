"""What the app's analyses read: the probe corpus and task suites (with content ids for the result
cache), and library modules that may be missing from a build (one message, not a traceback)."""

from __future__ import annotations

from app import state
from engram_interp.defaults import DEFAULTS


def library(module: str, what: str, stop: bool = True):
    """Import ``engram_interp.analysis.<module>``; when it is missing, say so on the page and stop the
    page (or return None when ``stop`` is False)."""
    import importlib

    import streamlit as st

    try:
        return importlib.import_module(f"engram_interp.analysis.{module}")
    except ImportError as exc:
        st.info(f"{what} is not available in this build of engram_interp (`engram_interp.analysis.{module}`: {exc}).")
        if stop:
            st.stop()
        return None


def data_id(path) -> str:
    """Identity of the data a cached result was computed from, for its cache key: path, size and
    mtime of a file, or of every file in a folder (cheap: nothing is read). A result computed on
    other data (another ``ENGRAM_INTERP_CORPUS``, an edited probe file) never answers for this one."""
    import hashlib
    from pathlib import Path

    p = Path(path)
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    blob = "|".join(f"{f}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files if f.exists())
    return hashlib.sha256(f"{p.resolve()}|{blob}".encode()).hexdigest()[:16]


def corpus_id() -> str:
    """:func:`data_id` of the library's default corpus (``default_corpus_path``)."""
    from engram_interp.analysis.common import default_corpus_path

    return data_id(default_corpus_path())


def corpus_texts() -> tuple[list[str], str]:
    """The library's default corpus (``engram_interp.analysis.common.default_texts``) and where it
    came from. Raises EngramInterpError when there is none (the page shows the message)."""
    from engram_interp.analysis.common import default_corpus_path, default_texts

    texts = default_texts()
    return texts, f"{len(texts)} texts from {default_corpus_path()}"


SUITE_ITEMS = DEFAULTS.items  # items per suite the app scores (a seeded subsample, as `engram-interp ablate --max-items`)


def probe_suites() -> tuple[dict[str, list[dict]], str | None]:
    """The task suites of the probe folder (``engram_interp.data.suite_files.read_suites``), at most
    ``SUITE_ITEMS`` items each (seed 0), and, when there are none or a file is malformed, ``({}, the reason)``."""
    from engram_interp.data.suite_files import read_suites, subsample_suites
    from engram_interp.errors import EngramInterpError

    try:
        return subsample_suites(read_suites(state.probes_dir()), SUITE_ITEMS, seed=DEFAULTS.seed), None
    except EngramInterpError as exc:
        return {}, str(exc)
