"""Tokenizer compression (docs/ENGRAM.md section 2): a surjective map raw id -> canonical id.

Tokens that differ only by case, accents, Unicode form or whitespace runs share one canonical id,
so Engram's n-gram tables are not split across spellings of the same n-gram.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tokenizers import Regex, Tokenizer, normalizers

_SENTINEL = "\ue000"  # protects a lone space from Strip()


def engram_normalizer() -> normalizers.Normalizer:
    """NFKC, NFD, strip accents, lowercase, collapse whitespace runs, keep a lone space, strip."""
    return normalizers.Sequence(
        [
            normalizers.NFKC(),
            normalizers.NFD(),
            normalizers.StripAccents(),
            normalizers.Lowercase(),
            normalizers.Replace(Regex(r"[ \t\r\n]+"), " "),
            normalizers.Replace(Regex(r"^ $"), _SENTINEL),
            normalizers.Strip(),
            normalizers.Replace(_SENTINEL, " "),
        ]
    )


@dataclass(frozen=True)
class Compression:
    """The compression table and its reduction figure."""

    table: np.ndarray  # int64 [V]: raw id -> canonical id
    n_canonical: int  # V'

    @property
    def vocab_size(self) -> int:
        return int(self.table.shape[0])

    @property
    def reduction(self) -> float:
        """Fraction of the vocabulary removed: 1 - V'/V."""
        return 1.0 - self.n_canonical / self.vocab_size

    def summary(self) -> str:
        return f"{self.vocab_size} -> {self.n_canonical} canonical ids ({100 * self.reduction:.1f}% reduction)"


def build_compression(tokenizer: Tokenizer) -> Compression:
    """Canonical ids in order of first appearance of each key over raw ids 0..V-1."""
    norm = engram_normalizer()
    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    key_to_canonical: dict[str, int] = {}
    table = np.empty(vocab_size, dtype=np.int64)
    for raw_id in range(vocab_size):
        text = tokenizer.decode([raw_id], skip_special_tokens=False)
        if "\ufffd" in text:  # a partial UTF-8 sequence: keep the raw token string as the key
            key = tokenizer.id_to_token(raw_id)
        else:
            normalized = norm.normalize_str(text)
            key = normalized if normalized else text
        table[raw_id] = key_to_canonical.setdefault(key, len(key_to_canonical))
    return Compression(table=table, n_canonical=len(key_to_canonical))


def tokenizer_identity(tokenizer: Tokenizer | None) -> str:
    """sha256 of the tokenizer's JSON ("none" without one): equal for tokenizers that split alike."""
    import hashlib

    if tokenizer is None:
        return "none"
    return hashlib.sha256(tokenizer.to_str().encode("utf-8")).hexdigest()


def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's bytes -> printable-unicode map used by byte-level BPE vocabularies."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes, extra = list(printable), 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, codes)}


_BYTE_DECODER = _byte_decoder()


def display_token(tokenizer: Tokenizer, token_id: int) -> str:
    """One token as text for display. A token that is an incomplete UTF-8 sequence (decoding gives
    U+FFFD) is shown as the bytes it is, e.g. ``<0xE2><0x80>``, or as its vocabulary string when it is
    not a byte-level token."""
    text = tokenizer.decode([int(token_id)], skip_special_tokens=False)
    if "\ufffd" not in text:
        return text
    piece = tokenizer.id_to_token(int(token_id)) or ""
    if piece and all(ch in _BYTE_DECODER for ch in piece):
        data = bytes(_BYTE_DECODER[ch] for ch in piece)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return "".join(f"<0x{b:02X}>" for b in data)
    return piece or text
