"""The table of docs/MODELS.md, "What each architecture provides", generated from the code: every
architecture we open is built tiny (random weights, the configs of ``engram_interp.backends.testing``)
and asked for its hook names, which are grouped into families (``blocks.{l}.engram.*`` ...).

``python -m engram_interp.backends.catalog`` prints the table; tests/test_models_catalog.py checks that
the page holds exactly what this prints, so the page cannot drift from the code.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

# (architecture, how it is opened, tiny builder key)
ROWS = (
    ("EngramTransformer (engram / moe / engram-null / dense)", "`.ckpt`", "ours"),
    ("LlamaForCausalLM", "HF folder, GGUF", "LlamaConfig"),
    ("MistralForCausalLM", "HF folder, GGUF", "MistralConfig"),
    ("Qwen2ForCausalLM", "HF folder, GGUF", "Qwen2Config"),
    ("Qwen3ForCausalLM", "HF folder, GGUF", "Qwen3Config"),
    ("Qwen4ExpForCausalLM", "HF folder", "qwen4_exp"),
    ("MixtralForCausalLM", "HF folder", "mixtral"),
    ("Qwen2MoeForCausalLM", "HF folder", "qwen2_moe"),
    ("Qwen3MoeForCausalLM", "HF folder", "qwen3_moe"),
    ("OlmoeForCausalLM", "HF folder", "olmoe"),
    ("DeepseekV3ForCausalLM", "HF folder", "deepseek_v3"),
    # run by TransformerLens's TransformerBridge (backends/bridge.py)
    ("GPT2LMHeadModel", "HF folder, TL bridge", "gpt2"),
    ("GPTNeoXForCausalLM", "HF folder, TL bridge", "gpt_neox"),
    ("Gemma2ForCausalLM", "HF folder, TL bridge", "gemma2"),
    ("Gemma3ForCausalLM", "HF folder, TL bridge", "gemma3_text"),
    ("Phi3ForCausalLM", "HF folder, TL bridge", "phi3"),
    ("Olmo2ForCausalLM", "HF folder, TL bridge", "olmo2"),
)
FAMILIES = (  # (label, pattern over hook names)
    ("residual", r"^blocks\.\d+\.hook_resid_(pre|post)$"),
    ("resid_mid", r"^blocks\.\d+\.hook_resid_mid$"),
    ("attn / mlp out", r"^blocks\.\d+\.hook_(attn|mlp)_out$"),
    ("attention internals", r"^blocks\.\d+\.attn\.hook_(?!z$)"),
    ("per-head z", r"^blocks\.\d+\.attn\.hook_z$"),
    ("norm scales", r"(^|\.)ln(1|2|_final)\.hook_scale$"),
    ("Engram", r"^blocks\.\d+\.engram\.hook_"),
    ("MoE routing", r"^blocks\.\d+\.mlp\.hook_(router_scores|expert_ids|expert_weights)$"),
    ("per-expert out", r"^blocks\.\d+\.mlp\.hook_expert_out$"),
    ("mHC streams", r"^blocks\.\d+\.hc_(attn|mlp)\.hook_"),
    ("readout", r"^hook_readout$"),
)


def _model(key: str, folder: Path):
    import engram_interp as ei
    from engram_interp.backends import testing as t

    if key == "ours":
        from engram_interp.testing import tiny_model

        return tiny_model("engram")
    if key == "qwen4_exp":
        return ei.load(t.tiny_qwen4_exp_folder(folder / key), device="cpu")
    if key in t.BRIDGE_FAMILIES:
        return ei.load(t.tiny_bridge_folder(key, folder / key), device="cpu")
    if key in t.MOE_FAMILIES:
        return ei.load(t.tiny_moe_folder(key, folder / key), device="cpu")
    import transformers

    cfg = getattr(transformers, key)(**{**t._TINY, "intermediate_size": 48, "head_dim": 8})
    return ei.load(t.save_hf_folder(t.random_hf_model(cfg), folder / key), device="cpu")


def hook_families(model) -> list[str]:
    """The FAMILIES labels ``model`` provides at least one hook of (in FAMILIES order)."""
    names = list(model.hook_names())
    return [label for label, pattern in FAMILIES if any(re.search(pattern, n) for n in names)]


def table() -> str:
    """The markdown table: architecture, how it opens, and a mark per hook family."""
    head = "| architecture | opens from | " + " | ".join(label for label, _ in FAMILIES) + " |"
    lines = [head, "|" + "---|" * (len(FAMILIES) + 2)]
    with tempfile.TemporaryDirectory() as tmp:
        for arch, how, key in ROWS:
            have = set(hook_families(_model(key, Path(tmp))))
            lines.append(f"| {arch} | {how} | " + " | ".join("yes" if label in have else "-" for label, _ in FAMILIES) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
