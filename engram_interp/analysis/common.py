"""Shared plumbing of the analyses: texts -> token batches (with masks), layer activations, corpora.

Layer points (LogitLens and CKA): ``blocks.{l}.hook_resid_pre`` for every block, then
``blocks.{L-1}.hook_resid_post``: ``n_layers + 1`` points labelled ``0 .. n_layers``. With mHC
(``n_branches > 1``) the activations go through ``model.readout`` (the head's own stream combination).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import torch

from engram_interp.errors import EngramInterpError

REPO_ROOT = Path(__file__).resolve().parents[2]
PROBE_TEXTS = REPO_ROOT / "probes" / "texts"
ENTITY_PROBES = REPO_ROOT / "probes" / "entities_ner.jsonl"


def layer_hook_names(model) -> list[str]:
    """The ``n_layers + 1`` hook names of the layer points, in order."""
    return model.layer_point_names()


def model_name(model, fallback: str = "model") -> str:
    """A short display name: ``model.info.name`` (checkpoint stem, folder name) when loaded from a
    path, else ``fallback``."""
    info = getattr(model, "info", None)
    return info.name if info is not None and info.source else fallback


def require_engram(model, what: str = "this analysis") -> None:
    """Raise a user error if ``model`` has no Engram layer."""
    if not getattr(model, "engram_layers", None):
        raise EngramInterpError(f"{model_name(model)} has no Engram layers ({model.info.kind} model); {what} needs an Engram model")


def same_tokenizer(*models) -> None:
    """Raise a user error unless all models share one tokenizer (``info.tokenizer_id`` and vocabulary)."""
    from engram_interp.checkpoint import assert_same_tokenizer

    assert_same_tokenizer(*models)


# ------------------------------------------------------------------------------------------- texts
def read_texts(path: str | os.PathLike) -> list[str]:
    """A corpus file -> texts. ``.jsonl``: the ``text`` field of each line; otherwise plain text split
    at blank lines (paragraphs). Raises a user error for a missing, special (FIFO, folder), non-UTF-8
    or empty file, or a ``.jsonl`` line without a string ``text``."""
    from engram_interp.io import loads_strict, read_regular_text

    p = Path(path)
    content = read_regular_text(p, "corpus file")
    if p.suffix == ".jsonl":
        texts = []
        for i, line in enumerate(content.splitlines()):
            if line.strip():
                try:
                    obj = loads_strict(line, f"{p}:{i + 1}")
                except EngramInterpError:
                    obj = None
                if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                    raise EngramInterpError(f"{p}:{i + 1}: expected a JSON object with a 'text' string")
                texts.append(obj["text"])
    else:
        texts = [" ".join(par.split()) for par in content.split("\n\n")]
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise EngramInterpError(f"{p} holds no text")
    return texts


def default_corpus_path() -> Path:
    """Where :func:`default_texts` reads: ``$ENGRAM_INTERP_CORPUS`` (a file, a folder of ``*.txt``, or
    a data cache), else the data cache of ``engram-interp data build``
    (``engram_interp.data.corpus.default_cache()``) when it holds a manifest, else ``probes/texts/``."""
    from engram_interp.data.corpus import MANIFEST, default_cache

    env = os.environ.get("ENGRAM_INTERP_CORPUS")
    if env:
        return Path(env).expanduser()
    cache = default_cache()
    return cache if (cache / MANIFEST).is_file() else PROBE_TEXTS


def default_texts() -> list[str]:
    """The default corpus as a list of texts: a data cache's held-out validation documents
    (``engram_interp.data.corpus.validation_docs``), a file's texts (:func:`read_texts`), or those of
    every ``*.txt`` file of a folder."""
    from engram_interp.data.corpus import MANIFEST, validation_docs

    p = default_corpus_path()
    if (p / MANIFEST).is_file():
        texts = validation_docs(p)
        if not texts:
            raise EngramInterpError(f"the data cache {p} holds no validation documents; pass --corpus FILE")
        return texts
    if p.is_dir():
        files = sorted(p.glob("*.txt"))
        if not files:
            raise EngramInterpError(f"no default corpus: {p} has no .txt files; pass --corpus FILE")
        return [t for f in files for t in read_texts(f)]
    return read_texts(p)


def check_texts(texts: Sequence[str] | str) -> list[str]:
    """Normalise to a non-empty list of non-empty strings, else a user error."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    texts = [t for t in texts if isinstance(t, str) and t.strip()]
    if not texts:
        raise EngramInterpError("empty text: nothing to analyse")
    return texts


# ------------------------------------------------------------------------------------------ tokens
@dataclass
class TokenBatch:
    """Right-padded token ids with masks. ``tokens``/``mask`` ``[batch, pos]``; ``mask`` marks real
    tokens that are not the prepended BOS; ``positions`` lists, per row, the positions selected for
    analyses that look at chosen tokens (None: all masked positions)."""

    tokens: torch.Tensor
    mask: torch.Tensor
    positions: list[list[int]] | None = None


#: Texts are tokenized in pieces of at most this many characters, so a corpus that is one huge line
#: costs memory in proportion to the tokens analysed (``max_tokens``), not to the line.
PIECE_CHARS = 16384


def text_pieces(text: str, size: int = PIECE_CHARS) -> Iterator[str]:
    """``text`` in consecutive pieces of at most ``size`` characters that join back to ``text``. Each cut
    is made just before a run of whitespace (so byte-level BPE tokenizers, which attach a space to the
    word after it, tokenize the pieces as they would the whole text); a stretch of ``size`` characters
    without whitespace is cut where it reaches ``size``."""
    start, n = 0, len(text)
    while n - start > size:
        cut = start + size
        j = cut
        while j > start and not (text[j].isspace() and not text[j - 1].isspace()):
            j -= 1
        if j == start:
            j = cut
        yield text[start:j]
        start = j
    yield text[start:]


def encode_pieces(encode, text: str) -> Iterator[list[int]]:
    """Token ids of ``text`` piece by piece (:func:`text_pieces`, :data:`PIECE_CHARS` characters), ``encode``
    being a ``str -> ids`` function: stop iterating and nothing more of the text is tokenized."""
    for piece in text_pieces(text, PIECE_CHARS):
        ids = encode(piece)
        if ids:
            yield list(ids)


def encode_windows(model, text: str, max_len: int | None = None) -> Iterator[tuple[list[int], int]]:
    """Tokenize one text into windows that fit the model, lazily (the text is read piece by piece):
    yields ``(ids with BOS, first_token_index)`` where ids start with BOS (when the model has one) and
    ``first_token_index`` is the index of the window's first text token in the text's own token list.
    """
    bos = model.info.bos_token_id
    limit = (max_len or model.info.max_seq_len) - (1 if bos is not None else 0)
    pending: list[int] = []
    start = 0
    for ids in encode_pieces(model.encode, text):
        pending.extend(ids)
        while len(pending) >= limit:
            chunk, pending = pending[:limit], pending[limit:]
            yield ([bos] + chunk if bos is not None else chunk), start
            start += limit
    if pending:
        yield ([bos] + pending if bos is not None else pending), start


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int, has_bos: bool, device) -> TokenBatch:
    """Right-pad id lists into a TokenBatch (mask excludes padding and the BOS position)."""
    longest = max(len(s) for s in seqs)
    tokens = torch.full((len(seqs), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), longest), dtype=torch.bool)
    for i, s in enumerate(seqs):
        tokens[i, : len(s)] = torch.tensor(list(s), dtype=torch.long)
        mask[i, (1 if has_bos else 0): len(s)] = True
    return TokenBatch(tokens.to(device), mask.to(device))


def token_batches(
    model,
    texts: Iterable[str],
    batch_size: int = 8,
    max_tokens: int | None = None,
    max_len: int | None = None,
    shard: bool = False,
) -> Iterator[TokenBatch]:
    """Texts -> TokenBatches of up to ``batch_size`` windows; stops after ``max_tokens`` analysed tokens
    (BOS and padding not counted; the last window is cut to fit). ``shard``: under ``torchrun``, only
    this process's share of the batches (every world-size-th; the analysis then all-reduces its
    accumulators), the same batches in any number of processes."""
    if shard:
        from engram_interp.analysis._dist import shard as _shard

        yield from _shard(token_batches(model, texts, batch_size, max_tokens, max_len))
        return
    pad = model.info.pad_token_id
    has_bos = model.info.bos_token_id is not None
    pending: list[list[int]] = []
    used = 0
    for text in texts:
        for ids, _ in encode_windows(model, text, max_len):
            n_real = len(ids) - (1 if has_bos else 0)
            if n_real <= 0:
                continue
            if max_tokens is not None and used + n_real > max_tokens:
                ids = ids[: len(ids) - (used + n_real - max_tokens)]
                n_real = max_tokens - used
                if n_real <= 0:
                    break
            pending.append(ids)
            used += n_real
            if len(pending) == batch_size:
                yield pad_batch(pending, pad, has_bos, model.device)
                pending = []
            if max_tokens is not None and used >= max_tokens:
                break
        if max_tokens is not None and used >= max_tokens:
            break
    if pending:
        yield pad_batch(pending, pad, has_bos, model.device)


def layer_activations(model, tokens: torch.Tensor, names: list[str] | None = None) -> list[torch.Tensor]:
    """Residual stream at every layer point for ``tokens`` ``[b, p]`` -> list of ``[b, p, d]``
    (mHC streams combined with ``model.readout``), all on ``model.device`` (layers placed on other
    devices by a device map included)."""
    names = names or layer_hook_names(model)
    wanted = set(names)
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in wanted, return_type=None)
    return [model.readout(cache[n]).to(model.device) for n in names]


def selected_activations(models: Sequence, batches: Iterable[TokenBatch], window: int = 8
                         ) -> Iterator[tuple[TokenBatch, list[torch.Tensor]]]:
    """For each batch of ``batches``, in order: ``(batch, [per model: [n_points, n_sel, d]])``, the
    residual stream at every layer point at the batch's selected positions (:func:`selected_mask`,
    row-major), exactly as ``layer_activations(model, batch.tokens)[...][selected_mask(batch)]``.

    Rows of ``window`` consecutive batches are run together sorted by length (longest first) in
    forward passes of the same number of rows, so short texts are not padded to long ones; the
    models are causal and rows independent, so only the padding changes. Each row runs only up to
    its last selected position."""
    pending: list[TokenBatch] = []
    for batch in batches:
        pending.append(batch)
        if len(pending) == window:
            yield from _window_activations(models, pending)
            pending = []
    if pending:
        yield from _window_activations(models, pending)


def _window_activations(models: Sequence, batches: list[TokenBatch]):
    rows = []  # (batch index, ids up to the last selected position, selected positions)
    for bi, batch in enumerate(batches):
        sel = selected_mask(batch).cpu()
        for r in range(batch.tokens.shape[0]):
            pos = sel[r].nonzero()[:, 0]
            end = int(pos[-1]) + 1 if len(pos) else 0
            rows.append((bi, batch.tokens[r, :end].cpu(), pos))
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i][1]))
    size = max(b.tokens.shape[0] for b in batches)
    per_row: list[list[torch.Tensor | None]] = [[None] * len(rows) for _ in models]
    for start in range(0, len(order), size):
        group = [i for i in order[start:start + size] if len(rows[i][1])]
        if not group:
            continue
        width = len(rows[group[0]][1])
        for mi, model in enumerate(models):
            tokens = torch.full((len(group), width), model.info.pad_token_id, dtype=torch.long)
            for j, i in enumerate(group):
                tokens[j, : len(rows[i][1])] = rows[i][1]
            acts = layer_activations(model, tokens.to(model.device))
            for j, i in enumerate(group):
                pos = rows[i][2].to(acts[0].device)
                per_row[mi][i] = torch.stack([h[j, pos] for h in acts])  # [n_points, n_i, d] (or [.., M, d])
    for bi, batch in enumerate(batches):
        mine = [i for i, row in enumerate(rows) if row[0] == bi and per_row[0][i] is not None]
        out = []
        for mi in range(len(models)):
            parts = [per_row[mi][i] for i in mine]
            out.append(torch.cat(parts, dim=1) if parts else None)
        yield batch, out


def resolve_device(device) -> torch.device:
    """None/'auto' -> CUDA when present else CPU; otherwise the named device (user error if absent)."""
    from engram_interp.checkpoint import resolve_device as _rd

    return _rd(device)


# ------------------------------------------------------------------------------------- probe sets
def read_entity_probes(path: str | os.PathLike | None = None) -> list[dict]:
    """Items ``{"text", "entity_end_positions": [char offset of the final char of each entity]}``."""
    p = Path(path) if path else ENTITY_PROBES
    if not p.is_file():
        raise EngramInterpError(f"no entity probe set at {p}; pass --probes FILE or use --tokens all")
    from engram_interp.io import read_regular_text

    items = []
    for i, line in enumerate(read_regular_text(p, "probe file").splitlines()):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            items.append({"text": str(item["text"]), "entity_end_positions": [int(c) for c in item["entity_end_positions"]]})
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, RecursionError):
            raise EngramInterpError(f"{p}:{i + 1}: expected {{'text': ..., 'entity_end_positions': [...]}}") from None
    if not items:
        raise EngramInterpError(f"{p} holds no probe items")
    return items


def char_to_token_positions(model, text: str, char_offsets: Sequence[int]) -> list[int]:
    """Map character offsets to token positions in ``model.to_tokens(text)`` (BOS counted).

    A character maps to the token whose offset span contains it; offsets inside no token (e.g. a
    character the tokenizer dropped) map to the last token starting before it.
    """
    _, offsets = model.encode_with_offsets(text)
    shift = 1 if model.info.bos_token_id is not None else 0
    out = []
    for c in char_offsets:
        pos = None
        for i, (s, e) in enumerate(offsets):
            if s <= c < e:
                pos = i
                break
            if s <= c:
                pos = i
        if pos is not None:
            out.append(pos + shift)
    return out


def entity_batches(model, items: Sequence[dict], batch_size: int, max_tokens: int | None = None,
                   end_at_last_entity: bool = False) -> Iterator[TokenBatch]:
    """Probe items -> TokenBatches whose ``positions`` are the final tokens of the named entities.
    ``max_tokens`` caps the number of selected positions. Texts longer than the context are cut.
    ``end_at_last_entity``: every text ends at its last selected position, for analyses that read the
    selected positions only (the models are causal, so later tokens cannot change those activations;
    a fifth less compute on the bundled probe set). Not for analyses that also read the other tokens."""
    pad = model.info.pad_token_id
    has_bos = model.info.bos_token_id is not None
    limit = model.info.max_seq_len
    seqs, poss, used = [], [], 0
    for item in items:
        ids = ([model.info.bos_token_id] if has_bos else []) + model.encode(item["text"])
        ids = ids[:limit]
        pos = sorted({p for p in char_to_token_positions(model, item["text"], item["entity_end_positions"]) if 0 < p < len(ids)})
        if max_tokens is not None:
            pos = pos[: max(0, max_tokens - used)]
        if not pos:
            continue
        seqs.append(ids[: pos[-1] + 1] if end_at_last_entity else ids)
        poss.append(pos)
        used += len(pos)
        if len(seqs) == batch_size:
            b = pad_batch(seqs, pad, has_bos, model.device)
            b.positions = poss
            yield b
            seqs, poss = [], []
        if max_tokens is not None and used >= max_tokens:
            break
    if seqs:
        b = pad_batch(seqs, pad, has_bos, model.device)
        b.positions = poss
        yield b


def selected_mask(batch: TokenBatch) -> torch.Tensor:
    """``[b, p]`` bool: the chosen positions (``batch.positions``) or every real non-BOS token."""
    if batch.positions is None:
        return batch.mask
    m = torch.zeros_like(batch.mask)
    for row, pos in enumerate(batch.positions):
        m[row, pos] = True
    return m & (batch.tokens >= 0)
