"""The one set of default analysis settings shared by the CLI, the report, the app and
checkpoints/measure.sh, so that their figures agree: corpus tokens per analysis, corpus positions
hashed for the memory tables, items per task suite, seed.

``python -m engram_interp.defaults`` prints them as shell assignments (``TOKENS=4000`` ...), which
``checkpoints/measure.sh`` and ``scripts/quickstart.sh`` read.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Defaults:
    """``tokens``: corpus tokens per analysis (LogitLens, CKA, gates; BOS and padding not counted);
    ``memory_tokens``: corpus positions hashed for the memory tables (``memory``, the report's memory
    section, the app's Memory page, ``locate``'s row-mates; the number checkpoints/README.md's memory
    finding is measured on: more positions saturate the bundled tables' smallest heads);
    ``items``: items per task suite (a seeded subsample); ``seed``: subsampling, shuffling and
    bootstrap seed. Sized so the report on the bundled pair runs in under a minute on 2 CPU cores.
    ``permutations``: label shuffles of a permutation test (p resolves ``1 / (permutations + 1)``);
    ``alpha``: its level; ``min_ngrams``: n-grams (seen >= min_count times) a gate-selectivity
    statement needs; ``gate_tokens``: corpus tokens of the gate statistics (about 50 3-grams reach
    3 occurrences only after ~20,000 tokens of prose; the gates cost one forward pass per token)."""

    tokens: int = 4000
    memory_tokens: int = 4000
    items: int = 50
    seed: int = 0
    permutations: int = 999
    alpha: float = 0.05
    min_ngrams: int = 50
    gate_tokens: int = 20000


DEFAULTS = Defaults()


def shell_assignments(d: Defaults = DEFAULTS) -> str:
    """``TOKENS=.. MEMORY_TOKENS=.. ITEMS=.. SEED=..`` on one line (for ``eval`` in shell scripts)."""
    return f"TOKENS={d.tokens} MEMORY_TOKENS={d.memory_tokens} ITEMS={d.items} SEED={d.seed}"


if __name__ == "__main__":
    print(shell_assignments())
