"""Tiny random Hugging Face models saved as real folders (config.json, safetensors, tokenizer.json),
built offline from configs: for tests, benchmarks and docs. Nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import processors

from engram_interp.testing import tiny_tokenizer


def _hf_tokenizer(add_bos: bool):
    from transformers import PreTrainedTokenizerFast

    tok = tiny_tokenizer()
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(single="<|bos|> $A", pair="<|bos|> $A $B",
                                                           special_tokens=[("<|bos|>", 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|bos|>", eos_token="<|eos|>", pad_token="<|pad|>")


def llama_config(**overrides):
    """A 2-layer LlamaConfig (d=32, 4 heads, 2 KV heads) over the 400-token tiny tokenizer."""
    from transformers import LlamaConfig

    kw = dict(vocab_size=400, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=128, bos_token_id=0, eos_token_id=1, pad_token_id=2,
              tie_word_embeddings=False, rms_norm_eps=1e-5)
    kw.update(overrides)
    return LlamaConfig(**kw)


def qwen4_exp_config(**overrides):
    """A 4-layer Qwen4-Exp (GatedDeltaNet + one indexed-attention layer, MoE, hc_count=2 streams) with
    PLE at 1-indexed layers 1 and 3 (0-indexed 0 and 2), small prime n-gram tables."""
    from transformers.models.qwen4_exp.configuration_qwen4_exp import Qwen4ExpTextConfig

    kw = dict(vocab_size=400, hidden_size=32, num_hidden_layers=4, num_attention_heads=2, num_key_value_heads=1,
              head_dim=16, linear_key_head_dim=8, linear_value_head_dim=8, linear_num_key_heads=2,
              linear_num_value_heads=4, moe_intermediate_size=16, shared_expert_intermediate_size=16,
              num_experts=4, num_experts_per_tok=2, hc_count=2, hc_lowrank=8, ple_layer_ids=[1, 3],
              ple_embed_dim=16, ngram_size=3, heads_per_ngram=2, ngram_vocab_size_base=97,
              make_ngram_vocab_size_divisible_by=8, indexer_n_heads=2, indexer_kv_heads=1, indexer_head_dim=16,
              indexer_budget=8, indexer_compress_ratio=4, max_position_embeddings=128, bos_token_id=0, eos_token_id=1,
              pad_token_id=2, tie_word_embeddings=False)
    kw.update(overrides)
    return Qwen4ExpTextConfig(**kw)


_TINY = dict(vocab_size=400, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
             max_position_embeddings=128, bos_token_id=0, eos_token_id=1, pad_token_id=2, tie_word_embeddings=False)
# The MoE families we open, each as (config class, the sizes that make it tiny: 4 experts, 2 per token).
MOE_FAMILIES = {
    "mixtral": ("MixtralConfig", dict(intermediate_size=48, num_local_experts=4, num_experts_per_tok=2)),
    "qwen2_moe": ("Qwen2MoeConfig", dict(intermediate_size=48, moe_intermediate_size=24, num_experts=4,
                                         num_experts_per_tok=2, shared_expert_intermediate_size=24,
                                         decoder_sparse_step=1, mlp_only_layers=[0])),
    "qwen3_moe": ("Qwen3MoeConfig", dict(intermediate_size=48, moe_intermediate_size=24, num_experts=4,
                                         num_experts_per_tok=2, head_dim=8, decoder_sparse_step=1, norm_topk_prob=True)),
    "olmoe": ("OlmoeConfig", dict(intermediate_size=24, num_experts=4, num_experts_per_tok=2)),
    "deepseek_v3": ("DeepseekV3Config", dict(intermediate_size=48, moe_intermediate_size=24, n_routed_experts=4,
                                             num_experts_per_tok=2, n_shared_experts=1, n_group=2, topk_group=1,
                                             first_k_dense_replace=1, q_lora_rank=16, kv_lora_rank=16,
                                             qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8,
                                             num_key_value_heads=4, routed_scaling_factor=1.5)),
}


# The families opened through TransformerLens's bridge (backends/bridge.py), as (config class, tiny sizes):
# 3 layers, d=32, 4 heads over the tiny tokenizer; Gemma 3 with final logit soft-capping switched on.
_NAMED = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, max_position_embeddings=128)
_GQA = dict(intermediate_size=64, num_key_value_heads=2)
BRIDGE_FAMILIES = {
    "gpt2": ("GPT2Config", dict(n_embd=32, n_layer=3, n_head=4, n_positions=128)),
    "gpt_neox": ("GPTNeoXConfig", dict(**_NAMED, intermediate_size=64)),
    "gemma2": ("Gemma2Config", dict(**_NAMED, **_GQA, head_dim=8)),
    "gemma3_text": ("Gemma3TextConfig", dict(**_NAMED, **_GQA, head_dim=8, final_logit_softcapping=30.0)),
    "phi3": ("Phi3Config", dict(**_NAMED, **_GQA)),
    "olmo2": ("Olmo2Config", dict(**_NAMED, **_GQA)),
}


def bridge_config(family: str, **overrides):
    """A 3-layer config of one of ``BRIDGE_FAMILIES`` (d=32, 4 heads) over the tiny tokenizer."""
    import transformers

    cls, sizes = BRIDGE_FAMILIES[family]
    base = dict(vocab_size=400, bos_token_id=0, eos_token_id=1, pad_token_id=2, tie_word_embeddings=False)
    return getattr(transformers, cls)(**{**base, **sizes, **overrides})


def tiny_bridge_folder(family: str, folder: str | Path, seed: int = 0, **overrides) -> Path:
    """A saved random tiny folder of ``family`` (BOS-prepending tokenizer), opened through the bridge."""
    return save_hf_folder(random_hf_model(bridge_config(family, **overrides), seed), folder, add_bos=True)


def moe_config(family: str, **overrides):
    """A 3-layer config of one of ``MOE_FAMILIES`` (d=32, 4 routed experts, 2 per token) over the tiny tokenizer."""
    import transformers

    cls, sizes = MOE_FAMILIES[family]
    return getattr(transformers, cls)(**{**_TINY, **sizes, **overrides})


def tiny_moe_folder(family: str, folder: str | Path, seed: int = 0, **overrides) -> Path:
    """A saved random tiny MoE folder of ``family`` (BOS-prepending tokenizer)."""
    return save_hf_folder(random_hf_model(moe_config(family, **overrides), seed), folder, add_bos=True)


def random_hf_model(config, seed: int = 0, scale: float = 0.5):
    """The ``*ForCausalLM`` of ``config`` with random weights (eval, float32). Every parameter (norm
    gains and the zero-initialised PLE conv included) is perturbed by ``scale`` x N(0, 1) x its std,
    so that no hook value is trivially 0 or 1."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for p in model.parameters():
            if p.is_floating_point():
                p.add_(torch.randn_like(p) * scale * max(float(p.std()) if p.numel() > 1 else 0.0, 0.05))
    return model.eval()


def save_hf_folder(model, folder: str | Path, add_bos: bool = True, max_shard_size: str | None = None) -> Path:
    """Save ``model`` and the tiny tokenizer as a Hugging Face folder (safetensors); returns the folder."""
    folder = Path(folder)
    kw = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(folder, **kw)
    _hf_tokenizer(add_bos).save_pretrained(folder)
    return folder


def tiny_llama_folder(folder: str | Path, seed: int = 0, **overrides) -> Path:
    """A saved random tiny Llama folder (BOS-prepending tokenizer)."""
    return save_hf_folder(random_hf_model(llama_config(**overrides), seed), folder, add_bos=True)


def tiny_qwen4_exp_folder(folder: str | Path, seed: int = 0, **overrides) -> Path:
    """A saved random tiny Qwen4-Exp folder with two PLE layers (no BOS, as Qwen tokenizers)."""
    return save_hf_folder(random_hf_model(qwen4_exp_config(**overrides), seed), folder, add_bos=False)


def write_llama_gguf(folder: str | Path, path: str | Path) -> Path:
    """Write the Llama of a saved folder (float32 tensors, its byte-level BPE tokenizer) as a GGUF file
    with the ``gguf`` package, in llama.cpp's layout (Q/K rows permuted for its RoPE); returns ``path``."""
    import json

    import gguf
    import numpy as np
    from safetensors.torch import load_file

    folder, path = Path(folder), Path(path)
    cfg = json.loads((folder / "config.json").read_text())
    tok = json.loads((folder / "tokenizer.json").read_text())
    state = {k: v.float().numpy() for k, v in load_file(str(folder / "model.safetensors")).items()}
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]

    def permute(w: np.ndarray, heads: int) -> np.ndarray:
        return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(cfg["max_position_embeddings"])
    writer.add_embedding_length(cfg["hidden_size"])
    writer.add_block_count(cfg["num_hidden_layers"])
    writer.add_feed_forward_length(cfg["intermediate_size"])
    writer.add_head_count(nh)
    writer.add_head_count_kv(nkv)
    writer.add_rope_dimension_count(cfg["hidden_size"] // nh)
    writer.add_rope_freq_base(float((cfg.get("rope_parameters") or {}).get("rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    writer.add_vocab_size(cfg["vocab_size"])
    vocab = sorted(tok["model"]["vocab"].items(), key=lambda kv: kv[1])
    special = {t["content"] for t in tok.get("added_tokens", []) if t.get("special")}
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([t for t, _ in vocab])
    writer.add_token_types([3 if t in special else 1 for t, _ in vocab])
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]])
    writer.add_bos_token_id(cfg["bos_token_id"])
    writer.add_eos_token_id(cfg["eos_token_id"])
    writer.add_pad_token_id(cfg["pad_token_id"])
    writer.add_add_bos_token(True)
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    parts = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    for name, w in state.items():
        if name in names:
            writer.add_tensor(names[name], w)
            continue
        layer, part = name.split(".")[2], ".".join(name.split(".")[3:-1])
        if part == "self_attn.q_proj":
            w = permute(w, nh)
        elif part == "self_attn.k_proj":
            w = permute(w, nkv)
        writer.add_tensor(f"blk.{layer}.{parts[part]}.weight", np.ascontiguousarray(w))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def sparse_qwen4_exp_folder(folder: str | Path, table_mib: float, ple_embed_dim: int = 256, seed: int = 0) -> dict:
    """A Qwen4-Exp folder like :func:`tiny_qwen4_exp_folder` whose two PLE tables hold about
    ``table_mib`` MiB together (float32; written as a sparse file: the table bytes are zeros that
    take no disk and no memory to write). Every other weight is random; returns ``{"folder",
    "table_bytes", "rows"}``. The tables' shapes follow from ``ngram_vocab_size_base``, the only
    setting that changes, so the small model's other weights fit the big config."""
    import json
    import struct

    folder = Path(folder)
    heads = 2 * 2  # (ngram_size - 1) x heads_per_ngram of qwen4_exp_config
    dim = ple_embed_dim // heads
    base = max(97, int(table_mib * 2**20) // (4 * dim * heads * 2))
    kw = dict(ple_embed_dim=ple_embed_dim, max_position_embeddings=4096)  # room for a 2,048-token forward
    small = random_hf_model(qwen4_exp_config(**kw), seed)
    big = qwen4_exp_config(**kw, ngram_vocab_size_base=base)
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in AutoModelForCausalLM.from_config(big).state_dict().items()}
    state = {k: v.contiguous() for k, v in small.state_dict().items() if k in shapes}
    tables = sorted(k for k in shapes if k.endswith("ngram_embedding.weight"))
    header, offset = {}, 0
    for name in [k for k in sorted(state) if k not in tables] + tables:
        shape = shapes[name]
        n = int(torch.tensor(shape).prod()) * 4
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    header["__metadata__"] = {"format": "pt"}
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for name in header:
            if name in state:
                f.write(state[name].to(torch.float32).numpy().tobytes())
        f.truncate(8 + len(raw) + offset)  # the tables: a hole of zeros
    small.config.ngram_vocab_size_base, small.config.architectures = base, [type(small).__name__]
    small.config.save_pretrained(folder)
    _hf_tokenizer(False).save_pretrained(folder)
    return {"folder": folder, "table_bytes": sum(header[k]["data_offsets"][1] - header[k]["data_offsets"][0] for k in tables),
            "rows": sum(shapes[k][0] for k in tables)}
