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
