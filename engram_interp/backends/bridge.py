"""TransformerLens bridge backend: a Hugging Face model that TransformerLens 4.3's ``TransformerBridge``
covers (GPT-2, GPT-NeoX, Gemma 2, Gemma 3 text, Phi-3, OLMo 2), run by the bridge, with the bridge's own
hook points mapped onto ours (docs/HOOKS.md, docs/MODELS.md).

The folder is checked and loaded by ``backends/huggingface.py`` (safe files, offline, no remote code);
the loaded ``*ForCausalLM`` is handed to ``TransformerBridge`` (``boot(..., hf_model=...)``), which wraps
its modules in place and places a TransformerLens ``HookPoint`` at every site it knows. We add none of
our own per-architecture hooking: each of our hook points is fed by a plain torch hook on the bridge's
point of the same meaning (:data:`POINTS`). Qwen4-Exp and the architectures the bridge does not cover
keep our own hooking layer (``backends/huggingface.py``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint

from engram_interp.errors import CheckpointError
from engram_interp.interface import InterpModel, ModelInfo
from engram_interp.backends.hf_text import HFTextMixin
from engram_interp.tokenizer import tokenizer_identity

# The architectures opened through the bridge (each checked in tests/test_bridge_models.py).
BRIDGED = ("GPT2LMHeadModel", "GPTNeoXForCausalLM", "Gemma2ForCausalLM", "Gemma3ForCausalLM", "Phi3ForCausalLM",
           "Olmo2ForCausalLM")
BLOCK_POINTS = ("hook_resid_pre", "hook_resid_mid", "hook_attn_out", "hook_mlp_out", "hook_resid_post")
READOUT_SOURCE = "ln_final.hook_in"  # the bridge's point for the stream entering the final norm


class BridgeAttnHooks(nn.Module):
    """Our attention hook points of one block (so far the pattern, checked against HF's ``output_attentions``)."""

    def __init__(self) -> None:
        super().__init__()
        self.hook_pattern = HookPoint()  # [batch, head, query_pos, key_pos]: softmax attention


class BridgeBlockHooks(nn.Module):
    """Our hook points of one block (names as in docs/HOOKS.md)."""

    def __init__(self, has_mid: bool) -> None:
        super().__init__()
        self.hook_resid_pre = HookPoint()  # [batch, pos, d]
        self.hook_resid_mid = HookPoint() if has_mid else None  # [batch, pos, d]; none in parallel blocks (GPT-NeoX)
        self.hook_attn_out = HookPoint()  # [batch, pos, d]: what attention adds to the stream
        self.hook_mlp_out = HookPoint()  # [batch, pos, d]
        self.hook_resid_post = HookPoint()  # [batch, pos, d]
        self.attn = BridgeAttnHooks()


class BridgeModel(HFTextMixin, InterpModel, HookedRootModule):
    """A Hugging Face causal LM run by TransformerLens's ``TransformerBridge``, behind :class:`InterpModel`.

    ``hf``: the loaded ``*ForCausalLM``; ``hf_tok``: its transformers tokenizer (the bridge's);
    ``tokenizer``: its ``tokenizers.Tokenizer`` (ours); the rest as :class:`~engram_interp.backends.huggingface.HFModel`."""

    def __init__(self, hf: nn.Module, hf_tok, tokenizer, bos_token_id: int | None, pad_token_id: int, source: str,
                 forced_bos_token_id: int | None = None, eos_token_id: int | None = None) -> None:
        super().__init__()
        from transformer_lens.model_bridge.sources.transformers.source import boot

        if len(set((getattr(hf, "hf_device_map", None) or {}).values())) > 1:
            raise CheckpointError(f"{source}: {type(hf).__name__} runs through TransformerLens's bridge, which is not "
                                  "yet checked here under a device map over several devices / disk: load it on one device")
        self.hf = hf.eval()
        self.tokenizer = tokenizer
        try:
            self.bridge = boot(str(source), hf_model=self.hf, tokenizer=hf_tok, device=str(hf.device), dtype=hf.dtype)
        except Exception as exc:  # noqa: BLE001 - a boundary: the bridge raises many types
            raise CheckpointError(f"{source}: TransformerLens's bridge could not wrap it ({type(exc).__name__}: "
                                  f"{str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''})") from None
        self.bridge.eval()
        n = int(self.bridge.cfg.n_layers)
        self.hook_embed = HookPoint()  # [batch, pos, d]: what the embedding module returns (Gemma: scaled by sqrt(d))
        mid = "blocks.0.hook_resid_mid" in self.bridge.hook_dict
        # learned absolute positions (GPT-2): added to hook_embed before block 0
        self.hook_pos_embed = HookPoint() if "hook_pos_embed" in self.bridge.hook_dict else None  # [batch, pos, d]
        self.blocks = nn.ModuleList([BridgeBlockHooks(mid) for _ in range(n)])
        self.hook_readout = HookPoint()  # [batch, pos, d]: the stream the head reads (before the final norm)
        self._handles = [self.bridge.hook_dict[src].register_forward_hook(_route(point))
                         for src, point in self.points().items()]
        self.setup()
        self._norm = self.bridge.ln_final.original_component  # the HF module of the final norm
        cfg = hf.config
        self._softcap = getattr(cfg, "final_logit_softcapping", None)
        self._info = ModelInfo(
            name=Path(source).name,
            kind=str(cfg.model_type), architecture=type(hf).__name__, backend="transformer-lens-bridge",
            n_layers=n, d_model=int(self.bridge.cfg.d_model), vocab_size=int(self.bridge.cfg.d_vocab), n_branches=1,
            max_seq_len=int(self.bridge.cfg.n_ctx), bos_token_id=bos_token_id, pad_token_id=int(pad_token_id),
            tokenizer_id=tokenizer_identity(tokenizer), source=str(source),
            extra={"parameters": sum(p.numel() for p in hf.parameters()), "dtype": str(hf.dtype).replace("torch.", ""),
                   "hooks": "TransformerLens TransformerBridge", "final_logit_softcapping": self._softcap},
            forced_bos_token_id=bos_token_id if forced_bos_token_id is None else forced_bos_token_id,
            eos_token_id=eos_token_id,
        )

    def points(self) -> dict[str, HookPoint]:
        """The bridge's hook name -> our hook point it feeds (:data:`BLOCK_POINTS` per block, embed, readout)."""
        out = {"hook_embed": self.hook_embed, READOUT_SOURCE: self.hook_readout}
        if self.hook_pos_embed is not None:
            out["hook_pos_embed"] = self.hook_pos_embed
        for l, block in enumerate(self.blocks):
            out.update({f"blocks.{l}.{name}": getattr(block, name) for name in BLOCK_POINTS if getattr(block, name) is not None})
            out[f"blocks.{l}.attn.hook_pattern"] = block.attn.hook_pattern
        return out

    def setup(self) -> None:
        """HookedRootModule.setup over our hook points only (the bridge and HF modules are left untouched)."""
        self.mod_dict, self.hook_dict = {}, {}
        for name, module in self.named_modules():
            if not name or name.split(".")[0] in ("hf", "bridge"):
                continue
            module.name = name
            self.mod_dict[name] = module
            if isinstance(module, HookPoint):
                self.hook_dict[name] = module

    # ---- interface -------------------------------------------------------------------------
    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def device(self) -> torch.device:
        return self.hf.get_input_embeddings().weight.device

    def forward(self, input, return_type: str | None = "logits"):
        """input: text, texts, or LongTensor ``[batch, pos]``, run by the bridge. return_type: "logits"
        ``[b, p, vocab]`` (soft-capped where the model caps), "loss" (mean next-token cross-entropy,
        nats), "both", or None (hooks only)."""
        return self._run(input, return_type, lambda tokens, head: self.bridge(tokens, return_type="logits"))

    def readout(self, resid: torch.Tensor) -> torch.Tensor:
        """One residual stream: unchanged."""
        return resid

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        """The model's own final norm module (LayerNorm or its RMSNorm, Gemma's ``1 + w`` included) on ``x``."""
        return self._norm(x)

    def final_norm_frozen(self, x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """The final norm as a linear map at ``reference``: the module's own output on ``x`` (bias removed),
        rescaled by ``sigma(x) / sigma(reference)`` (sigma: the norm's RMS, or standard deviation for
        LayerNorm, eps included), so that the scale is ``reference``'s."""
        norm = self._norm
        eps = float(getattr(norm, "eps", getattr(norm, "variance_epsilon", 1e-6)))
        layer = isinstance(norm, nn.LayerNorm)

        def sigma(v: torch.Tensor) -> torch.Tensor:
            v = v.float()
            return torch.sqrt((v.var(-1, unbiased=False, keepdim=True) if layer else v.pow(2).mean(-1, keepdim=True)) + eps)

        y = norm(x)
        bias = getattr(norm, "bias", None)
        if bias is not None:
            y = y - bias
        return (y.float() * sigma(x) / sigma(reference.to(x.device))).to(x.dtype)

    def unembed_weight(self) -> torch.Tensor:
        return self.hf.get_output_embeddings().weight.T

    def unembed_bias(self) -> torch.Tensor | None:
        return getattr(self.hf.get_output_embeddings(), "bias", None)

    def apply_unembed(self, x: torch.Tensor) -> torch.Tensor:
        """The LM head on ``x`` ``[..., d]`` -> logits ``[..., vocab]``, then the model's final logit
        soft-capping ``c * tanh(logits / c)`` where it has one (Gemma 2, and Gemma 3 when configured)."""
        logits = self.hf.get_output_embeddings()(x.to(self.hf.dtype))
        c = self._softcap
        return logits if not c else torch.tanh(logits / c) * c

    def embed_weight(self) -> torch.Tensor:
        return self.hf.get_input_embeddings().weight

    def hook_names(self) -> list[str]:
        return list(self.hook_dict)


def _route(point: HookPoint):
    """A torch forward hook on one of the bridge's points that passes its value through ``point``."""
    def hook(module, args, out):
        return point(out)
    return hook
