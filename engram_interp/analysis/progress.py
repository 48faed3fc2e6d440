"""Progress bars with a total (so tqdm shows a percentage and an ETA) for the analyses' token loops."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")

__all__ = ["count_tokens", "token_progress"]


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
    if not enabled:
        yield from batches
        return
    from tqdm import tqdm

    with tqdm(total=total, desc=desc, unit="tok", unit_scale=True, leave=False, dynamic_ncols=True) as bar:
        for batch in batches:
            yield batch
            bar.update(count(batch))
