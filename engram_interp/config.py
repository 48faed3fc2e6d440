"""One frozen dataclass tree describing every model engram-interp can hold.

``ModelConfig`` -> backbone (vocab, width, depth, heads, RoPE, norm eps, residual branches)
               -> ``MoEConfig`` or a dense SwiGLU FFN
               -> ``EngramConfig`` (field names as in DeepSeek's ``engram_demo_v1.py``) or no Engram.

Configs round-trip through JSON (``to_dict`` / ``from_dict``) and ``validate()`` raises a
``ConfigError`` that names the bad field. ``EngramConfig.resolved(...)`` fills in the frozen
hashing constants (multipliers, table sizes) so a checkpoint never depends on numpy's generator.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field, fields
from typing import Any

from engram_interp.errors import ConfigError

# Upper bounds of the size fields: generous for any model this workbench can hold, small enough that
# a hostile config cannot ask for terabytes or loop for hours before its tensors are compared.
MAX_VOCAB = 2**24
MAX_WIDTH = 2**18  # d_model, d_ffn, d_expert, n_embed_per_ngram
MAX_LAYERS = 1024
MAX_HEADS = 4096
MAX_SEQ_LEN = 2**20
MAX_BRANCHES = 64
MAX_SINKHORN = 10_000
MAX_EXPERTS = 4096
MAX_NGRAM = 16
MAX_HASH_HEADS = 256
MAX_KERNEL = 256
MAX_TABLE = 2**40  # rows of one hash table


@dataclass(frozen=True)
class MoEConfig:
    """DeepSeekMoE FFN: shared experts + fine-grained routed experts, sigmoid affinities, top-k."""

    n_shared_experts: int = 1  # always-on SwiGLU experts
    n_routed_experts: int = 16  # routed SwiGLU experts
    top_k: int = 2  # routed experts per token
    d_expert: int = 256  # hidden width of every expert (shared and routed)
    n_dense_layers: int = 1  # leading layers that use the dense FFN instead of MoE
    balance_rate: float = 1e-3  # gamma of auxiliary-loss-free balancing: b_i += gamma * sign(mean_load - load_i)

    def validate(self, prefix: str = "moe") -> None:
        _positive(self, prefix, "n_routed_experts", "top_k", "d_expert")
        _non_negative(self, prefix, "n_shared_experts", "n_dense_layers")
        _bounded(self, prefix, n_routed_experts=MAX_EXPERTS, d_expert=MAX_WIDTH, n_shared_experts=MAX_EXPERTS,
                 n_dense_layers=MAX_LAYERS)
        _finite(self, prefix, "balance_rate", minimum=0.0)
        if self.top_k > self.n_routed_experts:
            raise ConfigError(f"{prefix}.top_k={self.top_k} exceeds {prefix}.n_routed_experts={self.n_routed_experts}")


@dataclass(frozen=True)
class EngramConfig:
    """Engram conditional memory; the first eight fields carry the demo module's names."""

    layer_ids: tuple[int, ...] = (1,)  # 0-indexed blocks that hold an Engram module
    max_ngram_size: int = 3  # N: orders 2..N are hashed
    n_head_per_ngram: int = 8  # K: hash heads per order
    n_embed_per_ngram: int = 256  # width per order (split over K heads)
    engram_vocab_size: tuple[int, ...] = (20011, 20011)  # table base size per order (n = 2..N)
    seed: int = 0  # hashing seed (multipliers use seed + 10007 * layer)
    kernel_size: int = 4  # short causal depthwise conv kernel (dilation = max_ngram_size)
    pad_id: int = 2  # RAW tokenizer id used to left-pad n-grams (mapped through the compression)
    signed_sqrt_gate: bool = True  # demo / V4.1: sigmoid(sign(s) sqrt|s|); False: paper's sigmoid(s)
    use_conv: bool = True  # demo: Y = u + SiLU(conv(RMSNorm(u))); V4.1 drops the conv (Y = u)
    proj_bias: bool = True  # demo's key/value nn.Linear layers carry a bias
    null_memory: bool = False  # Engram-null control: every hash index is sent to row 0
    compressed_vocab_size: int | None = None  # V' of the tokenizer compression (filled by resolved())
    multipliers: tuple[tuple[int, ...], ...] | None = None  # per layer, N odd int64 multipliers (frozen)
    table_sizes: tuple[tuple[int, ...], ...] | None = None  # per layer, (N-1)*K primes, order-major (frozen)

    @property
    def n_orders(self) -> int:
        return self.max_ngram_size - 1

    @property
    def n_hash_heads(self) -> int:
        """Hash indices per token per layer: (N-1) * K."""
        return self.n_orders * self.n_head_per_ngram

    @property
    def d_head(self) -> int:
        return self.n_embed_per_ngram // self.n_head_per_ngram

    @property
    def d_mem(self) -> int:
        """Width of the retrieved memory e_t: (N-1) * n_embed_per_ngram."""
        return self.n_orders * self.n_embed_per_ngram

    def rows(self, layer_id: int) -> int:
        """Total table rows of one Engram layer (sum of its primes)."""
        return sum(self._table_sizes_for(layer_id))

    def _table_sizes_for(self, layer_id: int) -> tuple[int, ...]:
        if self.table_sizes is None:
            raise ConfigError("engram.table_sizes is not resolved; call EngramConfig.resolved(V')")
        return self.table_sizes[self.layer_ids.index(layer_id)]

    def resolved(self, compressed_vocab_size: int) -> "EngramConfig":
        """Return a copy with V', multipliers and table sizes filled in (kept if already set)."""
        from engram_interp.model.hashing import layer_multipliers, table_sizes

        if self.multipliers is not None and self.table_sizes is not None and self.compressed_vocab_size:
            return self
        mult = tuple(
            tuple(int(m) for m in layer_multipliers(self.seed, layer, self.max_ngram_size, compressed_vocab_size))
            for layer in self.layer_ids
        )
        sizes = table_sizes(self.layer_ids, self.max_ngram_size, self.n_head_per_ngram, self.engram_vocab_size)
        return dataclasses.replace(
            self,
            compressed_vocab_size=compressed_vocab_size,
            multipliers=mult,
            table_sizes=tuple(tuple(s) for s in sizes),
        )

    def validate(self, n_layers: int, prefix: str = "engram") -> None:
        _positive(self, prefix, "n_head_per_ngram", "n_embed_per_ngram", "kernel_size", "max_ngram_size")
        if self.max_ngram_size < 2:
            raise ConfigError(f"{prefix}.max_ngram_size must be >= 2, got {self.max_ngram_size}")
        _bounded(self, prefix, max_ngram_size=MAX_NGRAM, n_head_per_ngram=MAX_HASH_HEADS, n_embed_per_ngram=MAX_WIDTH,
                 kernel_size=MAX_KERNEL)
        _int_or_none(self, prefix, "pad_id", "seed", "compressed_vocab_size")
        if not 0 <= self.seed < 2**63:
            raise ConfigError(f"{prefix}.seed must be in 0..2**63-1, got {_short(self.seed)}")
        _int_tuple(self, prefix, "layer_ids")
        _int_tuple(self, prefix, "engram_vocab_size")
        if not self.layer_ids:
            raise ConfigError(f"{prefix}.layer_ids is empty; use engram=None for a model without Engram")
        if len(set(self.layer_ids)) != len(self.layer_ids):
            raise ConfigError(f"{prefix}.layer_ids has duplicates: {list(self.layer_ids)}")
        for layer in self.layer_ids:
            if not 0 <= layer < n_layers:
                raise ConfigError(f"{prefix}.layer_ids contains {layer}, outside 0..{n_layers - 1}")
        if len(self.engram_vocab_size) != self.n_orders:
            raise ConfigError(
                f"{prefix}.engram_vocab_size needs {self.n_orders} entries (orders 2..{self.max_ngram_size}),"
                f" got {len(self.engram_vocab_size)}"
            )
        if any(not 2 <= v <= MAX_TABLE for v in self.engram_vocab_size):
            raise ConfigError(f"{prefix}.engram_vocab_size entries must be in 2..{MAX_TABLE}")
        if self.n_embed_per_ngram % self.n_head_per_ngram:
            raise ConfigError(
                f"{prefix}.n_embed_per_ngram={self.n_embed_per_ngram} is not divisible by"
                f" n_head_per_ngram={self.n_head_per_ngram}"
            )
        if self.pad_id < 0:
            raise ConfigError(f"{prefix}.pad_id must be >= 0")
        if self.compressed_vocab_size is not None and self.compressed_vocab_size < 1:
            raise ConfigError(f"{prefix}.compressed_vocab_size must be >= 1, got {self.compressed_vocab_size}")
        if self.multipliers is not None:
            _int_matrix(self, prefix, "multipliers", len(self.layer_ids), self.max_ngram_size)
            # the demo's range: x * m must not overflow int64 for every canonical id x < V'
            top = (2**63 - 1) // (self.compressed_vocab_size or 1)
            if any(m % 2 == 0 or not 0 < m <= top for ms in self.multipliers for m in ms):
                raise ConfigError(f"{prefix}.multipliers must be odd integers in 1..{top} (int64 max // V')")
        if self.table_sizes is not None:
            _check_table_sizes(self, prefix)


@dataclass(frozen=True)
class ModelConfig:
    """The backbone. ``moe=None`` means a dense SwiGLU FFN everywhere; ``engram=None`` means no Engram."""

    vocab_size: int = 8192  # raw tokenizer vocabulary
    d_model: int = 256  # residual width
    n_layers: int = 12  # transformer blocks
    n_heads: int = 4  # attention heads (d_head = d_model // n_heads)
    d_ffn: int = 768  # hidden width of the dense SwiGLU FFN
    max_seq_len: int = 1024  # longest context the RoPE tables cover
    rope_theta: float = 10000.0  # RoPE base
    norm_eps: float = 1e-6  # RMSNorm epsilon of the backbone
    n_branches: int = 1  # residual branches M: 1 = plain residual, >1 = mHC hyper-connections
    sinkhorn_iters: int = 20  # mHC: Sinkhorn-Knopp iterations for H_res
    init_std: float = 0.02  # std of the normal init of linear layers and embeddings
    bos_token_id: int | None = 0  # prepended by to_tokens(prepend_bos=True); None: tokenizer has no BOS
    moe: MoEConfig | None = None
    engram: EngramConfig | None = None

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    # ---- TransformerLens's field names (HookedTransformerConfig), read-only aliases ------------------
    d_vocab = property(lambda self: self.vocab_size)
    n_ctx = property(lambda self: self.max_seq_len)
    d_mlp = property(lambda self: self.d_ffn)
    n_key_value_heads = property(lambda self: self.n_heads)
    normalization_type = property(lambda self: "RMS")
    attn_only = property(lambda self: False)
    positional_embedding_type = property(lambda self: "rotary")
    act_fn = property(lambda self: "silu")
    default_prepend_bos = property(lambda self: self.bos_token_id is not None)
    # the model's device and dtype: EngramTransformer.cfg keeps them current; None on a free-standing config
    device = property(lambda self: self.__dict__.get("_runtime", (None, None))[0])
    dtype = property(lambda self: self.__dict__.get("_runtime", (None, None))[1])

    @property
    def kind(self) -> str:
        """'dense', 'moe', 'engram', 'engram-null', with '+mhc' when n_branches > 1."""
        base = "moe" if self.moe is not None else "dense"
        if self.engram is not None:
            base = "engram-null" if self.engram.null_memory else "engram"
        return base + ("+mhc" if self.n_branches > 1 else "")

    def is_moe_layer(self, layer: int) -> bool:
        return self.moe is not None and layer >= self.moe.n_dense_layers

    def validate(self) -> "ModelConfig":
        _positive(self, "", "vocab_size", "d_model", "n_layers", "n_heads", "d_ffn", "max_seq_len", "n_branches")
        _non_negative(self, "", "sinkhorn_iters")
        _bounded(self, "", vocab_size=MAX_VOCAB, d_model=MAX_WIDTH, n_layers=MAX_LAYERS, n_heads=MAX_HEADS,
                 d_ffn=MAX_WIDTH, max_seq_len=MAX_SEQ_LEN, n_branches=MAX_BRANCHES, sinkhorn_iters=MAX_SINKHORN)
        _finite(self, "", "rope_theta", "norm_eps", minimum=0.0, strict=True)
        _finite(self, "", "init_std", minimum=0.0)
        _int_or_none(self, "", "bos_token_id")
        if self.d_model % self.n_heads:
            raise ConfigError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if self.d_head % 2:
            raise ConfigError(f"d_head={self.d_head} must be even for RoPE")
        if self.bos_token_id is not None and not 0 <= self.bos_token_id < self.vocab_size:
            raise ConfigError(f"bos_token_id={self.bos_token_id} is outside the vocabulary")
        if self.moe is not None:
            if not isinstance(self.moe, MoEConfig):
                raise ConfigError("moe must be a JSON object or null")
            self.moe.validate()
        if self.engram is not None:
            if not isinstance(self.engram, EngramConfig):
                raise ConfigError("engram must be a JSON object or null")
            self.engram.validate(self.n_layers)
            if self.engram.compressed_vocab_size is not None and self.engram.compressed_vocab_size > self.vocab_size:
                raise ConfigError(f"engram.compressed_vocab_size={self.engram.compressed_vocab_size} exceeds vocab_size")
            if self.engram.pad_id >= self.vocab_size:
                raise ConfigError(f"engram.pad_id={self.engram.pad_id} is outside the vocabulary")
        return self

    # ---- JSON round trip -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        if not isinstance(data, dict):
            raise ConfigError(f"config must be a JSON object, got {type(data).__name__}")
        data = dict(data)
        moe = data.pop("moe", None)
        engram = data.pop("engram", None)
        cfg = _build(cls, data, "")
        return dataclasses.replace(
            cfg,
            moe=None if moe is None else _build(MoEConfig, moe, "moe."),
            engram=None if engram is None else _build(EngramConfig, engram, "engram."),
        ).validate()

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        """Parse untrusted config JSON (NaN/Infinity tokens, deep nesting: ConfigError)."""
        from engram_interp.errors import EngramInterpError
        from engram_interp.io import loads_strict

        try:
            data = loads_strict(text, "the config")
        except EngramInterpError as exc:
            raise ConfigError(str(exc)) from None
        return cls.from_dict(data)


def _build(cls, data: dict[str, Any], prefix: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'} must be a JSON object")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        name = unknown[0] if len(unknown[0]) <= 100 else _short(unknown[0])
        raise ConfigError(f"unknown config field {prefix}{name}")
    kwargs = {}
    for name, value in data.items():
        if isinstance(value, list):  # JSON lists back to (nested) tuples
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        kwargs[name] = value
        default = known[name].default
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ConfigError(f"{prefix}{name} must be true or false, got {value!r}")
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{prefix}{name} must be a number, got {_short(value)}")
            if isinstance(default, int) and not isinstance(value, int):
                raise ConfigError(f"{prefix}{name} must be an integer, got {_short(value)}")
    return cls(**kwargs)


def _short(value: Any) -> str:
    from engram_interp.io import quote

    return quote(value)


def _dot(prefix: str) -> str:
    return prefix + "." if prefix else ""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive(obj, prefix: str, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not _is_int(value) or value <= 0:
            raise ConfigError(f"{_dot(prefix)}{name} must be a positive integer, got {_short(value)}")


def _non_negative(obj, prefix: str, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not _is_int(value) or value < 0:
            raise ConfigError(f"{_dot(prefix)}{name} must be an integer >= 0, got {_short(value)}")


def _bounded(obj, prefix: str, **limits: int) -> None:
    """Size fields have an upper bound: no config may ask for an absurd allocation."""
    for name, limit in limits.items():
        if getattr(obj, name) > limit:
            raise ConfigError(f"{_dot(prefix)}{name}={_short(getattr(obj, name))} exceeds the limit {limit:,}")


def _finite(obj, prefix: str, *names: str, minimum: float, strict: bool = False) -> None:
    for name in names:
        value = getattr(obj, name)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and (
            value > minimum if strict else value >= minimum)
        if not ok:
            raise ConfigError(f"{_dot(prefix)}{name} must be a finite number {'>' if strict else '>='} {minimum:g},"
                              f" got {_short(value)}")


def _int_or_none(obj, prefix: str, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if value is not None and not _is_int(value):
            raise ConfigError(f"{_dot(prefix)}{name} must be an integer, got {_short(value)}")


def _int_tuple(obj, prefix: str, name: str) -> None:
    value = getattr(obj, name)
    if not isinstance(value, tuple) or not all(_is_int(v) for v in value):
        raise ConfigError(f"{_dot(prefix)}{name} must be a list of integers, got {_short(value)}")


def _int_matrix(obj, prefix: str, name: str, rows: int, cols: int) -> None:
    value = getattr(obj, name)
    if not (isinstance(value, tuple) and len(value) == rows
            and all(isinstance(r, tuple) and len(r) == cols and all(_is_int(v) for v in r) for r in value)):
        raise ConfigError(f"{_dot(prefix)}{name} must hold {cols} integers for each of the {rows} Engram layer(s)")


def _check_table_sizes(cfg: "EngramConfig", prefix: str) -> None:
    """Table sizes follow the hashing rule: per layer (N-1)*K sizes, every one a prime in
    2..MAX_TABLE, all distinct over the whole model (one global walk hands each prime out once)."""
    from engram_interp.model.hashing import is_prime

    _int_matrix(cfg, prefix, "table_sizes", len(cfg.layer_ids), cfg.n_hash_heads)
    flat = [v for row in cfg.table_sizes for v in row]
    bad = next((v for v in flat if not 2 <= v <= MAX_TABLE or not is_prime(v)), None)
    if bad is not None:
        raise ConfigError(f"{prefix}.table_sizes must be primes in 2..{MAX_TABLE}, got {_short(bad)}")
    if len(set(flat)) != len(flat):
        raise ConfigError(f"{prefix}.table_sizes must be distinct primes (each head has its own table)")
