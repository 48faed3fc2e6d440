"""engram-interp: a mechanistic-interpretability workbench for models with Engram conditional memory.

Two lines probe a checkpoint::

    import engram_interp as ei
    model = ei.load("checkpoints/engram.ckpt")
    logits, cache = model.run_with_cache("Alexander the Great")
    cache["blocks.1.engram.hook_gate"]          # [batch, pos, branch]

Hook names are documented in docs/HOOKS.md.
"""

from __future__ import annotations

import os

from engram_interp.config import EngramConfig, ModelConfig, MoEConfig
from engram_interp.errors import CheckpointError, ConfigError, EngramInterpError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

__version__ = "0.1.0"
__all__ = [
    "CheckpointError", "ConfigError", "EngramConfig", "EngramInterpError", "EngramTransformer", "ModelConfig",
    "MoEConfig", "load", "locate", "save", "untrained_twin",
]


def load(path, device=None, dtype=None, allow_nonfinite=False, device_map=None, max_memory=None, offload_folder=None):
    """Load a model (eval mode) behind the one interface (``engram_interp.interface.InterpModel``):
    a ``.ckpt`` file -> ``EngramTransformer``; a Hugging Face folder, a ``.gguf`` file or a known name
    such as ``"smollm2"`` -> the Hugging Face backend (docs/MODELS.md). device: None = CUDA if present.
    dtype: ``"float32"``, ``"bfloat16"``, ``"float16"`` (or a torch dtype); None = a .ckpt as stored,
    a Hugging Face model in its checkpoint's dtype on a GPU and float32 on the CPU.
    device_map (Hugging Face models; instead of ``device``): accelerate's plan ``"auto"``,
    ``"balanced"``, ``"sequential"``, ``"cpu"``, or ``{module name: "cpu" | "disk" | GPU index}`` (or
    a .json file of it); max_memory: ``{"cpu": "64GiB", 0: "70GiB"}`` or ``"cpu=64GiB,0=70GiB"``;
    offload_folder: where weights placed on ``"disk"`` may be written (docs/SCALE.md).
    Weights holding NaN/Inf are refused (every backend) unless ``allow_nonfinite``; a file named with a
    trailing slash (``model.ckpt/``) is refused, as a shell would."""
    from engram_interp.backends import is_foreign, load_foreign
    from engram_interp.backends.placement import placement_of
    from engram_interp.io import refuse_trailing_slash

    refuse_trailing_slash(path)
    placement = placement_of(device_map, max_memory, offload_folder, device)
    if is_foreign(path):
        return load_foreign(path, device=device, dtype=dtype, allow_nonfinite=allow_nonfinite, placement=placement)
    if placement is not None:
        if placement.device_map != "cpu" or placement.max_memory or placement.offload_folder:
            raise CheckpointError(f"{path}: --device-map/--max-memory/--offload-folder place Hugging Face models; a .ckpt "
                                  "loads on one --device (its Engram tables are memory-mapped from the file already)")
        device = "cpu"
    from engram_interp.checkpoint import load as _load

    return _load(path, device=device, dtype=dtype, allow_nonfinite=allow_nonfinite)


def save(model, path, provenance=None, overwrite=False):
    """Save an ``EngramTransformer`` to one .ckpt file (refuses to overwrite unless ``overwrite=True``)."""
    from engram_interp.checkpoint import save as _save

    return _save(model, path, provenance=provenance, overwrite=overwrite)


def untrained_twin(model, seed=0):
    """The untrained twin of a loaded model: same architecture and config, weights re-drawn by the
    architecture's own init under ``seed`` (engram_interp.backends.twin; docs/ANALYSES.md)."""
    from engram_interp.backends.twin import untrained_twin as _twin

    return _twin(model, seed)


def locate(model, prompt, target, contrast=None, **kwargs):
    """Which Engram table rows carry the prediction ``target`` after ``prompt``: each row's direct
    contribution (logits; rows + value bias + short conv = the layer's Engram term of DLA), the effect of
    zeroing / restoring row groups on log p(target), and with ``corpus=texts`` the n-grams sharing each
    row. Returns a ``LocateResult`` (engram_interp.analysis.locate; docs/ATTRIBUTION.md)."""
    from engram_interp.analysis.locate import locate as _locate

    return _locate(model, prompt, target, contrast, **kwargs)


def __getattr__(name):
    if name == "EngramTransformer":
        from engram_interp.model import EngramTransformer

        return EngramTransformer
    raise AttributeError(name)
