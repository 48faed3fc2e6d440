"""The one model interface every backend implements, and the only one the analyses, report, CLI and app use.

A backend (our ``EngramTransformer``; the Hugging Face backend; later others) subclasses
:class:`InterpModel` and fills in the abstract members. Analyses never check which backend they have
and never reach into a backend's modules: they use the accessors below and the hook names of
docs/HOOKS.md.

Calls take tokens and return results: there is no "last run" state. Interventions
(``engram_suppressed``, hooks added by ``run_with_cache`` / ``run_with_hooks``) are scoped to the call
and to the calling thread: while one thread runs inside an intervention, other threads using the same
model object wait (see :meth:`InterpModel.exclusive`), so a model shared by app sessions never mixes
their hooks, caches or suppression state.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from engram_interp.tl.conventions import TLConventions


@dataclass(frozen=True)
class ModelInfo:
    """What a model is, independent of its backend.

    ``n_layers`` blocks give ``n_layers + 1`` layer points (the residual entering each block, then the
    stream after the last block). ``tokenizer_id`` identifies the tokenizer (sha256 of its canonical
    JSON or vocabulary): two models can be compared position by position only when it is equal.
    """

    name: str  # short display name (checkpoint stem, folder name)
    kind: str  # "dense" | "moe" | "engram" | "engram-null" | an HF model_type such as "llama"
    architecture: str  # "EngramTransformer", "LlamaForCausalLM", "Qwen4ExpForCausalLM", ...
    backend: str  # "engram-interp" | "huggingface" | "transformer-lens-bridge"
    n_layers: int
    d_model: int
    vocab_size: int
    n_branches: int  # residual streams (1 = plain residual; > 1 = hyper-connections / mHC)
    max_seq_len: int  # longest input the model handles (tokens, BOS included)
    bos_token_id: int | None  # prepended to every text by default (to_tokens) when not None
    pad_token_id: int  # used to right-pad batches (masked out of every analysis)
    tokenizer_id: str
    engram_layers: tuple[int, ...] = ()  # blocks with an Engram-style memory (0-indexed)
    moe_layers: tuple[int, ...] = ()  # blocks whose FFN is a routed mixture of experts
    source: str = ""  # the path it was loaded from
    extra: dict = field(default_factory=dict, compare=False)  # backend-specific facts for `info`
    forced_bos_token_id: int | None = None  # what to_tokens(prepend_bos=True) prepends (default: bos_token_id)
    eos_token_id: int | None = None  # where generate(stop_at_eos=True) stops


@dataclass(frozen=True)
class EngramHeads:
    """How one Engram layer's memory vector e_t is laid out (``blocks.{l}.engram.hook_memory``).

    e_t is the concatenation, order-major (n = 2..N) then head (k = 0..K-1), of one ``d_head``-wide
    table row per hash head; column ``h`` of ``hook_hash_ids`` is the row head ``h`` reads. ``head_sizes``
    are the rows of each head's table; ``id_offsets[h]`` is what ``hook_hash_ids`` adds to a row
    *within* head h (0 when the hook shows within-head rows; the head's table offset when it shows
    global row ids)."""

    layer: int
    max_ngram_size: int  # N: orders 2..N
    n_head_per_ngram: int  # K
    d_head: int
    head_sizes: tuple[int, ...]  # [(N-1)*K]
    id_offsets: tuple[int, ...]  # [(N-1)*K]

    @property
    def n_heads(self) -> int:
        """(N-1) * K: hash heads, i.e. table rows read per position."""
        return (self.max_ngram_size - 1) * self.n_head_per_ngram

    def order_head(self, h: int) -> tuple[int, int]:
        """Column ``h`` of ``hook_hash_ids`` -> ``(order n, head k within the order)``."""
        return 2 + h // self.n_head_per_ngram, h % self.n_head_per_ngram

    def columns(self, h: int) -> slice:
        """The columns of e_t (``hook_memory``) that hold head ``h``'s row."""
        return slice(h * self.d_head, (h + 1) * self.d_head)


_LOCKS: "weakref.WeakKeyDictionary[InterpModel, threading.RLock]" = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


class InterpModel(TLConventions):
    """Mixin base of every backend (TransformerLens's conventions from :class:`TLConventions`). Subclasses set ``self.info`` and implement the abstract members.

    Hook points (TransformerLens ``HookPoint``s, names as in docs/HOOKS.md) are what analyses read:
    ``hook_embed``, ``blocks.{l}.hook_resid_pre|mid|post``, ``blocks.{l}.hook_attn_out|hook_mlp_out``,
    ``blocks.{l}.engram.hook_hash_ids|hook_memory|hook_gate|hook_out`` at ``info.engram_layers``,
    ``hook_readout``.
    """

    info: ModelInfo

    # ---- thread safety -------------------------------------------------------------------------
    @property
    def _interp_lock(self) -> threading.RLock:
        # kept outside the object so that copies (deepcopy, pickling) get a lock of their own
        with _LOCKS_GUARD:
            lock = _LOCKS.get(self)
            if lock is None:
                lock = _LOCKS[self] = threading.RLock()
        return lock

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the model for the calling thread: forwards of other threads wait until the block ends.
        Re-entrant; every forward, ``run_with_cache``, ``run_with_hooks`` and intervention takes it."""
        with self._interp_lock:
            yield

    # ---- text in -------------------------------------------------------------------------------
    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Raw token ids of ``text``: no BOS, no special tokens added."""

    @abstractmethod
    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Raw token ids of ``text`` and each token's ``(start, end)`` character span."""

    @abstractmethod
    def decode_token(self, token_id: int) -> str:
        """One token as text; a token that is an incomplete UTF-8 sequence is shown as its bytes
        (e.g. ``<0xE2>``), never as U+FFFD."""

    def decode(self, ids: Sequence[int]) -> str:
        """Token ids -> text (special tokens kept), as the tokenizer joins them."""
        return "".join(self.decode_token(int(i)) for i in ids)

    # ---- structure -----------------------------------------------------------------------------
    @property
    @abstractmethod
    def device(self) -> torch.device:
        """Where the weights live; inputs are moved here."""

    @property
    def engram_layers(self) -> list[int]:
        return list(self.info.engram_layers)

    def layer_point_names(self) -> list[str]:
        """The ``n_layers + 1`` hook names of the layer points, in order (labels ``0 .. n_layers``)."""
        n = self.info.n_layers
        return [f"blocks.{l}.hook_resid_pre" for l in range(n)] + [f"blocks.{n - 1}.hook_resid_post"]

    def engram_heads(self, layer: int) -> EngramHeads:
        """The layout of Engram layer ``layer``'s memory read (:class:`EngramHeads`). Backends with an
        Engram-style memory override it; the default is a one-line user error."""
        from engram_interp.errors import EngramInterpError

        raise EngramInterpError(f"this {self.info.architecture} model does not expose the layout of its memory heads (engram_heads), which row-level analyses such as locate need")

    def engram_value_projection(self, layer: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Engram layer ``layer``'s value projection: ``(W_V [d_model, d_mem], b_V [d_model] or None)``,
        so that the value is ``v_t = W_V e_t + b_V`` (e_t from ``hook_memory``). Backends with an
        Engram-style memory override it; the default is a one-line user error."""
        from engram_interp.errors import EngramInterpError

        raise EngramInterpError(f"this {self.info.architecture} model does not expose the value projection of its memory (engram_value_projection), which row-level analyses such as locate need")

    def attn_output_weight(self, layer: int) -> torch.Tensor:
        """Block ``layer``'s attention output projection per head, ``W_O`` ``[n_heads, d_head, d_model]``
        (``attn_out = sum_h hook_z[..., h, :] @ W_O[h] + b_O``), as TL's ``blocks[l].attn.W_O``. Backends
        with standard attention override it; the default is a one-line user error."""
        from engram_interp.errors import EngramInterpError

        raise EngramInterpError(f"this {self.info.architecture} model does not expose per-head attention output weights (attn_output_weight)")

    @contextlib.contextmanager
    def engram_capacity(self, k: int | None) -> Iterator["InterpModel"]:
        """Context in which every Engram table keeps only ``k`` rows per hash head: the row r a head
        reads becomes ``r mod k`` (the first k rows of the head; a head of at most k rows is unchanged),
        as ``hook_hash_ids`` then shows. ``k=None``: the whole table (no change). Holds :meth:`exclusive`
        for its duration. Backends that can re-address their memory override it; the default is a
        one-line user error."""
        from engram_interp.errors import EngramInterpError

        raise EngramInterpError(f"this {self.info.architecture} model cannot truncate its memory tables (engram_capacity)")
        yield self  # pragma: no cover  (a generator, so the refusal comes on entering the block)

    @staticmethod
    def _check_capacity(k) -> None:
        from engram_interp.errors import EngramInterpError

        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise EngramInterpError(f"capacity must be a whole number of rows >= 1 (or None for the whole table), got {k!r}")

    def engram_rows(self, layer: int, head: int, rows: torch.Tensor) -> torch.Tensor:
        """Rows ``rows`` (within-head ids, ``[n]`` long) of hash head ``head``'s table in Engram layer
        ``layer``: a copy ``[n, d_head]`` in the table's dtype. Backends whose tables can be edited
        override it and :meth:`set_engram_rows`; the default is a one-line user error."""
        from engram_interp.errors import EngramInterpError

        raise EngramInterpError(f"this {self.info.architecture} model does not expose its memory table rows (engram_rows); row editing supports engram-interp .ckpt models")

    def set_engram_rows(self, layer: int, head: int, rows: torch.Tensor, values: torch.Tensor) -> None:
        """Write ``values`` ``[n, d_head]`` into rows ``rows`` (within-head ids) of hash head ``head``'s
        table in Engram layer ``layer``, in place (cast to the table's dtype), holding :meth:`exclusive`.
        Nothing else changes. The default is a one-line user error."""
        from engram_interp.errors import EngramInterpError

        raise EngramInterpError(f"this {self.info.architecture} model does not let its memory table rows be written (set_engram_rows); row editing supports engram-interp .ckpt models")

    # ---- lens readout --------------------------------------------------------------------------
    @abstractmethod
    def readout(self, resid: torch.Tensor) -> torch.Tensor:
        """The head's own stream combination: ``[b, p, d]`` unchanged; ``[b, p, M, d]`` -> ``[b, p, d]``."""

    @abstractmethod
    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        """The model's final norm applied to ``x`` ``[..., d_model]`` with its statistics computed on ``x``."""

    @abstractmethod
    def final_norm_frozen(self, x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """The final norm as the linear map it is at ``reference`` (same leading shape as ``x``): scale
        (and centring, for LayerNorm) taken from ``reference``, applied to ``x``; no bias. Direct logit
        attribution uses it so that component contributions add up."""

    @abstractmethod
    def unembed_weight(self) -> torch.Tensor:
        """``W_U`` as ``[d_model, vocab]``: logits = normalised stream @ W_U + b_U."""

    @abstractmethod
    def embed_weight(self) -> torch.Tensor:
        """``W_E`` ``[vocab, d_model]``: the token embedding table (``hook_embed`` = its rows, unscaled)."""

    def unembed_bias(self) -> torch.Tensor | None:
        """``b_U`` ``[vocab]``, or None for a bias-free head."""
        return None

    def apply_unembed(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised stream ``[..., d_model]`` -> logits ``[..., vocab]`` (bias included)."""
        logits = x @ self.unembed_weight().to(x.dtype)
        bias = self.unembed_bias()
        return logits if bias is None else logits + bias.to(logits.dtype)

    def lens_logits(self, resid: torch.Tensor) -> torch.Tensor:
        """LogitLens: ``apply_unembed(final_norm(readout(resid)))``, statistics recomputed on ``resid``."""
        return self.apply_unembed(self.final_norm(self.readout(resid)))

    # ---- running -------------------------------------------------------------------------------
    # Backends are TransformerLens ``HookedRootModule``s (listed after this mixin in the bases):
    # ``model(tokens)`` -> logits ``[b, p, vocab]``; ``run_with_cache(tokens, names_filter=...)`` and
    # ``run_with_hooks(tokens, fwd_hooks=[...])`` behave as in TransformerLens (hook fn signature
    # ``fn(activation, hook) -> activation | None``). The wrappers below make them thread-exclusive.
    def run_with_cache(self, *args, return_cache_object: bool = True, **kwargs):
        """TL's ``run_with_cache``: ``(output, cache)`` with ``cache`` a TransformerLens ``ActivationCache``
        (:class:`~engram_interp.tl.cache.EngramActivationCache`; a plain dict with ``return_cache_object=False``)."""
        with self.exclusive():
            out, cache = super().run_with_cache(*args, **kwargs)
        if not return_cache_object:
            return out, cache
        from engram_interp.tl.cache import EngramActivationCache

        return out, EngramActivationCache(cache, self, has_batch_dim=not kwargs.get("remove_batch_dim", False))

    def run_with_hooks(self, *args, **kwargs):
        with self.exclusive():
            return super().run_with_hooks(*args, **kwargs)

    @contextlib.contextmanager
    def hooks(self, *args, **kwargs):
        with self.exclusive():
            with super().hooks(*args, **kwargs) as model:
                yield model

    # ---- interventions -------------------------------------------------------------------------
    @contextlib.contextmanager
    def engram_suppressed(
        self, layers: Sequence[int] | None = None, replacement: dict[int, torch.Tensor] | None = None
    ) -> Iterator["InterpModel"]:
        """Context in which the Engram output Y (``blocks.{l}.engram.hook_out``) is 0, or
        ``replacement[layer]`` broadcast to Y's shape (mean-ablation), at ``layers`` (all if None).
        Holds :meth:`exclusive` for its duration; a user error for a layer without Engram."""
        from engram_interp.errors import EngramInterpError

        if not self.engram_layers:
            raise EngramInterpError(f"this {self.info.kind} model has no Engram layers to suppress")
        chosen = self.engram_layers if layers is None else list(layers)
        missing = sorted(set(chosen) - set(self.engram_layers))
        if missing:
            raise EngramInterpError(f"layers {missing} have no Engram (Engram layers: {self.engram_layers})")
        replacement = replacement or {}

        def make_hook(layer: int):
            def hook(module, inputs, y: torch.Tensor) -> torch.Tensor:
                if layer in replacement:
                    return replacement[layer].to(y.device, y.dtype).expand_as(y).clone()
                return torch.zeros_like(y)

            return hook

        # plain torch hooks on the hook point: they survive the reset_hooks() of run_with_cache /
        # run_with_hooks and run before any caching hook added later, so a cache taken inside shows
        # the suppressed Y.
        with self.exclusive():
            points = [self.hook_dict[f"blocks.{l}.engram.hook_out"] for l in chosen]
            handles = [point.register_forward_hook(make_hook(l)) for point, l in zip(points, chosen)]
            try:
                yield self
            finally:
                for handle in handles:
                    handle.remove()
