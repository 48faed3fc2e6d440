"""The untrained twin: the same architecture and config as a loaded model, weights drawn afresh
from a seeded random init. The model-randomisation sanity check (Adebayo et al. 2018): whatever an
analysis says of the twin it says by construction, not because the model learned it.

Works for our ``.ckpt`` models (an ``EngramTransformer`` built from the same config, tokenizer and
compression, with its own init) and for Hugging Face folders and GGUF files (``from_config`` of the
same config under the seed, wrapped by the same backend)."""

from __future__ import annotations

import torch

from engram_interp.errors import EngramInterpError

__all__ = ["untrained_twin", "TWIN_SUFFIX"]

TWIN_SUFFIX = "~twin"  # appended to a model's name in tables and JSON


def untrained_twin(model, seed: int = 0):
    """A freshly initialised model of the same architecture as ``model`` (eval mode, no gradients, on
    the same device and dtype), its weights drawn with ``torch.manual_seed(seed)`` by the
    architecture's own init. Raises EngramInterpError for a model kind it cannot rebuild."""
    from engram_interp.backends.huggingface import HFModel
    from engram_interp.model import EngramTransformer

    param = next(model.parameters(), None)
    device = model.device if hasattr(model, "device") else (param.device if param is not None else "cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        if isinstance(model, EngramTransformer):
            twin = EngramTransformer(model.cfg, tokenizer=model.tokenizer, compression=model.compression)
        elif isinstance(model, HFModel):
            from transformers import AutoModelForCausalLM

            hf = AutoModelForCausalLM.from_config(model.hf.config, dtype=dtype)
            twin = HFModel(hf, model.tokenizer, model.info.bos_token_id, model.info.pad_token_id,
                           source=model.info.source + TWIN_SUFFIX, forced_bos_token_id=model.info.forced_bos_token_id,
                           eos_token_id=model.info.eos_token_id)
        else:
            raise EngramInterpError(f"no untrained twin for a {type(model).__name__}")
    finally:
        torch.random.set_rng_state(state)
    return twin.to(device=device, dtype=dtype).eval().requires_grad_(False)
