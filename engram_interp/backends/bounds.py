"""Bounds on what a Hugging Face ``config.json`` declares, checked against the weights on disk before
transformers allocates anything (the ``.ckpt`` checks of ``engram_interp.model.weights``, for foreign
folders). Every refusal is one ``CheckpointError`` line naming the field.

Field names are read generically (``num_hidden_layers`` / ``n_layer`` / ``num_layers``, ``hidden_size`` /
``n_embd`` / ``d_model``, expert counts of every MoE family ...), so the same checks hold for every
architecture a backend opens.
"""

from __future__ import annotations

import math
import re
from typing import Any

from engram_interp.errors import CheckpointError

MAX_LAYERS = 4096
MAX_WIDTH = 1 << 17  # hidden / intermediate sizes
MAX_VOCAB = 1 << 22
MAX_EXPERTS = 1 << 14
MAX_HEADS = 4096
MAX_CONTEXT = 1 << 24
FLOAT_DTYPES = {"F64", "F32", "F16", "BF16"}

LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers")
WIDTH_KEYS = ("hidden_size", "n_embd", "d_model", "intermediate_size", "moe_intermediate_size", "n_inner",
              "shared_expert_intermediate_size", "head_dim",
              "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")  # + DeepSeek MLA
EXPERT_KEYS = ("num_experts", "num_local_experts", "n_routed_experts", "n_shared_experts", "num_experts_per_tok",
               "n_group", "topk_group", "first_k_dense_replace", "decoder_sparse_step")
HEAD_KEYS = ("num_attention_heads", "num_key_value_heads", "n_head", "heads_per_ngram", "hc_count", "hc_lowrank",
             "linear_num_key_heads", "linear_num_value_heads", "linear_key_head_dim", "linear_value_head_dim",
             "linear_conv_kernel_dim", "ple_conv_kernel_size", "split_ngram_parts", "make_ngram_vocab_size_divisible_by")
NGRAM_KEYS = ("ngram_size", "max_ngram_size")  # n-gram orders: at least bigrams
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len")
EPS_KEYS = ("rms_norm_eps", "layer_norm_eps", "layer_norm_epsilon", "norm_eps")
POSITIVE_FLOAT_KEYS = ("rope_theta",)
TOKEN_KEYS = ("bos_token_id", "eos_token_id", "pad_token_id")
_LAYER_NAME = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer)\.(\d+)\.")


def _int_in(cfg: dict, key: str, lo: int, hi: int, where: str) -> int | None:
    if key not in cfg or cfg[key] is None:
        return None
    v = cfg[key]
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise CheckpointError(f"{where}: {key} = {str(v)[:40]} is out of range (an integer in {lo}..{hi})")
    return v


def _text_config(cfg: dict) -> dict:
    sub = cfg.get("text_config")
    return {**cfg, **sub} if isinstance(sub, dict) else cfg


def check_config(cfg: Any, where: str) -> dict:
    """Refuse a config whose declared sizes are out of range or not positive; returns the (text) config."""
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{where}: config.json must hold a JSON object, not {type(cfg).__name__}")
    archs = cfg.get("architectures")
    if archs is not None and (not isinstance(archs, list) or not all(isinstance(a, str) for a in archs)):
        raise CheckpointError(f"{where}: 'architectures' in config.json must be a list of names")
    if cfg.get("quantization_config") is not None:
        q = cfg["quantization_config"]
        method = q.get("quant_method", "?") if isinstance(q, dict) else "?"
        raise CheckpointError(f"{where}: quantised weights ({str(method)[:40]}) are not supported; "
                              "engram-interp reads floating-point safetensors (or GGUF) only")
    tc = _text_config(cfg)
    for key in LAYER_KEYS:
        _int_in(tc, key, 1, MAX_LAYERS, where)
    for key in WIDTH_KEYS:
        _int_in(tc, key, 1, MAX_WIDTH, where)
    for key in EXPERT_KEYS:
        _int_in(tc, key, 0, MAX_EXPERTS, where)
    for key in HEAD_KEYS:
        _int_in(tc, key, 1, MAX_HEADS, where)
    for key in NGRAM_KEYS:
        _int_in(tc, key, 2, 64, where)
    _int_in(tc, "ngram_vocab_size_base", 1, 1 << 40, where)
    _int_in(tc, "ple_embed_dim", 1, MAX_WIDTH, where)
    for key in CONTEXT_KEYS:
        _int_in(tc, key, 2, MAX_CONTEXT, where)
    vocab = _int_in(tc, "vocab_size", 1, MAX_VOCAB, where)
    n_layers = next((tc[k] for k in LAYER_KEYS if isinstance(tc.get(k), int)), None)
    ple = tc.get("ple_layer_ids")
    if ple is not None and (not isinstance(ple, list) or not all(isinstance(l, int) and not isinstance(l, bool)
                                                                   and 0 <= l < (n_layers or MAX_LAYERS) for l in ple)):
        raise CheckpointError(f"{where}: ple_layer_ids = {str(ple)[:60]} must list layer indices 0..{(n_layers or 1) - 1}")
    for key in EPS_KEYS:
        if tc.get(key) is not None:
            v = tc[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and 0 < v < 1):
                raise CheckpointError(f"{where}: {key} = {str(v)[:40]} must be a positive number below 1")
    for key in POSITIVE_FLOAT_KEYS:
        if tc.get(key) is not None:
            v = tc[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
                raise CheckpointError(f"{where}: {key} = {str(v)[:40]} must be a positive number")
    for key in TOKEN_KEYS:
        ids = tc.get(key)
        for tid in ids if isinstance(ids, list) else [ids]:
            if tid is None:
                continue
            if isinstance(tid, bool) or not isinstance(tid, int) or tid < 0 or (vocab is not None and tid >= vocab):
                raise CheckpointError(f"{where}: {key} = {str(tid)[:40]} is not a token id of the vocabulary "
                                      f"(0..{(vocab or 1) - 1})")
    return tc


def check_against_weights(tc: dict, headers: dict[str, dict], where: str) -> None:
    """The config's layer count, embedding size and dtypes against the tensors the shards declare:
    floating weights (``*.weight`` / ``*.bias``; integer buffers such as hash multipliers stay allowed),
    as many stored layers as declared, an embedding the bytes can hold."""
    n_elements = 0
    layers: set[int] = set()
    for name, entry in headers.items():
        if entry.get("dtype") not in FLOAT_DTYPES and name.endswith((".weight", ".bias")):
            raise CheckpointError(f"{where}: tensor {name[:80]} has dtype {str(entry.get('dtype'))[:12]}; "
                                  "model weights must be floating point (F16, BF16, F32, F64)")
        n_elements += math.prod(int(d) for d in entry.get("shape", []))
        m = _LAYER_NAME.search(name)
        if m:
            layers.add(int(m.group(1)))
    declared = next((tc[k] for k in LAYER_KEYS if isinstance(tc.get(k), int)), None)
    if declared is not None and layers and declared != max(layers) + 1:
        raise CheckpointError(f"{where}: config.json declares {declared} layers but the weights hold "
                              f"{max(layers) + 1}; fix num_hidden_layers")
    hidden = next((tc[k] for k in ("hidden_size", "n_embd", "d_model") if isinstance(tc.get(k), int)), None)
    vocab = tc.get("vocab_size")
    if isinstance(hidden, int) and isinstance(vocab, int) and headers and vocab * hidden > n_elements:
        raise CheckpointError(f"{where}: config.json declares a {vocab} x {hidden} embedding, more than the "
                              f"{n_elements:,} weights on disk")
