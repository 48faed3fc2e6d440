"""What every foreign load goes through after transformers has built the model: weights checked for
NaN/Inf (in bounded chunks, naming the first bad tensor), and transformers' own prints and warnings
kept quiet so that our one error line is the only thing a user sees."""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
import warnings
from pathlib import Path

import torch

from engram_interp.errors import CheckpointError
from engram_interp.model.weights import nonfinite_count

def refuse_nonfinite(module: torch.nn.Module, source: str | Path) -> None:
    """Raise CheckpointError naming the first parameter or buffer that holds NaN/Inf (weights that
    accelerate offloaded to the CPU or disk are read from its offload map, one at a time)."""
    from engram_interp.backends.placement import offloaded_tensors

    for name, t in itertools.chain(module.named_parameters(), module.named_buffers(), offloaded_tensors(module)):
        bad = nonfinite_count(t)
        if bad:
            raise CheckpointError(f"{source}: weight {name} holds {bad:,} NaN/Inf value(s) "
                                  "(pass --allow-nonfinite to look anyway)")


@contextlib.contextmanager
def quiet_transformers(bars: bool = False):
    """Silence transformers' logging (its load-report table), Python warnings and stray stdout prints
    for the duration, and its progress bars unless ``bars`` (a load large enough for a bar to help):
    a refusal after a small load is then the only line a user sees."""
    loggers = [logging.getLogger(n) for n in ("transformers", "gguf", "huggingface_hub")]
    levels = [lg.level for lg in loggers]
    try:
        from transformers.utils import logging as hf_logging

        hf_level = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        bars_were_off = hf_logging.is_progress_bar_enabled() is False
        if not bars:
            hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a dependency
        hf_logging = None
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        if hf_logging is not None:
            hf_logging.set_verbosity(hf_level)
            if not bars and not bars_were_off:
                hf_logging.enable_progress_bar()
