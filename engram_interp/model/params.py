"""Parameter accounting of docs/ENGRAM.md section 6, computed from the config alone (no tables built).

P_tot    all trainable parameters except the token embedding and the LM head
P_act    parameters used per token: everything dense, top_k of the routed experts, and the
         (N-1)*K table rows each Engram layer reads
P_sparse P_tot - P_act
rho      share of P_sparse held by routed experts (the rest is Engram table rows); 1 = pure MoE
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from engram_interp.config import ModelConfig


@dataclass(frozen=True)
class ParamCounts:
    P_tot: int
    P_act: int
    P_sparse: int
    engram: int  # every Engram parameter: tables + projections + norms + conv
    engram_table: int  # table rows * head width only
    routed: int  # all routed-expert parameters
    embedding: int  # W_E + W_U (excluded from P_tot)
    rho: float | None  # None when P_sparse == 0 (a dense model)

    def to_dict(self) -> dict:
        return asdict(self)


def _engram_dense_params(cfg: ModelConfig) -> int:
    e, d, m = cfg.engram, cfg.d_model, cfg.n_branches
    bias = d if e.proj_bias else 0
    n = (e.d_mem * d + bias) * (1 + m)  # W_V and one W_K per branch
    n += 2 * m * d  # key and query norms per branch
    if e.use_conv:
        n += m * d * e.kernel_size + m * d  # depthwise conv + its norm per branch
    return n


def count_params(cfg: ModelConfig) -> ParamCounts:
    """Analytic counts; ``cfg.engram`` must be resolved (table sizes frozen) when present."""
    d, m = cfg.d_model, cfg.n_branches
    dense = 0
    routed = routed_active = 0
    for layer in range(cfg.n_layers):
        dense += 4 * d * d + 2 * d  # attention + two norms
        if cfg.is_moe_layer(layer):
            moe = cfg.moe
            dense += 3 * d * moe.d_expert * moe.n_shared_experts + moe.n_routed_experts * d  # shared + router
            routed += 3 * d * moe.d_expert * moe.n_routed_experts
            routed_active += 3 * d * moe.d_expert * moe.top_k
        else:
            dense += 3 * d * cfg.d_ffn
        if m > 1:
            dense += 2 * (m * d + m * d * (2 * m + m * m) + 3 + 2 * m + m * m)  # two hyper-connections
    dense += d + (m if m > 1 else 0)  # final norm, readout weights
    table = table_active = engram_dense = 0
    if cfg.engram is not None:
        e = cfg.engram
        for layer in e.layer_ids:
            table += e.rows(layer) * e.d_head
            table_active += e.d_mem
            engram_dense += _engram_dense_params(cfg)
    p_tot = dense + routed + table + engram_dense
    p_act = dense + routed_active + table_active + engram_dense
    p_sparse = p_tot - p_act
    return ParamCounts(
        P_tot=p_tot,
        P_act=p_act,
        P_sparse=p_sparse,
        engram=table + engram_dense,
        engram_table=table,
        routed=routed,
        embedding=2 * cfg.vocab_size * d,
        rho=(routed - routed_active) / p_sparse if p_sparse else None,
    )
