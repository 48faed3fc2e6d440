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
from dataclasses import dataclass, field, fields
from typing import Any

from engram_interp.errors import ConfigError


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
        _non_negative(self, prefix, "n_shared_experts", "n_dense_layers", "balance_rate")
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
        _positive(self, prefix, "n_head_per_ngram", "n_embed_per_ngram", "kernel_size")
        if self.max_ngram_size < 2:
            raise ConfigError(f"{prefix}.max_ngram_size must be >= 2, got {self.max_ngram_size}")
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
        if any(v < 2 for v in self.engram_vocab_size):
            raise ConfigError(f"{prefix}.engram_vocab_size entries must be >= 2")
        if self.n_embed_per_ngram % self.n_head_per_ngram:
            raise ConfigError(
                f"{prefix}.n_embed_per_ngram={self.n_embed_per_ngram} is not divisible by"
                f" n_head_per_ngram={self.n_head_per_ngram}"
            )
        if self.pad_id < 0:
            raise ConfigError(f"{prefix}.pad_id must be >= 0")
        if self.multipliers is not None:
            if len(self.multipliers) != len(self.layer_ids) or any(len(m) != self.max_ngram_size for m in self.multipliers):
                raise ConfigError(f"{prefix}.multipliers must hold {self.max_ngram_size} values per Engram layer")
            if any(m % 2 == 0 or m <= 0 for ms in self.multipliers for m in ms):
                raise ConfigError(f"{prefix}.multipliers must be positive odd integers")
        if self.table_sizes is not None:
            if len(self.table_sizes) != len(self.layer_ids) or any(len(s) != self.n_hash_heads for s in self.table_sizes):
                raise ConfigError(f"{prefix}.table_sizes must hold {self.n_hash_heads} primes per Engram layer")


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
        if self.d_model % self.n_heads:
            raise ConfigError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if self.d_head % 2:
            raise ConfigError(f"d_head={self.d_head} must be even for RoPE")
        if self.norm_eps <= 0 or self.rope_theta <= 0:
            raise ConfigError("norm_eps and rope_theta must be > 0")
        if self.bos_token_id is not None and not 0 <= self.bos_token_id < self.vocab_size:
            raise ConfigError(f"bos_token_id={self.bos_token_id} is outside the vocabulary")
        if self.moe is not None:
            self.moe.validate()
        if self.engram is not None:
            self.engram.validate(self.n_layers)
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
        return cls.from_dict(json.loads(text))


def _build(cls, data: dict[str, Any], prefix: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'} must be a JSON object")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"unknown config field {prefix}{unknown[0]}")
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
                raise ConfigError(f"{prefix}{name} must be a number, got {value!r}")
            if isinstance(default, int) and not isinstance(value, int):
                raise ConfigError(f"{prefix}{name} must be an integer, got {value!r}")
    return cls(**kwargs)


def _positive(obj, prefix: str, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"{prefix + '.' if prefix else ''}{name} must be a positive integer, got {value!r}")


def _non_negative(obj, prefix: str, *names: str) -> None:
    for name in names:
        if getattr(obj, name) < 0:
            raise ConfigError(f"{prefix}.{name} must be >= 0, got {getattr(obj, name)!r}")
