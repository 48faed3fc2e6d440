"""Small random models with a real (tiny) BPE tokenizer, for tests, docs and notebooks."""

from __future__ import annotations

import functools

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from engram_interp.config import EngramConfig, MoEConfig, ModelConfig

SPECIAL_TOKENS = ["<|bos|>", "<|eos|>", "<|pad|>"]  # ids 0, 1, 2 (Engram's pad_id = 2)

_TEXT = (
    "Alexander the Great was a king of Macedon. The Milky Way is a galaxy. By the way, the Princess of Wales "
    "visited London. The capital of France is Paris. The capital of Italy is Rome. THE CAPITAL OF SPAIN IS MADRID. "
    "Water boils at one hundred degrees. It was the best of times, it was the worst of times. "
    "Café, cafe and CAFE are written differently but mean the same. New York, new york, New  York.\n"
    "Once upon a time there lived a fox who loved grapes; the grapes were sour, said the fox. "
)


@functools.lru_cache(maxsize=4)
def _tiny_tokenizer_json(vocab_size: int) -> str:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_TEXT] * 4, trainer=trainer)
    return tok.to_str()


def tiny_tokenizer(vocab_size: int = 400) -> Tokenizer:
    """A cased byte-level BPE trained on a paragraph: ids 0/1/2 are <|bos|>/<|eos|>/<|pad|>."""
    return Tokenizer.from_str(_tiny_tokenizer_json(vocab_size))


def tiny_config(kind: str = "engram", vocab_size: int = 400) -> ModelConfig:
    """kind: 'dense', 'moe', 'engram', 'engram-null' or 'mhc' (Engram on a 4-branch mHC backbone)."""
    if kind not in {"dense", "moe", "engram", "engram-null", "mhc"}:
        raise ValueError(f"unknown tiny model kind {kind!r}")
    moe = None if kind == "dense" else MoEConfig(n_shared_experts=1, n_routed_experts=6, top_k=2, d_expert=32)
    engram = None
    if kind in {"engram", "engram-null", "mhc"}:
        engram = EngramConfig(
            layer_ids=(1, 2), max_ngram_size=3, n_head_per_ngram=4, n_embed_per_ngram=32,
            engram_vocab_size=(257, 263), null_memory=kind == "engram-null",
        )
    return ModelConfig(
        vocab_size=vocab_size, d_model=64, n_layers=4, n_heads=4, d_ffn=128, max_seq_len=256,
        n_branches=4 if kind == "mhc" else 1, moe=moe, engram=engram,
    )


def tiny_model(kind: str = "engram", seed: int = 0):
    """A random EngramTransformer of the given kind with a tiny tokenizer and its compression."""
    from engram_interp.model import EngramTransformer
    from engram_interp.tokenizer import build_compression

    tok = tiny_tokenizer()
    torch.manual_seed(seed)
    model = EngramTransformer(tiny_config(kind, tok.get_vocab_size()), tokenizer=tok, compression=build_compression(tok))
    if model.cfg.engram is not None:  # random Engram weights that matter: the conv starts at 0 otherwise
        with torch.no_grad():
            for layer in model.engram_layers:
                engram = model.blocks[layer].engram
                if engram.use_conv:
                    engram.conv.weight.normal_(std=0.2)
                engram.memory.weight.normal_(std=1.0)
    return model.eval()
