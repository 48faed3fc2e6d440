"""Progress bars with a total (so tqdm shows a percentage and an ETA) for the analyses' token loops,
and the libraries' warnings held until the work starts.

Under :func:`warnings_held` (the CLI runs every command in it) transformers' log records and Python
warnings are kept, not printed, until the first progress bar starts (:func:`progress_bar`) or the
command ends; a command that refuses (``EngramInterpError``) drops them, so that its refusal is the
one line it prints. Warnings emitted after the release print as usual.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")

__all__ = ["count_tokens", "token_progress", "progress_bar", "warnings_held", "hold_library_logs",
           "release_held_warnings"]

# while warnings_held() is active: {"logs": {logger: (handlers, propagate)}, "records", "warnings", "released", ...}
_HELD: dict | None = None


class _Keep(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if _HELD is not None:
            _HELD["records"].append(record)


def hold_library_logs(names: Sequence[str] = ("transformers",)) -> None:
    """Inside :func:`warnings_held`: hold the records of these loggers from now on (call it once the
    library is imported, e.g. after a model loads; a no-op outside the block or after the release)."""
    if _HELD is None or _HELD["released"]:
        return
    for name in names:
        if name.split(".")[0] not in sys.modules or name in _HELD["logs"]:
            continue
        lg = logging.getLogger(name)
        _HELD["logs"][name] = (lg.handlers[:], lg.propagate)
        lg.handlers, lg.propagate = [_Keep()], False


def _restore() -> list:
    for name, (handlers, propagate) in _HELD["logs"].items():
        lg = logging.getLogger(name)
        lg.handlers, lg.propagate = handlers, propagate
    return [(h, r) for r in _HELD["records"] for name, (hs, _) in _HELD["logs"].items()
            if r.name == name or r.name.startswith(name + ".") for h in hs]


def release_held_warnings() -> None:
    """Print what :func:`warnings_held` kept, as it would have printed, and let later warnings through."""
    if _HELD is None or _HELD["released"]:
        return
    _HELD["released"] = True
    for handler, record in _restore():
        if record.levelno >= handler.level:
            handler.handle(record)
    for w in _HELD["warnings"]:
        _HELD["showwarning"](*w)
    for key in ("records", "warnings", "logs"):
        _HELD[key].clear()


@contextlib.contextmanager
def warnings_held():
    """Hold Python warnings now, and the loggers :func:`hold_library_logs` names, until the work starts
    (the first :func:`progress_bar`) or the block ends; dropped when it raises ``EngramInterpError``."""
    from engram_interp.errors import EngramInterpError

    global _HELD
    if _HELD is not None:  # nested: the outer block decides
        yield
        return
    _HELD = {"logs": {}, "records": [], "warnings": [], "released": False, "showwarning": warnings.showwarning}

    def keep(message, category, filename, lineno, file=None, line=None):
        if _HELD is not None and not _HELD["released"]:
            _HELD["warnings"].append((message, category, filename, lineno, file, line))
        else:
            original(message, category, filename, lineno, file, line)

    original = warnings.showwarning
    warnings.showwarning = keep
    try:
        yield
    except EngramInterpError:
        if not _HELD["released"]:
            _restore()
            _HELD["released"] = True  # dropped: the refusal is the one line
        raise
    finally:
        release_held_warnings()
        warnings.showwarning = original
        _HELD = None


def progress_bar(*args, **kwargs):
    """A tqdm bar; the work has started, so the warnings held so far are printed first."""
    from tqdm import tqdm

    release_held_warnings()
    return tqdm(*args, **kwargs)


def count_tokens(model, texts: Sequence[str], max_tokens: int | None, batch_size: int | None = None) -> int:
    """Tokens the analyses will read from ``texts`` (no BOS), stopping at ``max_tokens``: the bar's total.
    Under ``torchrun`` with ``batch_size``: this process's share (its batches of ``token_batches(shard=True)``)."""
    from engram_interp.analysis._dist import dist_active
    from engram_interp.analysis.common import encode_pieces, token_batches

    if batch_size is not None and dist_active():
        return sum(int(b.mask.sum()) for b in token_batches(model, texts, batch_size, max_tokens, shard=True))

    total = 0
    for text in texts:
        for ids in encode_pieces(model.encode, text):
            total += len(ids)
            if max_tokens is not None and total >= max_tokens:
                return max_tokens
    return total


def token_progress(batches: Iterable[T], total: int | None, desc: str, count: Callable[[T], int],
                   enabled: bool = True) -> Iterator[T]:
    """Yield ``batches`` unchanged while a tqdm bar counts ``count(batch)`` tokens out of ``total``
    (percentage and ETA on stderr); ``enabled=False``: no bar."""
    release_held_warnings()  # the work starts: what was held prints now, before the bar
    if not enabled:
        yield from batches
        return
    with progress_bar(total=total, desc=desc, unit="tok", unit_scale=True, leave=False, dynamic_ncols=True) as bar:
        for batch in batches:
            yield batch
            bar.update(count(batch))
