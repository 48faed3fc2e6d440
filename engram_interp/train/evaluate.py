"""Validation loss of a model on fixed windows per source (nats/token), shared by training and the model card."""

from __future__ import annotations

import numpy as np
import torch


@torch.no_grad()
def val_loss(model, val: dict[str, np.ndarray], batch_size: int, device: torch.device,
             amp_dtype: torch.dtype | None = None) -> dict[str, float]:
    """Mean next-token loss (nats/token) per source over ``val[source]`` windows ``[n, seq_len]``
    (``engram_interp.train.data.val_windows``), in batches of ``batch_size``, autocast to ``amp_dtype``."""
    was_training = model.training
    model.eval()
    out = {}
    for src, windows in val.items():
        total = 0.0
        for i in range(0, len(windows), batch_size):
            x = torch.from_numpy(windows[i : i + batch_size]).to(device)
            with torch.autocast(device_type=device.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
                total += float(model(x, return_type="loss").float()) * x.shape[0]
        out[src] = total / len(windows)
    model.train(was_training)
    return out
