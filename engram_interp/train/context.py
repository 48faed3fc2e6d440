"""What every step of a training run shares: the recipe, the plan, the device, the token stream and
the validation windows (built once by ``engram_interp.train.loop.prepare``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from engram_interp.train.data import TokenStream
from engram_interp.train.planner import Plan
from engram_interp.train.recipe import ArmSpec, Recipe


@dataclass
class Context:
    """Everything the arms of one recipe share."""

    recipe: Recipe
    tokenizer: Any  # tokenizers.Tokenizer
    compression: Any  # engram_interp.tokenizer.Compression
    plan: Plan
    stream: TokenStream
    val: dict[str, np.ndarray]  # source -> [n, seq_len] fixed windows
    meta: dict[str, Any]
    device: torch.device
    compile: bool
    amp_dtype: torch.dtype | None
    _streams: dict[int, TokenStream] = field(default_factory=dict)

    def stream_for(self, arm: ArmSpec) -> TokenStream:
        """The batches of ``arm``: the same file as ``stream``, in the order of ``arm.data_seed``."""
        if arm.data_seed == self.stream.seed:
            return self.stream
        if arm.data_seed not in self._streams:
            s = self.stream
            self._streams[arm.data_seed] = TokenStream(s.path, s.seq_len, s.batch_size, arm.data_seed)
        return self._streams[arm.data_seed]
