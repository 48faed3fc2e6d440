"""Text <-> token ids, and the forward's return types, for backends that hold a Hugging Face
``tokenizers.Tokenizer`` (our hooking layer and the TransformerLens bridge alike): one implementation,
with the vocabulary check."""

from __future__ import annotations

from typing import Callable

import torch

from engram_interp.errors import EngramInterpError
from engram_interp.tokenizer import display_token


class HFTextMixin:
    """Needs ``self.tokenizer`` (a ``tokenizers.Tokenizer``) and ``self._info`` (a ModelInfo)."""

    def encode(self, text: str) -> list[int]:
        return self.encode_with_offsets(text)[0]

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Token ids and character offsets of ``text``; a token id past the model's vocabulary (a
        tokenizer larger than the embedding) is refused in one line, not an IndexError later."""
        enc = self.tokenizer.encode(text, add_special_tokens=False)
        big = [i for i in enc.ids if i >= self._info.vocab_size]
        if big:
            raise EngramInterpError(f"{self._info.name}: the text has token id {big[0]}, past the model's vocabulary "
                                    f"of {self._info.vocab_size} (its tokenizer does not fit the model)")
        return enc.ids, [tuple(o) for o in enc.offsets]

    def decode_token(self, token_id: int) -> str:
        return display_token(self.tokenizer, token_id)

    def decode(self, ids) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)

    def _run(self, input, return_type: str | None, logits_of: Callable[[torch.Tensor, bool], torch.Tensor]):
        """The body of ``forward``: ``input`` (text, texts or ``[batch, pos]`` ids) -> "logits", "loss"
        (mean next-token cross-entropy, nats), "both" or None, with ``logits_of(tokens, head_needed)``
        running the model (under :meth:`exclusive`)."""
        with self.exclusive():
            tokens = input if isinstance(input, torch.Tensor) else self.to_tokens(input)
            tokens = (tokens.unsqueeze(0) if tokens.dim() == 1 else tokens).to(self.device)
            logits = logits_of(tokens, return_type is not None)
            if return_type is None:
                return None
            if return_type == "logits":
                return logits
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), tokens[:, 1:].flatten())
            return loss if return_type == "loss" else (logits, loss)
