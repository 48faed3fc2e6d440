"""Config validation, JSON round trip, and parameter accounting against real parameter counts."""

import dataclasses

import pytest

from engram_interp.config import EngramConfig, ModelConfig, MoEConfig
from engram_interp.errors import ConfigError
from engram_interp.model.params import count_params
from engram_interp.testing import tiny_model


def test_json_round_trip_keeps_frozen_hashing_constants():
    cfg = tiny_model("mhc").cfg
    assert cfg.engram.multipliers is not None and cfg.engram.table_sizes is not None
    assert ModelConfig.from_json(cfg.to_json()) == cfg


@pytest.mark.parametrize(
    "change, field",
    [
        ({"d_model": 65}, "d_model"),
        ({"n_layers": 0}, "n_layers"),
        ({"moe": {"top_k": 9, "n_routed_experts": 4}}, "moe.top_k"),
        ({"engram": {"layer_ids": [7]}}, "engram.layer_ids"),
        ({"engram": {"engram_vocab_size": [100]}}, "engram.engram_vocab_size"),
        ({"engram": {"n_embed_per_ngram": 30, "n_head_per_ngram": 8}}, "engram.n_embed_per_ngram"),
        ({"bogus": 1}, "bogus"),
        ({"engram": {"use_conv": "yes"}}, "engram.use_conv"),
        ({"n_heads": 2.5}, "n_heads"),
    ],
)
def test_validation_names_the_bad_field(change, field):
    base = ModelConfig(vocab_size=100, d_model=64, n_layers=4, n_heads=4, d_ffn=64).to_dict()
    base.update(change)
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        ModelConfig.from_dict(base)


@pytest.mark.parametrize("kind", ["dense", "moe", "engram", "engram-null", "mhc"])
def test_param_accounting_matches_the_built_model(kind):
    model = tiny_model(kind)
    counts = count_params(model.cfg)
    named = dict(model.named_parameters())
    assert counts.P_tot == sum(p.numel() for n, p in named.items() if n not in ("embed.W_E", "unembed.W_U"))
    assert counts.embedding == named["embed.W_E"].numel() + named["unembed.W_U"].numel()
    engram = sum(p.numel() for n, p in named.items() if ".engram." in n)
    assert counts.engram == engram
    routed = sum(p.numel() for n, p in named.items() if n.split(".")[-1] in ("W_gate", "W_up", "W_down") and ".mlp." in n and p.dim() == 3)
    assert counts.routed == routed
    assert counts.P_sparse == counts.P_tot - counts.P_act
    if kind == "dense":
        assert counts.rho is None and counts.P_sparse == 0
    elif kind == "moe":
        assert counts.rho == 1.0


def test_rho_hand_computed():
    # one MoE layer: 4 routed experts of 3*d*h = 3*8*2 = 48 params, top-1 -> 3 inactive = 144 sparse routed params
    cfg = ModelConfig(vocab_size=50, d_model=8, n_layers=2, n_heads=2, d_ffn=8,
                      moe=MoEConfig(n_shared_experts=0, n_routed_experts=4, top_k=1, d_expert=2, n_dense_layers=1),
                      engram=EngramConfig(layer_ids=(1,), max_ngram_size=2, n_head_per_ngram=1, n_embed_per_ngram=2,
                                          engram_vocab_size=(10,)).resolved(50))
    counts = count_params(cfg)
    table_rows = cfg.engram.rows(1)  # 11: the first prime above 9
    assert table_rows == 11
    sparse_table = (table_rows - 1) * 2  # one row of width 2 is read per token
    assert counts.rho == pytest.approx(144 / (144 + sparse_table))
