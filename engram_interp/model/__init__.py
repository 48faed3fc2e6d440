"""The shared hooked model. Where things are computed:

- ``transformer.py``      the model and its blocks (Engram -> attention -> FFN), readout, LogitLens, ablation
- ``engram.py``           the Engram module: memory read, the gate (``Engram.forward``), short conv
- ``hashing.py``          multi-head n-gram hashing, prime table sizes, multipliers (demo-exact)
- ``moe.py``              DeepSeekMoE with sparse dispatch and auxiliary-loss-free balancing
- ``attention.py``        causal attention with RoPE
- ``hyperconnections.py`` mHC multi-branch residual
- ``layers.py``           RMSNorm, embeddings, SwiGLU, rotary tables
"""

from engram_interp.model.transformer import Block, EngramTransformer

__all__ = ["Block", "EngramTransformer"]
