"""Multi-head n-gram hashing, bit-exact with DeepSeek's Engram demo (docs/ENGRAM.md section 3).

Addressing depends only on token ids, so it runs before (and outside) the forward pass:
    canonical ids x (after tokenizer compression)  ->  [batch, pos, (N-1)*K] table rows.
All integer arithmetic is int64 and runs on whatever device the ids live on.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

LAYER_SEED_STRIDE = 10007  # multipliers of layer l use numpy default_rng(seed + 10007 * l)


def is_prime(n: int) -> bool:
    """Deterministic Miller-Rabin for every n < 3.3e24 (plenty for table sizes)."""
    if n < 2:
        return False
    small = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41)
    for p in small:
        if n % p == 0:
            return n == p
    d, s = n - 1, 0
    while d % 2 == 0:
        d //= 2
        s += 1
    for a in small:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def next_unused_prime(start: int, taken: set[int]) -> int:
    """Smallest prime strictly greater than ``start`` that is not in ``taken``."""
    candidate = start + 1
    while not (is_prime(candidate) and candidate not in taken):
        candidate += 1
    return candidate


def table_sizes(
    layer_ids: Sequence[int], max_ngram_size: int, n_head_per_ngram: int, engram_vocab_size: Sequence[int]
) -> list[list[int]]:
    """Prime table size of every (layer, order, head), from ONE global walk.

    Returns one list per layer (in ``layer_ids`` order) of ``(N-1)*K`` primes, order-major.
    For each order the search starts at ``engram_vocab_size[n-2] - 1``; every head takes the next
    prime above the previous one that no earlier head of any layer or order has taken.
    """
    taken: set[int] = set()
    out = []
    for _layer in layer_ids:
        sizes = []
        for n in range(2, max_ngram_size + 1):
            start = int(engram_vocab_size[n - 2]) - 1
            for _head in range(n_head_per_ngram):
                prime = next_unused_prime(start, taken)
                taken.add(prime)
                sizes.append(prime)
                start = prime
        out.append(sizes)
    return out


def layer_multipliers(seed: int, layer_id: int, max_ngram_size: int, compressed_vocab_size: int) -> np.ndarray:
    """The N odd int64 multipliers of one Engram layer (demo-exact)."""
    max_mult = np.iinfo(np.int64).max // int(compressed_vocab_size)
    half = max(1, max_mult // 2)
    rng = np.random.default_rng(int(seed + LAYER_SEED_STRIDE * int(layer_id)))
    return rng.integers(0, half, size=(max_ngram_size,), dtype=np.int64) * 2 + 1


def ngram_hash_ids(
    canonical_ids: torch.Tensor, multipliers: torch.Tensor, primes: torch.Tensor, n_head_per_ngram: int, pad_id: int
) -> torch.Tensor:
    """Hash rows of every suffix n-gram (n = 2..N) and head.

    canonical_ids: [batch, pos] int64 (compressed ids). multipliers: [N] int64. primes: [(N-1)*K] int64.
    pad_id: the CANONICAL pad id that fills positions before the sequence start.
    Returns [batch, pos, (N-1)*K] int64, order-major then head, each in [0, prime).
    """
    x = canonical_ids.long()
    n_max = multipliers.numel()
    batch, pos = x.shape
    padded = torch.nn.functional.pad(x, (n_max - 1, 0), value=int(pad_id))  # [batch, pos + N - 1]
    mults = multipliers.to(x.device)
    mix = x * mults[0]
    per_order = []
    for k in range(1, n_max):
        shifted = padded[:, n_max - 1 - k : n_max - 1 - k + pos]  # x_{t-k}
        mix = torch.bitwise_xor(mix, shifted * mults[k])
        per_order.append(mix.unsqueeze(-1).expand(batch, pos, n_head_per_ngram))
    mixes = torch.cat(per_order, dim=-1)  # [batch, pos, (N-1)*K]
    return torch.remainder(mixes, primes.to(x.device))
