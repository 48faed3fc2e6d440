"""Iso-parameter planner (docs/ENGRAM.md section 6): a MoE baseline -> its Engram partner and controls.

A pair changes ONLY ``moe.n_routed_experts`` and the Engram table size. For every candidate number
of routed experts E' < E the planner sizes the tables (one base size b for every order, so
``engram_vocab_size = (b,) * (N-1)``; table sizes are the primes of the global walk above b) so that
P_tot matches the baseline, then keeps the E' whose achieved rho is closest to the target:

    rho = (routed - routed_active) / P_sparse,   P_sparse = P_tot - P_act     (engram_interp.model.params)

Engram's dense projections (W_K, W_V, norms, conv) are active parameters, so the Engram arm has a
slightly larger P_act than the baseline; the table shows it. The Engram-null control is the Engram
arm with ``null_memory=True`` (identical parameters; every hash index reads row 0).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

from engram_interp.config import EngramConfig, ModelConfig
from engram_interp.errors import ConfigError
from engram_interp.model.hashing import table_sizes
from engram_interp.model.params import ParamCounts, count_params

P_TOT_TOLERANCE = 0.005  # |P_tot(engram) / P_tot(moe) - 1| must not exceed this


class PlanError(ConfigError):
    """No Engram partner matches the baseline within the tolerance."""


@dataclass(frozen=True)
class Plan:
    """The paired configs and their parameter accounting."""

    rho_target: float
    configs: dict[str, ModelConfig]  # "moe", "engram", "engram-null"
    counts: dict[str, ParamCounts]

    @property
    def p_tot_error(self) -> float:
        """Relative P_tot mismatch of the Engram arm against the baseline."""
        return self.counts["engram"].P_tot / self.counts["moe"].P_tot - 1.0

    def checkpoint_mb(self, kind: str, bytes_per_param: int = 4) -> float:
        """Size of that arm's weights (P_tot + embedding + unembedding) in MB (1e6 bytes)."""
        c = self.counts[kind]
        return (c.P_tot + c.embedding) * bytes_per_param / 1e6

    def rows(self) -> list[dict]:
        """One dict per arm: the figures of ``table()``."""
        out = []
        for kind, cfg in self.configs.items():
            c = self.counts[kind]
            e = cfg.engram
            out.append({
                "arm": kind,
                "routed_experts": cfg.moe.n_routed_experts,
                "engram_base": None if e is None else e.engram_vocab_size[0],
                "engram_rows": None if e is None else sum(e.rows(l) for l in e.layer_ids),
                "P_tot": c.P_tot, "P_act": c.P_act, "P_sparse": c.P_sparse,
                "rho": c.rho, "engram_params": c.engram, "engram_table": c.engram_table,
                "embedding": c.embedding,
                "ckpt_mb_fp32": round(self.checkpoint_mb(kind, 4), 2),
                "ckpt_mb_bf16": round(self.checkpoint_mb(kind, 2), 2),
            })
        return out

    def table(self) -> str:
        """A plain-text table of every arm (parameters in millions)."""
        head = (f"{'arm':<12} {'experts':>7} {'tbl base':>8} {'rows':>9} {'P_tot':>9} {'P_act':>8} {'P_sparse':>9}"
                f" {'rho':>6} {'engram':>8} {'ckpt MB f32/bf16':>17}")
        lines = [head, "-" * len(head)]
        for r in self.rows():
            lines.append(
                f"{r['arm']:<12} {r['routed_experts']:>7} {r['engram_base'] or '-':>8} {r['engram_rows'] or '-':>9}"
                f" {r['P_tot'] / 1e6:>8.3f}M {r['P_act'] / 1e6:>7.3f}M {r['P_sparse'] / 1e6:>8.3f}M"
                f" {r['rho']:>6.3f} {r['engram_params'] / 1e6:>7.3f}M"
                f" {r['ckpt_mb_fp32']:>8.1f}/{r['ckpt_mb_bf16']:<8.1f}"
            )
        lines.append(f"rho target {self.rho_target:.3f}; P_tot(engram)/P_tot(moe) - 1 = {100 * self.p_tot_error:+.4f}%"
                     " (P_* exclude embedding and LM head)")
        return "\n".join(lines)


def plan_pair(baseline: ModelConfig, engram: EngramConfig, rho: float, compressed_vocab_size: int,
              tolerance: float = P_TOT_TOLERANCE) -> Plan:
    """Plan the Engram partner of a MoE ``baseline``.

    ``engram`` supplies layer_ids, N, K, n_embed_per_ngram and the other switches; its
    ``engram_vocab_size`` and frozen constants are ignored (the planner sizes the tables).
    ``compressed_vocab_size`` is V' of the tokenizer compression (``build_compression(tok).n_canonical``).
    """
    if baseline.moe is None:
        raise PlanError("the baseline must be a MoE model (config.moe is None)")
    if baseline.engram is not None:
        raise PlanError("the baseline must have no Engram (config.engram is set)")
    if not 0.0 < rho < 1.0:
        raise PlanError(f"rho must be in (0, 1), got {rho}")
    baseline = baseline.validate()
    base_counts = count_params(baseline)
    template = dataclasses.replace(engram, compressed_vocab_size=None, multipliers=None, table_sizes=None,
                                   null_memory=False)
    best: tuple[float, ModelConfig, ParamCounts] | None = None
    for n_routed in range(baseline.moe.n_routed_experts - 1, baseline.moe.top_k - 1, -1):
        cfg = dataclasses.replace(baseline, moe=dataclasses.replace(baseline.moe, n_routed_experts=n_routed))
        sized = _size_tables(cfg, template, base_counts.P_tot, compressed_vocab_size)
        if sized is None:
            continue
        cfg, counts = sized
        err = abs(counts.rho - rho)
        if best is None or err < best[0] - 1e-12:
            best = (err, cfg, counts)
    if best is None:
        raise PlanError("no number of routed experts leaves room for Engram tables at this P_tot")
    _, eng_cfg, eng_counts = best
    mismatch = eng_counts.P_tot / base_counts.P_tot - 1.0
    if abs(mismatch) > tolerance:
        raise PlanError(f"best Engram partner misses P_tot by {100 * mismatch:+.3f}% (tolerance {100 * tolerance}%)")
    null_cfg = dataclasses.replace(eng_cfg, engram=dataclasses.replace(eng_cfg.engram, null_memory=True)).validate()
    return Plan(
        rho_target=rho,
        configs={"moe": baseline, "engram": eng_cfg, "engram-null": null_cfg},
        counts={"moe": base_counts, "engram": eng_counts, "engram-null": count_params(null_cfg)},
    )


def _with_base(cfg: ModelConfig, template: EngramConfig, base: int, v_prime: int) -> ModelConfig:
    engram = dataclasses.replace(template, engram_vocab_size=(base,) * template.n_orders).resolved(v_prime)
    return dataclasses.replace(cfg, engram=engram)


@functools.lru_cache(maxsize=4096)
def _total_rows(layer_ids: tuple[int, ...], max_ngram_size: int, n_head_per_ngram: int, base: int) -> int:
    sizes = table_sizes(layer_ids, max_ngram_size, n_head_per_ngram, (base,) * (max_ngram_size - 1))
    return sum(sum(layer) for layer in sizes)


def _size_tables(cfg: ModelConfig, template: EngramConfig, target: int, v_prime: int):
    """(config, counts) whose P_tot is closest to ``target``, or None if even the smallest table overshoots.

    P_tot = (everything but the tables) + d_head * rows(b), and rows(b) is non-decreasing in the base
    size b (the first (N-1)*K*L unused primes above b-1), so a bisection finds the crossing; the
    closer of its two neighbours wins. The result is re-counted with ``count_params``.
    """
    t = template
    rest = count_params(_with_base(cfg, t, 2, v_prime)).P_tot - t.d_head * _total_rows(
        t.layer_ids, t.max_ngram_size, t.n_head_per_ngram, 2)

    def p_tot(base: int) -> int:
        return rest + t.d_head * _total_rows(t.layer_ids, t.max_ngram_size, t.n_head_per_ngram, base)

    lo = 2
    if p_tot(lo) > target:
        return None
    hi = 4
    while p_tot(hi) < target:
        hi *= 2
    while hi - lo > 1:  # invariant: p_tot(lo) <= target <= p_tot(hi)
        mid = (lo + hi) // 2
        if p_tot(mid) <= target:
            lo = mid
        else:
            hi = mid
    base = min((lo, hi), key=lambda b: abs(p_tot(b) - target))
    sized = _with_base(cfg, t, base, v_prime).validate()
    counts = count_params(sized)
    assert counts.P_tot == p_tot(base), "table accounting drifted from engram_interp.model.params"
    return sized, counts


def changed_fields(a: ModelConfig, b: ModelConfig, prefix: str = "") -> list[str]:
    """Dotted names of every config field that differs between ``a`` and ``b`` (nested configs expanded)."""
    out = []
    for f in dataclasses.fields(a):
        va, vb = getattr(a, f.name), getattr(b, f.name)
        if dataclasses.is_dataclass(va) and dataclasses.is_dataclass(vb):
            out += changed_fields(va, vb, f"{prefix}{f.name}.")
        elif va != vb:
            out.append(prefix + f.name)
    return out
