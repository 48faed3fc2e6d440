"""The untrained twins the app states every finding against: an entry's architecture and config with
weights drawn at random (``engram_interp.untrained_twin``), cached like the loaded models."""

from __future__ import annotations

import streamlit as st

from app.state import MAX_MODELS, Entry, _load_model

__all__ = ["TWIN_SEED", "TwinEntry", "twin_entry"]

TWIN_SEED = 0  # the seed of every untrained twin the app draws (the CLI's --seed default)


class TwinEntry(Entry):
    """The untrained twin of an entry: its architecture and config, weights drawn at random under
    :data:`TWIN_SEED` (``engram_interp.untrained_twin``); cached results are keyed by ``sha`` =
    the entry's sha + ``~twin``."""

    def model(self):
        return _load_twin(str(self.path), self.sha)


@st.cache_resource(max_entries=MAX_MODELS, show_spinner="Drawing the untrained twin ...")
def _load_twin(path: str, sha: str):
    import engram_interp as ei
    from engram_interp.backends.twin import TWIN_SUFFIX

    return ei.untrained_twin(_load_model(path, sha[: -len(TWIN_SUFFIX)]), TWIN_SEED)


def twin_entry(e: Entry) -> TwinEntry:
    """The :class:`TwinEntry` of ``e`` (label ``LABEL~twin``)."""
    from engram_interp.backends.twin import TWIN_SUFFIX

    return TwinEntry(path=e.path, label=e.label + TWIN_SUFFIX, sha=e.sha + TWIN_SUFFIX, info=e.info, error=e.error,
                     params=e.params, model_info=e.model_info)
