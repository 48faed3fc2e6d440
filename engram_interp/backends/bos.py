"""Which BOS a Hugging Face model gets by default: the one TransformerLens 4.3's ``TransformerBridge`` gives it.

The bridge prepends a BOS to every text unless the architecture's adapter turns that off
(``cfg.default_prepend_bos = False``: the Qwen, Phi, GPT-NeoX, ... families, listed below as TL 4.3's
adapters set it, their base classes included; tests/test_tl_conventions.py checks the list against TL's
source). The token is the one the tokenizer itself prepends if it prepends one, else its ``bos_token``,
else its ``eos_token`` (TL sets ``bos_token = eos_token`` when there is none). So SmolLM2 (a Llama whose
tokenizer adds nothing) gets ``<|im_start|>``, as in TL. Architectures TL does not cover (Qwen4-Exp) keep
what their tokenizer does.
"""

from __future__ import annotations

# TL 4.3 adapters with default_prepend_bos = False (directly, through a base adapter or prepend_bos = False)
TL_NO_DEFAULT_BOS = frozenset({
    "AudioFlamingo3ForConditionalGeneration", "BloomForCausalLM", "BloomModel", "DreamModel", "Ernie4_5ForCausalLM",
    "Ernie4_5_MoeForCausalLM", "Exaone4ForCausalLM", "ExaoneForCausalLM", "GPTNeoXForCausalLM", "Glm4ForCausalLM",
    "Glm4MoeForCausalLM", "Glm4MoeLiteForCausalLM", "GlmMoeDsaForCausalLM", "Glm4vForConditionalGeneration", "GlmAsrForConditionalGeneration", "GlmForCausalLM",
    "GraniteForCausalLM", "GraniteMoeForCausalLM", "GraniteMoeHybridForCausalLM", "LLaDAModelLM", "MPTForCausalLM",
    "MiniMaxM2ForCausalLM", "MptForCausalLM", "MusicFlamingoForConditionalGeneration", "NeoXForCausalLM",
    "PhiForCausalLM", "PhiMoEForCausalLM", "Qwen2AudioForConditionalGeneration", "Qwen2ForCausalLM",
    "Qwen2MoeForCausalLM", "Qwen2_5_VLForConditionalGeneration", "Qwen3ForCausalLM", "Qwen3MoeForCausalLM",
    "Qwen3NextForCausalLM", "Qwen3VLForConditionalGeneration", "Qwen3VLMoeForConditionalGeneration",
    "Qwen3_5ForCausalLM", "Qwen3_5ForConditionalGeneration", "Qwen3_5MoeForCausalLM",
    "Qwen3_5MoeForConditionalGeneration", "RecurrentGemmaForCausalLM", "SeedOssForCausalLM", "SmolLM3ForCausalLM",
    "Starcoder2ForCausalLM",
})

# architectures we open that TL 4.3's bridge does not cover: their tokenizer decides
TL_UNCOVERED = frozenset({"Qwen4ExpForCausalLM"})


def tokenizer_bos(tok) -> int | None:
    """The id the ``tokenizers.Tokenizer`` prepends to a text itself, or None when it adds nothing in front."""
    plain = tok.encode("a", add_special_tokens=False).ids
    special = tok.encode("a", add_special_tokens=True).ids
    if len(special) > len(plain) and special[1:1 + len(plain)] == plain:
        return int(special[0])
    return None


def tl_bos(architecture: str, tok, hf_tok) -> tuple[int | None, int | None]:
    """``(default, forced)`` for a model of ``architecture`` (``LlamaForCausalLM``, ...) with the
    ``tokenizers.Tokenizer`` ``tok`` and transformers tokenizer ``hf_tok``: the BOS ``to_tokens``
    prepends by default (None: none), and the one ``prepend_bos=True`` prepends."""
    own = tokenizer_bos(tok)
    forced = own
    for tid in (own, getattr(hf_tok, "bos_token_id", None), getattr(hf_tok, "eos_token_id", None)):
        if tid is not None:
            forced = int(tid)
            break
    if architecture in TL_UNCOVERED:
        return own, forced
    return (None if architecture in TL_NO_DEFAULT_BOS else forced), forced
