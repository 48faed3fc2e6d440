"""Bootstrap helpers shared by the analyses: item-resampled means and percentile intervals."""

from __future__ import annotations

import torch

__all__ = ["mean_replicates", "percentile_ci"]


def mean_replicates(values: torch.Tensor, n_boot: int, seed: int) -> torch.Tensor:
    """Means of ``n_boot`` resamples (with replacement, seeded) of the items along the first dim of
    ``values`` ``[n, ...]`` -> ``[n_boot, ...]``."""
    n = values.shape[0]
    idx = torch.randint(0, n, (n_boot, n), generator=torch.Generator().manual_seed(seed))
    return values[idx].mean(1)


def percentile_ci(samples: torch.Tensor, level: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Percentile interval over the first dim of ``samples`` (NaN replicates ignored)."""
    lo_q, hi_q = (1 - level) / 2, 1 - (1 - level) / 2
    return torch.nanquantile(samples, lo_q, dim=0), torch.nanquantile(samples, hi_q, dim=0)
