"""The shared hooked model: dense, DeepSeekMoE and Engram transformers, single-stream or mHC.

One block does, in order (docs/ENGRAM.md section 1):
    h = h + Engram(h, ids)      (only at engram.layer_ids)
    h = h + Attention(RMSNorm(h))
    h = h + FFN(RMSNorm(h))     (dense SwiGLU, or DeepSeekMoE after the leading dense layers)
With mHC (n_branches > 1) the two sublayer adds become hyper-connections and Y goes to every branch.
Hook names are the public contract documented in docs/HOOKS.md.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import nn
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint

from engram_interp.config import ModelConfig
from engram_interp.errors import EngramInterpError
from engram_interp.interface import EngramHeads, InterpModel, ModelInfo
from engram_interp.model.attention import Attention
from engram_interp.model.engram import Engram
from engram_interp.model.hyperconnections import HyperConnection
from engram_interp.model.layers import Embed, RMSNorm, SwiGLU, Unembed
from engram_interp.model.loss import chunked_cross_entropy
from engram_interp.model.moe import MoE
from engram_interp.tokenizer import Compression, display_token, tokenizer_identity


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int, canonical_pad_id: int, table_device=None):
        super().__init__()
        self.layer = layer
        has_engram = cfg.engram is not None and layer in cfg.engram.layer_ids
        self.engram = Engram(cfg, layer, canonical_pad_id, table_device) if has_engram else None
        self.ln1 = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.ln2 = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = MoE(cfg) if cfg.is_moe_layer(layer) else SwiGLU(cfg.d_model, cfg.d_ffn)
        if cfg.n_branches > 1:
            self.hc_attn = HyperConnection(cfg.d_model, cfg.n_branches, cfg.sinkhorn_iters, cfg.norm_eps)
            self.hc_mlp = HyperConnection(cfg.d_model, cfg.n_branches, cfg.sinkhorn_iters, cfg.norm_eps)
        self.hook_resid_pre = HookPoint()  # resid: [batch, pos, d_model] or [batch, pos, branch, d_model]
        self.hook_attn_out = HookPoint()  # [batch, pos, d_model]
        self.hook_resid_mid = HookPoint()  # resid
        self.hook_mlp_out = HookPoint()  # [batch, pos, d_model]
        self.hook_resid_post = HookPoint()  # resid

    def forward(self, x: torch.Tensor, canonical_ids: torch.Tensor | None) -> torch.Tensor:
        x = self.hook_resid_pre(x)
        if self.engram is not None:
            x = x + self.engram(x, canonical_ids)
        if x.dim() == 3:  # plain residual
            x = self.hook_resid_mid(x + self.hook_attn_out(self.attn(self.ln1(x))))
            return self.hook_resid_post(x + self.hook_mlp_out(self.mlp(self.ln2(x))))
        pre, post, res = self.hc_attn.coefficients(x)
        out = self.hook_attn_out(self.attn(self.ln1(self.hc_attn.read(x, pre))))
        x = self.hook_resid_mid(self.hc_attn.write(x, res, post, out))
        pre, post, res = self.hc_mlp.coefficients(x)
        out = self.hook_mlp_out(self.mlp(self.ln2(self.hc_mlp.read(x, pre))))
        return self.hook_resid_post(self.hc_mlp.write(x, res, post, out))


class EngramTransformer(InterpModel, HookedRootModule):
    """A decoder-only LM with optional DeepSeekMoE, Engram and mHC, hooked TransformerLens-style.

    ``tokenizer`` (a ``tokenizers.Tokenizer``) enables text input; ``compression`` maps raw ids to
    canonical ids for Engram hashing (identity when omitted). The config's Engram hashing constants
    are resolved from the compression's V' if they are not already frozen in it. ``table_device="meta"``
    builds the Engram memory tables without allocating them (``checkpoint.load`` then maps them from
    the file, so only the rows a forward touches are ever read into memory).
    """

    def __init__(self, cfg: ModelConfig, tokenizer: Tokenizer | None = None, compression: Compression | None = None,
                 table_device: str | torch.device | None = None):
        super().__init__()
        cfg.validate()
        if compression is None:
            compression = Compression(table=np.arange(cfg.vocab_size, dtype=np.int64), n_canonical=cfg.vocab_size)
        if compression.vocab_size != cfg.vocab_size:
            raise EngramInterpError(
                f"compression table covers {compression.vocab_size} ids but vocab_size is {cfg.vocab_size}"
            )
        if tokenizer is not None and tokenizer.get_vocab_size(with_added_tokens=True) != cfg.vocab_size:
            raise EngramInterpError(
                f"tokenizer has {tokenizer.get_vocab_size(with_added_tokens=True)} ids but vocab_size is {cfg.vocab_size}"
            )
        if cfg.engram is not None:
            cfg = _replace_engram(cfg, cfg.engram.resolved(compression.n_canonical))
            if cfg.engram.compressed_vocab_size != compression.n_canonical:
                raise EngramInterpError(
                    f"config was hashed for V'={cfg.engram.compressed_vocab_size} but the compression has"
                    f" V'={compression.n_canonical}"
                )
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.compression = compression
        self.register_buffer("compression_table", torch.from_numpy(compression.table.copy()), persistent=False)
        pad = int(compression.table[cfg.engram.pad_id]) if cfg.engram is not None else 0

        self.embed = Embed(cfg.vocab_size, cfg.d_model)
        self.hook_embed = HookPoint()  # [batch, pos, d_model]
        self.blocks = nn.ModuleList([Block(cfg, layer, pad, table_device) for layer in range(cfg.n_layers)])
        if cfg.n_branches > 1:
            self.readout_weights = nn.Parameter(torch.full((cfg.n_branches,), 1.0 / cfg.n_branches))
        self.hook_readout = HookPoint()  # [batch, pos, d_model]
        self.ln_final = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.unembed = Unembed(cfg.d_model, cfg.vocab_size)
        self._init_weights()
        self.setup()

    # ---- construction ------------------------------------------------------------------------
    def _init_weights(self) -> None:
        """Normal(init_std) everywhere, residual-output projections scaled by 1/sqrt(2 L) (GPT-2),
        biases zero, RMSNorm weights one, Engram conv zero (Engram starts as a pure gated lookup)."""
        std = self.cfg.init_std
        out_std = std / (2 * self.cfg.n_layers) ** 0.5
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)) and not module.weight.is_meta:  # meta: loaded later
                nn.init.normal_(module.weight, std=std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
        nn.init.normal_(self.embed.W_E, std=std)
        nn.init.normal_(self.unembed.W_U, std=std)
        for block in self.blocks:
            nn.init.normal_(block.attn.W_O.weight, std=out_std)
            mlp = block.mlp
            if isinstance(mlp, MoE):
                for p in (mlp.router, mlp.W_gate, mlp.W_up):
                    nn.init.normal_(p, std=std)
                nn.init.normal_(mlp.W_down, std=out_std)
                if mlp.shared_experts is not None:
                    nn.init.normal_(mlp.shared_experts.W_down.weight, std=out_std)
            else:
                nn.init.normal_(mlp.W_down.weight, std=out_std)
            if block.engram is not None and block.engram.use_conv:
                nn.init.zeros_(block.engram.conv.weight)

    # ---- text in ---------------------------------------------------------------------------
    def _require_tokenizer(self) -> Tokenizer:
        if self.tokenizer is None:
            raise EngramInterpError("this model has no tokenizer; pass token ids instead of text")
        return self.tokenizer

    def encode(self, text: str) -> list[int]:
        """Raw token ids of ``text`` (no BOS)."""
        return self._require_tokenizer().encode(text, add_special_tokens=False).ids

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Raw token ids of ``text`` (no BOS) and the character span of each."""
        enc = self._require_tokenizer().encode(text, add_special_tokens=False)
        return enc.ids, [tuple(o) for o in enc.offsets]

    def decode_token(self, token_id: int) -> str:
        return display_token(self._require_tokenizer(), token_id)

    def decode(self, ids: Sequence[int]) -> str:
        return self._require_tokenizer().decode([int(i) for i in ids], skip_special_tokens=False)

    @property
    def cfg(self) -> ModelConfig:
        """The :class:`ModelConfig`, which also answers TransformerLens's field names (``d_vocab``,
        ``n_ctx``, ``device``, ``dtype``, ...; config.py)."""
        cfg = self.__dict__["_cfg"]
        if "embed" in self._modules:  # device and dtype as they are now (the model may have moved)
            object.__setattr__(cfg, "_runtime", (self.embed.W_E.device, self.embed.W_E.dtype))
        return cfg

    @cfg.setter
    def cfg(self, value: ModelConfig) -> None:
        import dataclasses

        self.__dict__["_cfg"] = dataclasses.replace(value)  # a copy: its device / dtype are this model's

    @property
    def info(self) -> ModelInfo:
        """Backend-independent facts (``engram_interp.interface.ModelInfo``)."""
        cached = self.__dict__.get("_info")
        path = getattr(self, "checkpoint_path", None)
        if cached is None or cached.source != str(path or "") or self.__dict__.get("_info_tokenizer") is not self.tokenizer:
            cfg = self.cfg
            from pathlib import Path

            cached = ModelInfo(
                name=Path(path).stem if path else cfg.kind, kind=cfg.kind, architecture="EngramTransformer",
                backend="engram-interp", n_layers=cfg.n_layers, d_model=cfg.d_model, vocab_size=cfg.vocab_size,
                n_branches=cfg.n_branches, max_seq_len=cfg.max_seq_len, bos_token_id=cfg.bos_token_id,
                pad_token_id=cfg.engram.pad_id if cfg.engram is not None else 2,
                tokenizer_id=tokenizer_identity(self.tokenizer),
                engram_layers=tuple(cfg.engram.layer_ids) if cfg.engram is not None else (),
                moe_layers=tuple(l for l in range(cfg.n_layers) if cfg.is_moe_layer(l)),
                source=str(path or ""),
                eos_token_id=self.tokenizer.token_to_id("<|eos|>") if self.tokenizer is not None else None,
            )
            self.__dict__["_info"] = cached
            self.__dict__["_info_tokenizer"] = self.tokenizer  # a swapped tokenizer gives a new identity
        return cached

    @property
    def device(self) -> torch.device:
        return self.embed.W_E.device

    # ---- forward ---------------------------------------------------------------------------
    def forward(self, input, return_type: str | None = "logits"):
        """input: text, list of texts, or LongTensor [batch, pos].

        return_type: "logits" [batch, pos, vocab]; "loss" (mean next-token cross-entropy, nats);
        "both" (logits, loss); None (runs for the hooks only).
        """
        with self.exclusive():
            return self._forward(input, return_type)

    def _forward(self, input, return_type: str | None):
        tokens = input if isinstance(input, torch.Tensor) else self.to_tokens(input)
        if tokens.dim() == 1:
            tokens = tokens.unsqueeze(0)
        tokens = tokens.to(self.device)
        canonical = self.compression_table[tokens] if self.cfg.engram is not None else None
        x = self.hook_embed(self.embed(tokens))
        if self.cfg.n_branches > 1:  # the embedding is copied into every stream
            x = x.unsqueeze(2).expand(-1, -1, self.cfg.n_branches, -1)
        for block in self.blocks:
            x = block(x, canonical)
        if return_type is None:
            return None
        h = self.ln_final(self.hook_readout(self.readout(x)))
        if return_type == "loss" and not torch.is_autocast_enabled(h.device.type):
            # the logits are never needed whole: a chunked loss saves most of the step on a CPU (model/loss.py)
            return chunked_cross_entropy(h[:, :-1].reshape(-1, h.shape[-1]), self.unembed.W_U, tokens[:, 1:].reshape(-1))
        logits = self.unembed(h)
        if return_type == "logits":
            return logits
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), tokens[:, 1:].flatten())
        return loss if return_type == "loss" else (logits, loss)

    def readout(self, resid: torch.Tensor) -> torch.Tensor:
        """The head's stream-combining readout: [b, p, d] stays, [b, p, M, d] -> weighted sum of branches."""
        if resid.dim() == 3:
            return resid
        return torch.einsum("bpmd,m->bpd", resid, self.readout_weights.to(resid.dtype))

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        """ln_final on ``x`` [..., d_model], statistics recomputed on ``x``."""
        return self.ln_final(x)

    def final_norm_frozen(self, x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """ln_final as a linear map at ``reference``: x * w / RMS(reference)."""
        work = torch.promote_types(x.dtype, torch.float32)  # float64 stays float64 (exact attribution sums)
        scale = torch.rsqrt(reference.to(work).pow(2).mean(-1, keepdim=True) + self.ln_final.eps)
        return (x.to(work) * scale).to(x.dtype) * self.ln_final.w

    def unembed_weight(self) -> torch.Tensor:
        return self.unembed.W_U

    def embed_weight(self) -> torch.Tensor:
        return self.embed.W_E

    def attn_output_weight(self, layer: int) -> torch.Tensor:
        """``W_O`` of block ``layer`` per head: ``[n_heads, d_head, d_model]``."""
        w = self.blocks[layer].attn.W_O.weight  # [d_model, n_heads * d_head]
        return w.T.reshape(self.cfg.n_heads, self.cfg.d_head, -1)

    def _engram(self, layer: int):
        if layer not in self.engram_layers:
            raise EngramInterpError(f"layer {layer} has no Engram (Engram layers: {self.engram_layers})")
        return self.blocks[layer].engram

    def engram_heads(self, layer: int) -> EngramHeads:
        """Layout of layer ``layer``'s memory read; ``hook_hash_ids`` holds within-head rows (offsets 0)."""
        e = self.cfg.engram
        sizes = tuple(int(s) for s in self._engram(layer).primes.tolist())
        return EngramHeads(layer=layer, max_ngram_size=e.max_ngram_size, n_head_per_ngram=e.n_head_per_ngram,
                           d_head=e.d_head, head_sizes=sizes, id_offsets=(0,) * len(sizes))

    @contextlib.contextmanager
    def engram_capacity(self, k: int | None):
        """Every Engram table keeps ``k`` rows per head (``Engram.capacity``: row r -> r mod k) inside the
        block; see :meth:`InterpModel.engram_capacity`."""
        self._check_capacity(k)
        if not self.engram_layers:
            raise EngramInterpError(f"this {self.info.kind} model has no Engram tables to truncate")
        with self.exclusive():
            modules = [self._engram(l) for l in self.engram_layers]
            before = [m.capacity for m in modules]
            try:
                for m in modules:
                    m.capacity = k
                yield self
            finally:
                for m, c in zip(modules, before):
                    m.capacity = c

    def engram_value_projection(self, layer: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(W_V [d_model, d_mem], b_V [d_model] or None)`` of layer ``layer``: v_t = W_V e_t + b_V."""
        w_v = self._engram(layer).W_V
        return w_v.weight, w_v.bias

    def _table_index(self, layer: int, head: int, rows: torch.Tensor) -> torch.Tensor:
        engram = self._engram(layer)
        sizes = engram.primes
        if not 0 <= head < len(sizes):
            raise EngramInterpError(f"layer {layer} has {len(sizes)} hash heads; there is no head {head}")
        rows = torch.as_tensor(rows, dtype=torch.long, device=engram.memory.weight.device).reshape(-1)
        if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= int(sizes[head])):
            raise EngramInterpError(f"head {head} of layer {layer} has rows 0..{int(sizes[head]) - 1}")
        return rows + engram.offsets[head].to(rows.device)

    def engram_rows(self, layer: int, head: int, rows: torch.Tensor) -> torch.Tensor:
        """A copy ``[n, d_head]`` of rows ``rows`` (within-head) of head ``head``'s table (``memory.weight``)."""
        return self._engram(layer).memory.weight.detach()[self._table_index(layer, head, rows)].clone()

    @torch.no_grad()
    def set_engram_rows(self, layer: int, head: int, rows: torch.Tensor, values: torch.Tensor) -> None:
        """Write ``values`` ``[n, d_head]`` into rows ``rows`` (within-head) of head ``head``'s table, in place."""
        index = self._table_index(layer, head, rows)
        weight = self._engram(layer).memory.weight
        values = torch.as_tensor(values)
        if tuple(values.shape) != (index.numel(), weight.shape[1]):
            raise EngramInterpError(f"values have shape {tuple(values.shape)}; need ({index.numel()}, {weight.shape[1]})")
        with self.exclusive():
            weight.data[index] = values.to(weight.device, weight.dtype)

    @torch.no_grad()
    def update_balance(self) -> None:
        """One auxiliary-loss-free balancing step in every MoE layer (call after optimiser.step())."""
        for block in self.blocks:
            if isinstance(block.mlp, MoE):
                block.mlp.update_balance()

    def hook_names(self) -> list[str]:
        """Every hook point name (module registration order)."""
        return list(self.hook_dict)


def _replace_engram(cfg: ModelConfig, engram) -> ModelConfig:
    import dataclasses

    return dataclasses.replace(cfg, engram=engram)
