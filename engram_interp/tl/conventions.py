"""The conventions TransformerLens users type, on every backend: one mixin of the model interface.

``to_tokens`` / ``to_str_tokens`` / ``to_string`` / ``to_single_token``, ``W_U`` / ``b_U`` / ``W_E`` /
``W_pos``, ``cfg`` (TL's field names), ``tokens_to_residual_directions`` and ``generate``, with TL's
signatures and defaults, built only on the interface's accessors (``encode``, ``decode``,
``unembed_weight``, ``embed_weight``, ``info``), so no backend implements them itself. Where we differ
from TL, docs/HOOKS.md ("Coming from TransformerLens") says how and why.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from engram_interp.errors import EngramInterpError


class TLConventions:
    """Mixin of :class:`~engram_interp.interface.InterpModel` (which supplies ``info``, ``device``,
    ``encode``, ``decode``, ``decode_token``, ``unembed_weight``, ``unembed_bias``, ``embed_weight``)."""

    # ---- text <-> tokens -------------------------------------------------------------------------
    def _bos_for(self, prepend_bos: bool | None) -> list[int]:
        info = self.info
        if prepend_bos is None:  # the model's default, as TL's bridge has it (backends/bos.py)
            return [] if info.bos_token_id is None else [info.bos_token_id]
        if not prepend_bos:
            return []
        bos = info.bos_token_id if info.bos_token_id is not None else info.forced_bos_token_id
        return [] if bos is None else [bos]

    def to_tokens(self, input: str | Sequence[str], prepend_bos: bool | None = None, padding_side: str | None = None,
                  move_to_device: bool = True) -> torch.Tensor:
        """Text (or texts) -> LongTensor ``[batch, pos]``, padded with ``info.pad_token_id``.

        ``prepend_bos``: None = the model's default (``info.bos_token_id``; TL's bridge default for the
        same model), True / False = force. ``padding_side``: "right" (default) or "left". A one-line
        user error for empty text or text longer than ``info.max_seq_len`` (TL truncates silently)."""
        texts = [input] if isinstance(input, str) else list(input) if isinstance(input, (list, tuple)) else None
        if not texts or any(not isinstance(t, str) for t in texts):
            raise EngramInterpError("to_tokens needs a string or a non-empty list of strings")
        if padding_side not in (None, "right", "left"):
            raise EngramInterpError(f"padding_side must be 'right' or 'left', not {padding_side!r}")
        info, bos = self.info, self._bos_for(prepend_bos)
        ids = [bos + self.encode(t) for t in texts]
        if any(len(i) == len(bos) for i in ids):
            raise EngramInterpError("empty text: nothing to tokenize")
        longest = max(len(i) for i in ids)
        if longest > info.max_seq_len:
            raise EngramInterpError(f"text is {longest} tokens long; this model handles at most {info.max_seq_len}")
        out = torch.full((len(ids), longest), info.pad_token_id, dtype=torch.long)
        for row, seq in enumerate(ids):
            start = longest - len(seq) if padding_side == "left" else 0
            out[row, start:start + len(seq)] = torch.tensor(seq, dtype=torch.long)
        return out.to(self.device) if move_to_device else out

    def to_str_tokens(self, input, prepend_bos: bool | None = None, padding_side: str | None = None):
        """A text, a list of texts, or token ids (1-D, or ``[1, pos]``) -> the display string of every
        token (a list of lists for a list of texts); an incomplete UTF-8 piece shows as its bytes."""
        if isinstance(input, list) and input and all(isinstance(t, str) for t in input):
            return [self.to_str_tokens(t, prepend_bos, padding_side) for t in input]
        if isinstance(input, str):
            ids = self.to_tokens(input, prepend_bos, padding_side)[0]
        else:
            ids = torch.as_tensor(input)
            ids = ids.squeeze(0) if ids.dim() == 2 and ids.shape[0] == 1 else ids.reshape(-1) if ids.dim() == 0 else ids
            if ids.dim() != 1:
                raise EngramInterpError(f"to_str_tokens takes one text or a 1-D tensor of ids, not shape {list(ids.shape)}")
        return [self.decode_token(int(i)) for i in ids.tolist()]

    def to_string(self, tokens) -> str | list[str]:
        """Token ids -> text: 1-D (or a list of ints) -> one string, ``[batch, pos]`` -> one per row
        (special tokens kept, as the tokenizer joins them)."""
        tokens = torch.as_tensor(tokens)
        if tokens.dim() == 2:
            return [self.decode(row.tolist()) for row in tokens]
        if tokens.dim() <= 1:
            return self.decode(tokens.reshape(-1).tolist())
        raise EngramInterpError(f"to_string takes 1-D or 2-D token ids, not shape {list(tokens.shape)}")

    def to_single_token(self, string: str) -> int:
        """The id of ``string`` when it is exactly one token (no BOS); a one-line user error otherwise."""
        ids = self.encode(string) if isinstance(string, str) and string else []
        if len(ids) != 1:
            raise EngramInterpError(f"{string!r} is {len(ids)} tokens for this tokenizer, not one")
        return int(ids[0])

    # ---- weights ---------------------------------------------------------------------------------
    @property
    def W_U(self) -> torch.Tensor:
        """Unembedding ``[d_model, d_vocab]`` as the model holds it (the final norm's weight is not folded in)."""
        return self.unembed_weight()

    @property
    def b_U(self) -> torch.Tensor:
        """Unembedding bias ``[d_vocab]`` (zeros for a bias-free head, as TL)."""
        bias = self.unembed_bias()
        if bias is not None:
            return bias
        w_u = self.unembed_weight()
        return torch.zeros(w_u.shape[1], dtype=w_u.dtype, device=w_u.device)

    @property
    def W_E(self) -> torch.Tensor:
        """Token embedding ``[d_vocab, d_model]`` (what ``hook_embed`` reads, before any scaling)."""
        return self.embed_weight()

    @property
    def W_pos(self) -> torch.Tensor:
        """Learned position embeddings: none of our backends has them (rotary positions)."""
        raise EngramInterpError(f"this {self.info.architecture} model has rotary positions (RoPE) applied inside "
                                "attention: there is no W_pos")

    @property
    def cfg(self):
        """TL's config field names (``n_layers``, ``d_model``, ``d_vocab``, ``n_heads``, ``d_head``,
        ``n_ctx``, ``device``, ``dtype``, ...): :class:`~engram_interp.tl.config.TLConfig`, unless the
        backend has a config of its own answering to them."""
        from engram_interp.tl.config import tl_config

        return tl_config(self)

    def tokens_to_residual_directions(self, tokens) -> torch.Tensor:
        """The ``W_U`` columns of ``tokens`` (a string of one token, an id, or an id tensor) as
        ``[*tokens.shape, d_model]``: what ``logit_attrs`` dots the (normed) stream with."""
        if isinstance(tokens, str):
            tokens = self.to_single_token(tokens)
        ids = torch.as_tensor(tokens, dtype=torch.long, device=self.W_U.device)
        return self.W_U[:, ids].movedim(0, -1)

    # ---- generation ------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, input: str | torch.Tensor = "", max_new_tokens: int = 10, stop_at_eos: bool = True,
                 eos_token_id: int | None = None, do_sample: bool = True, top_k: int | None = None,
                 top_p: float | None = None, temperature: float = 1.0, prepend_bos: bool | None = None,
                 return_type: str | None = "input", **_ignored) -> str | torch.Tensor:
        """TL's ``generate``: sample (or, ``do_sample=False`` / ``temperature=0``, take the argmax of)
        ``max_new_tokens`` tokens after ``input`` (a text, or tokens ``[batch, pos]`` without padding).
        Each step is a full forward of the model, so hooks added with ``model.hooks(...)`` and
        ``engram_suppressed`` act on every step. Returns text for text input (``return_type="input"``
        or "str"), else tokens ``[batch, pos + new]``. Rows that emitted ``eos`` are padded after it.
        TL's other options (``use_past_kv_cache``, ``verbose``, ...) are accepted and ignored."""
        if isinstance(input, str):
            tokens = self.to_tokens(input, prepend_bos) if input else \
                torch.tensor([self._bos_for(prepend_bos)], dtype=torch.long, device=self.device)
            if tokens.shape[1] == 0:
                raise EngramInterpError("generate from an empty prompt needs a BOS; this model has none")
        else:
            tokens = torch.as_tensor(input).to(self.device)
            tokens = tokens.unsqueeze(0) if tokens.dim() == 1 else tokens
        if tokens.shape[1] + max_new_tokens > self.info.max_seq_len:
            raise EngramInterpError(f"{tokens.shape[1]} prompt + {max_new_tokens} new tokens exceed this model's "
                                    f"context of {self.info.max_seq_len}")
        eos = eos_token_id if eos_token_id is not None else self.info.eos_token_id
        done = torch.zeros(tokens.shape[0], dtype=torch.bool, device=tokens.device)
        with self.exclusive():
            for _ in range(max_new_tokens):
                logits = self(tokens)[:, -1].float()
                nxt = _sample(logits, do_sample and temperature > 0, temperature, top_k, top_p)
                nxt = torch.where(done, torch.full_like(nxt, self.info.pad_token_id), nxt)
                tokens = torch.cat([tokens, nxt[:, None]], dim=1)
                if stop_at_eos and eos is not None:
                    done |= nxt == eos
                    if bool(done.all()):
                        break
        if return_type == "str" or (return_type == "input" and isinstance(input, str)):
            text = self.to_string(tokens[0])
            return text if tokens.shape[0] == 1 else self.to_string(tokens)
        return tokens


def _sample(logits: torch.Tensor, sample: bool, temperature: float, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Next ids ``[batch]`` from last-position logits ``[batch, vocab]`` (TL's top-k, then top-p, then temperature)."""
    if not sample:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k is not None:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None:
        order = logits.sort(dim=-1, descending=True)
        cum = order.values.softmax(-1).cumsum(-1)
        drop = cum - order.values.softmax(-1) > top_p  # keep the smallest prefix whose mass reaches top_p
        logits = logits.scatter(-1, order.indices, order.values.masked_fill(drop, float("-inf")))
    return torch.multinomial(logits.softmax(-1), 1)[:, 0]
