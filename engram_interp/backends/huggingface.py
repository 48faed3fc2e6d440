"""Hugging Face backend: a local model folder or GGUF file, run by Hugging Face's own forward, with the
hook points of docs/HOOKS.md attached as plain torch hooks on its modules (docs/MODELS.md).

Which layer hooks what: the architectures TransformerLens's ``TransformerBridge`` covers and we have
no reason to hook ourselves (GPT-2, GPT-NeoX, Gemma 2/3, Phi-3, OLMo 2) go through the bridge
(``backends/bridge.py``, chosen in :func:`load_hf`); this module's own small hooking layer serves what
the bridge lacks or what needs our hook names: Qwen4-Exp (PLE as ``blocks.{l}.engram.*``,
hyper-connection streams as ``[batch, pos, branch, d]`` residuals), the Llama / Mistral / Qwen family
and the MoE baselines with their routing hooks.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch
from torch import nn
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint

from engram_interp.backends import attn_hooks, moe_hooks
from engram_interp.backends.bos import tl_bos
from engram_interp.backends import ple as ple_mod
from engram_interp.backends import ple_mapped
from engram_interp.backends import placement as place
from engram_interp.backends.files import check_folder, check_gguf
from engram_interp.backends.finite import quiet_transformers, refuse_nonfinite
from engram_interp.errors import CheckpointError, EngramInterpError
from engram_interp.interface import InterpModel, ModelInfo
from engram_interp.backends.hf_text import HFTextMixin
from engram_interp.tokenizer import tokenizer_identity


class BlockHooks(nn.Module):
    """Hook points of one decoder layer; ``engram`` only at PLE layers, ``mlp`` (routing) only at MoE layers."""

    def __init__(self, has_engram: bool, has_moe: bool = False, has_z: bool = False) -> None:
        super().__init__()
        self.hook_resid_pre = HookPoint()  # [batch, pos, d] or [batch, pos, branch, d]
        self.hook_attn_out = HookPoint()  # [batch, pos, d]
        self.hook_mlp_out = HookPoint()  # [batch, pos, d]
        self.hook_resid_post = HookPoint()
        self.engram = ple_mod.PLEHooks() if has_engram else None
        self.mlp = moe_hooks.RouterHooks() if has_moe else None
        self.attn = attn_hooks.AttnHooks() if has_z else None  # hook_z, where the layer has softmax attention


class HFModel(HFTextMixin, InterpModel, HookedRootModule):
    """A Hugging Face causal LM behind the :class:`~engram_interp.interface.InterpModel` interface.

    ``hf``: the ``*ForCausalLM`` (run as is); ``tokenizer``: its ``tokenizers.Tokenizer``;
    ``bos_token_id``: prepended to texts by default (None: nothing); ``forced_bos_token_id``: what
    ``prepend_bos=True`` prepends (backends/bos.py); ``source``: the path."""

    def __init__(self, hf: nn.Module, tokenizer, bos_token_id: int | None, pad_token_id: int, source: str,
                 forced_bos_token_id: int | None = None, eos_token_id: int | None = None) -> None:
        super().__init__()
        self.hf = hf.eval()
        self.tokenizer = tokenizer
        cfg = hf.config
        self._layers = hf.model.layers
        self.n_branches = int(getattr(cfg, "hc_count", 1) or 1) if hasattr(hf.model, "hyper_connection_mixer") else 1
        ple_layers = tuple(l for l, layer in enumerate(self._layers) if getattr(layer, "ple", None) is not None)
        self.hook_embed = HookPoint()  # [batch, pos, d]
        moe = tuple(l for l, layer in enumerate(self._layers) if moe_hooks.is_moe(layer))
        self.blocks = nn.ModuleList([BlockHooks(l in ple_layers, l in moe, attn_hooks.has_z(layer))
                                     for l, layer in enumerate(self._layers)])
        self.hook_readout = HookPoint()  # [batch, pos, d]: the stream the head reads (before the final norm)
        self._handles = self._attach()
        self.setup()
        name = Path(source).stem if Path(source).suffix.lower() == ".gguf" else Path(source).name
        self._info = ModelInfo(
            name=name, kind=str(cfg.model_type), architecture=type(hf).__name__, backend="huggingface",
            n_layers=len(self._layers), d_model=int(cfg.hidden_size), vocab_size=int(cfg.vocab_size),
            n_branches=self.n_branches, max_seq_len=int(getattr(cfg, "max_position_embeddings", 2048)),
            bos_token_id=bos_token_id, pad_token_id=int(pad_token_id), tokenizer_id=tokenizer_identity(tokenizer),
            engram_layers=ple_layers, moe_layers=moe, source=str(source), extra=self._extra(ple_layers, moe),
            forced_bos_token_id=bos_token_id if forced_bos_token_id is None else forced_bos_token_id,
            eos_token_id=eos_token_id,
        )

    # ---- construction ------------------------------------------------------------------------
    def setup(self) -> None:
        """HookedRootModule.setup over our hook points only (Hugging Face's modules are left untouched)."""
        self.mod_dict, self.hook_dict = {}, {}
        for name, module in self.named_modules():
            if not name or name == "hf" or name.startswith("hf."):
                continue
            module.name = name
            self.mod_dict[name] = module
            if isinstance(module, HookPoint):
                self.hook_dict[name] = module

    def _streams(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.n_branches, -1)) if self.n_branches > 1 else x

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(-2) if self.n_branches > 1 else x

    def _attach(self) -> list:
        """Plain torch hooks on the HF modules that route every value through our hook points."""
        model = self.hf.model
        handles = [model.embed_tokens.register_forward_hook(lambda m, a, out: self.hook_embed(out))]
        for hooks, layer in zip(self.blocks, self._layers):
            handles.append(layer.register_forward_pre_hook(self._resid_pre_hook(hooks), with_kwargs=True))
            handles.append(layer.register_forward_hook(self._resid_post_hook(hooks)))
            attn = getattr(layer, "self_attn", None) or getattr(layer, "linear_attn")
            handles.append(attn.register_forward_hook(_first_output(hooks.hook_attn_out)))
            handles.append(layer.mlp.register_forward_hook(_first_output(hooks.hook_mlp_out)))
            if hooks.engram is not None:
                handles += ple_mod.attach(layer.ple, hooks.engram)
            if hooks.mlp is not None:
                handles += moe_hooks.attach(layer, hooks.mlp)
            if hooks.attn is not None:
                handles += attn_hooks.attach(layer, hooks.attn, self.hf.config.num_attention_heads)
        if self.n_branches > 1:  # the readout is the mixer's output (its per-stream norm is inside it)
            handles.append(model.hyper_connection_mixer.register_forward_hook(lambda m, a, out: self.hook_readout(out)))
        else:
            handles.append(model.norm.register_forward_pre_hook(lambda m, a: (self.hook_readout(a[0]),)))
        return handles

    def _resid_pre_hook(self, hooks: BlockHooks):
        def hook(module, args, kwargs):
            if args:
                return (self._flat(hooks.hook_resid_pre(self._streams(args[0]))),) + tuple(args[1:]), kwargs
            kwargs["hidden_states"] = self._flat(hooks.hook_resid_pre(self._streams(kwargs["hidden_states"])))
            return args, kwargs
        return hook

    def _resid_post_hook(self, hooks: BlockHooks):
        def hook(module, args, out):
            if isinstance(out, tuple):
                return (self._flat(hooks.hook_resid_post(self._streams(out[0]))),) + tuple(out[1:])
            return self._flat(hooks.hook_resid_post(self._streams(out)))
        return hook

    def _extra(self, ple_layers: tuple[int, ...], moe_layers: tuple[int, ...] = ()) -> dict:
        cfg = self.hf.config
        extra = {"parameters": sum(p.numel() for p in self.hf.parameters()) + ple_mapped.table_parameters(self.hf), "dtype": str(self.hf.dtype).replace("torch.", ""),
                 "attention": [getattr(cfg, "layer_types", ["attention"] * len(self._layers))[l] for l in range(len(self._layers))]}
        if ple_layers:
            extra["ple"] = {l: _ple_summary(ple_mod.hashing(self._layers, l)) for l in ple_layers}
        if moe_layers:
            extra["moe"] = {l: moe_hooks.moe_summary(self._layers[l]) for l in moe_layers}
        return extra

    # ---- interface -------------------------------------------------------------------------
    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def device(self) -> torch.device:
        """Where token ids go in: the embedding's device (its execution device under a device map)."""
        return place.execution_device(self.hf.get_input_embeddings())

    def forward(self, input, return_type: str | None = "logits"):
        """input: text, texts, or LongTensor ``[batch, pos]``. return_type: "logits" ``[b, p, vocab]``,
        "loss" (mean next-token cross-entropy, nats), "both", or None (hooks only; skips the LM head)."""
        return self._run(input, return_type, lambda tokens, head: self.hf(
            input_ids=tokens, use_cache=False, logits_to_keep=0 if head else 1).logits)

    def readout(self, resid: torch.Tensor) -> torch.Tensor:
        """Single stream: unchanged. Hyper-connection streams ``[b, p, M, d]``: Qwen4-Exp's own
        ``hyper_connection_mixer`` (per-stream RMSNorm, then its input-dependent stream weights)."""
        if resid.dim() == 3 or self.n_branches == 1:
            return resid
        return self.hf.model.hyper_connection_mixer.forward(resid.flatten(-2))

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        """The final RMSNorm on ``x`` (statistics from ``x``); identity for Qwen4-Exp, whose norm is in
        :meth:`readout`."""
        return x if self.n_branches > 1 else self.hf.model.norm.forward(x)

    def final_norm_frozen(self, x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """``x * w / RMS(reference)`` (identity for Qwen4-Exp, as :meth:`final_norm`)."""
        if self.n_branches > 1:
            return x
        norm = self.hf.model.norm
        eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", 1e-6))
        scale = torch.rsqrt(reference.float().pow(2).mean(-1, keepdim=True) + eps).to(x.device)
        with place.onloaded(norm):
            weight = norm.weight.to(x.device)
        return (x.float() * scale).to(x.dtype) * weight

    def unembed_weight(self) -> torch.Tensor:
        with place.onloaded(head := self.hf.get_output_embeddings()):  # a real tensor even when offloaded
            return head.weight.T

    def unembed_bias(self) -> torch.Tensor | None:
        with place.onloaded(head := self.hf.get_output_embeddings()):
            return getattr(head, "bias", None)

    def apply_unembed(self, x: torch.Tensor) -> torch.Tensor:
        """The LM head module itself on ``x`` ``[..., d]`` (so accelerate moves ``x`` to the head's
        device and loads an offloaded head for the call) -> logits ``[..., vocab]`` in the model's dtype."""
        head = self.hf.get_output_embeddings()
        return head(x.to(head.weight.dtype))

    def embed_weight(self) -> torch.Tensor:
        return self.hf.get_input_embeddings().weight

    def attn_output_weight(self, layer: int) -> torch.Tensor:
        if self.blocks[layer].attn is None:
            raise EngramInterpError(f"layer {layer} of this {self._info.architecture} model has no softmax attention with an o_proj")
        return attn_hooks.output_weight(self._layers[layer], self.hf.config.num_attention_heads)

    def ple_hashing(self, layer: int) -> ple_mod.PLEHashing:
        """A PLE layer's hashing (row ids for token ids, table tensor name); see backends/ple.py."""
        return ple_mod.hashing(self._layers, layer)

    @contextlib.contextmanager
    def engram_capacity(self, k: int | None):
        """Every PLE table keeps ``k`` rows per head inside the block: a forward hook on ``hook_hash_ids``
        (which feeds the n-gram table) maps row id o_h + r to o_h + (r mod k), o_h the head's offset; see
        :meth:`InterpModel.engram_capacity`."""
        self._check_capacity(k)
        if not self.engram_layers:
            raise EngramInterpError(f"this {self.info.architecture} model has no PLE / Engram tables to truncate")
        with self.exclusive():
            handles = []
            for l in (self.engram_layers if k is not None else []):
                off = torch.tensor(self.ple_hashing(l).head_offsets, dtype=torch.long)

                def fold(module, args, ids, off=off):
                    o = off.to(ids.device)
                    return torch.remainder(ids - o, k) + o

                handles.append(self.hook_dict[f"blocks.{l}.engram.hook_hash_ids"].register_forward_hook(fold))
            try:
                yield self
            finally:
                for h in handles:
                    h.remove()

    def hook_names(self) -> list[str]:
        return list(self.hook_dict)


def _first_output(point: HookPoint):
    def hook(module, args, out):
        if isinstance(out, tuple):
            return (point(out[0]),) + tuple(out[1:])
        return point(out)
    return hook


def _ple_summary(h: ple_mod.PLEHashing) -> dict:
    return {"rows": h.rows, "head_dim": h.head_dim, "ngram_size": h.ngram_size, "heads_per_ngram": h.heads_per_ngram,
            "table": h.table_name}


# ------------------------------------------------------------------------------------------ loading
LOAD_BAR_BYTES = 1 << 30  # transformers' loading bar is shown only for weights larger than this


def load_hf(path: str | os.PathLike, device=None, dtype=None, allow_nonfinite: bool = False,
            placement: place.Placement | None = None, map_tables: bool = True) -> HFModel:
    """A Hugging Face folder or ``.gguf`` file -> :class:`HFModel` on ``device`` (default: CUDA when
    present), or placed by accelerate over devices / disk as ``placement`` says (backends/placement.py);
    ``dtype``: default the checkpoint's own on a GPU, float32 on the CPU (backends/precision.py;
    ``info.extra["dtype_reason"]`` says which). Offline, safetensors/GGUF only, no remote code; every
    problem is a one-line CheckpointError (transformers' own load report is kept quiet); weights
    holding NaN/Inf are refused unless ``allow_nonfinite``. ``map_tables``: Qwen4-Exp PLE tables are read
    row by row from their safetensors shards, never resident nor placed (backends/ple_mapped.py; folders
    with F32/BF16/F16 tables, with or without a device map); False loads them eagerly."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    from engram_interp.checkpoint import resolve_device, resolve_dtype

    p = Path(path)
    gguf = p.suffix.lower() == ".gguf"
    if gguf:
        check_gguf(p)
        where, kwargs = p.parent, {"gguf_file": p.name}
    elif p.is_dir():
        check_folder(p)
        where, kwargs = p, {"use_safetensors": True}
    else:
        raise CheckpointError(f"no such model: {p} (expected a .ckpt, a .gguf file or a Hugging Face folder)")
    common = {"local_files_only": True, "trust_remote_code": False}
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    try:  # first on its own, so that a config transformers rejects is not blamed on the tokenizer
        with quiet_transformers():
            config = AutoConfig.from_pretrained(where, **common, **kwargs)
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{p}: transformers rejects its config ({_one_line(exc)})") from None
    try:
        with quiet_transformers():
            hf_tok = AutoTokenizer.from_pretrained(where, **common, **kwargs)
    except RecursionError:
        raise CheckpointError(f"{p}: its tokenizer.json is nested too deeply to be a real tokenizer") from None
    except Exception as exc:  # noqa: BLE001 - a boundary: transformers raises many types
        raise CheckpointError(f"{p}: its tokenizer could not be loaded ({_one_line(exc)})") from None
    tok = getattr(hf_tok, "backend_tokenizer", None)
    if tok is None:
        raise CheckpointError(f"{p}: no fast tokenizer (tokenizer.json) could be built")
    big = sum(f.stat().st_size for f in ([p] if gguf else p.glob("*.safetensors"))) > LOAD_BAR_BYTES
    from engram_interp.backends.precision import choose_dtype

    target = None if placement is not None else resolve_device(device)
    on_gpu = placement.uses_gpu() if placement is not None else target.type == "cuda"
    chosen, why = choose_dtype(resolve_dtype(dtype), config, on_gpu)
    mapped = map_tables and not gguf and ple_mapped.mappable(config, p)
    loader = ple_mapped.mapped_class(AutoModelForCausalLM._model_mapping[type(config)]) if mapped else AutoModelForCausalLM
    try:
        with quiet_transformers(bars=big), place.offload_scratch(placement) as placed:
            hf, report = loader.from_pretrained(
                where, **common, **kwargs, dtype=chosen, output_loading_info=True, **placed
            )
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{p}: transformers could not load it ({_one_line(exc)})") from None
    missing = list(report.get("missing_keys") or [])
    if missing:
        raise CheckpointError(f"{p} lacks {len(missing)} weight(s) the config needs, e.g. {sorted(missing)[0]}")
    hf.requires_grad_(False)
    vocab = int(getattr(hf.config, "vocab_size", 0) or getattr(getattr(hf.config, "text_config", None), "vocab_size", 0))
    if vocab and tok.get_vocab_size(with_added_tokens=False) > vocab:
        raise CheckpointError(f"{p}: its tokenizer has {tok.get_vocab_size(with_added_tokens=False)} tokens but the model "
                              f"only {vocab} (token ids would index past the embedding)")
    if mapped:
        ple_mapped.bind_tables(hf, p, hf.dtype, check_finite=not allow_nonfinite)
    if not allow_nonfinite:
        refuse_nonfinite(hf, p)
    bos, forced = tl_bos(type(hf).__name__, tok, hf_tok)
    from engram_interp.backends.bridge import BRIDGED, BridgeModel  # architectures TL's bridge hooks

    if type(hf).__name__ in BRIDGED:
        model = BridgeModel(hf, hf_tok, tok, bos, _pad(hf_tok), source=str(p), forced_bos_token_id=forced,
                            eos_token_id=hf_tok.eos_token_id)
    else:
        model = HFModel(hf, tok, bos, _pad(hf_tok), source=str(p), forced_bos_token_id=forced, eos_token_id=hf_tok.eos_token_id)
    model.info.extra.update(dtype_reason=why, placement=place.summary(hf))
    if model.info.engram_layers:
        model.info.extra["ple_tables"] = "mapped" if mapped else "resident"  # backends/ple_mapped.py
    return (model if placement is not None else model.to(target)).eval()


def _pad(hf_tok) -> int:
    for tid in (hf_tok.pad_token_id, hf_tok.eos_token_id, 0):
        if tid is not None:
            return int(tid)
    return 0


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200] if text else ''}"
