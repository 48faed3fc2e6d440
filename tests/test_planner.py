"""Iso-parameter planner: P_tot matched within 0.5%, only the allowed fields change, rho near target."""

from __future__ import annotations

import dataclasses

import pytest

from engram_interp.config import EngramConfig, MoEConfig, ModelConfig
from engram_interp.train.planner import P_TOT_TOLERANCE, PlanError, changed_fields, plan_pair

BASELINE = ModelConfig(vocab_size=8192, d_model=256, n_layers=12, n_heads=4, d_ffn=768, max_seq_len=512,
                       moe=MoEConfig(n_shared_experts=1, n_routed_experts=16, top_k=2, d_expert=72, n_dense_layers=1))
SPEC = EngramConfig(layer_ids=(1, 5), max_ngram_size=3, n_head_per_ngram=8, n_embed_per_ngram=128)
TINY = ModelConfig(vocab_size=400, d_model=64, n_layers=4, n_heads=4, d_ffn=128, max_seq_len=64,
                   moe=MoEConfig(n_shared_experts=1, n_routed_experts=8, top_k=2, d_expert=32))
TINY_SPEC = EngramConfig(layer_ids=(1, 2), n_head_per_ngram=4, n_embed_per_ngram=32)


def _rho_step(plan) -> float:
    """Change of rho when one routed expert moves: one expert's params in every MoE layer / P_sparse."""
    cfg = plan.configs["engram"]
    n_moe = sum(cfg.is_moe_layer(layer) for layer in range(cfg.n_layers))
    return 3 * cfg.d_model * cfg.moe.d_expert * n_moe / plan.counts["engram"].P_sparse


@pytest.mark.parametrize("rho", [0.6, 0.75, 0.9])
def test_bundled_like_plan(rho):
    plan = plan_pair(BASELINE, SPEC, rho, compressed_vocab_size=6500)
    base, eng, null = plan.counts["moe"], plan.counts["engram"], plan.counts["engram-null"]
    assert abs(eng.P_tot / base.P_tot - 1) <= P_TOT_TOLERANCE
    assert abs(eng.P_tot / base.P_tot - 1) < 1e-3  # primes are dense enough to match far better than 0.5%
    assert null.P_tot == eng.P_tot and null.P_act == eng.P_act
    assert abs(eng.rho - rho) <= 0.5 * _rho_step(plan) + 1e-9  # the closest reachable rho
    # only the number of routed experts and the Engram spec change
    cfg = plan.configs["engram"]
    assert changed_fields(BASELINE, dataclasses.replace(cfg, engram=None)) == ["moe.n_routed_experts"]
    assert cfg.moe.n_routed_experts < BASELINE.moe.n_routed_experts
    resolved_fields = {"engram_vocab_size", "compressed_vocab_size", "multipliers", "table_sizes"}
    assert set(changed_fields(SPEC, cfg.engram)) <= resolved_fields
    assert len(set(cfg.engram.engram_vocab_size)) == 1  # one base size for every order
    assert cfg.engram.compressed_vocab_size == 6500
    assert changed_fields(cfg, plan.configs["engram-null"]) == ["engram.null_memory"]
    assert plan.configs["engram-null"].engram.null_memory and plan.configs["engram-null"].kind == "engram-null"
    # hand check of the accounting: the table holds exactly P_tot(moe) - P_tot(engram without table)
    assert eng.engram_table == sum(cfg.engram.rows(l) for l in cfg.engram.layer_ids) * cfg.engram.d_head


def test_tiny_plan_matches_instantiated_models():
    """Independent check: count the parameters of the real modules (real tokenizer compression, V' = 325)."""
    from engram_interp.model import EngramTransformer
    from engram_interp.testing import tiny_tokenizer
    from engram_interp.tokenizer import build_compression

    tok = tiny_tokenizer()
    comp = build_compression(tok)
    plan = plan_pair(TINY, TINY_SPEC, 0.75, compressed_vocab_size=comp.n_canonical)
    for kind, cfg in plan.configs.items():
        model = EngramTransformer(cfg, tokenizer=tok, compression=comp)
        assert model.cfg == cfg  # the planned config is final: nothing re-resolved
        n = sum(p.numel() for p in model.parameters())
        counts = plan.counts[kind]
        assert n - counts.embedding == counts.P_tot, kind
    assert abs(plan.p_tot_error) <= P_TOT_TOLERANCE


def test_plan_rows_and_table():
    plan = plan_pair(TINY, TINY_SPEC, 0.75, compressed_vocab_size=325)
    rows = {r["arm"]: r for r in plan.rows()}
    assert set(rows) == {"moe", "engram", "engram-null"}
    assert rows["moe"]["rho"] == 1.0 and rows["moe"]["engram_params"] == 0
    assert rows["engram"]["ckpt_mb_fp32"] == pytest.approx(2 * rows["engram"]["ckpt_mb_bf16"], abs=0.02)
    text = plan.table()
    assert "engram-null" in text and "rho target 0.750" in text


def test_plan_errors():
    with pytest.raises(PlanError, match="MoE"):
        plan_pair(dataclasses.replace(TINY, moe=None), TINY_SPEC, 0.75, 325)
    with pytest.raises(PlanError, match="rho"):
        plan_pair(TINY, TINY_SPEC, 1.0, 325)
    # a huge Engram projection cannot fit into the parameters of the removable experts
    with pytest.raises(PlanError):
        plan_pair(TINY, dataclasses.replace(TINY_SPEC, n_embed_per_ngram=2048, n_head_per_ngram=4), 0.75, 325)


def test_plan_cli(tmp_path, capsys):
    from engram_interp.cli import main
    from engram_interp.testing import tiny_tokenizer

    tok = tmp_path / "tokenizer.json"
    tok.write_text(tiny_tokenizer().to_str())
    cfg = tmp_path / "moe.json"
    cfg.write_text(TINY.to_json())
    rc = main(["plan", "--config", str(cfg), "--tokenizer", str(tok), "--rho", "0.75", "--layers", "1,2",
               "--heads", "4", "--n-embed", "32", "--out", str(tmp_path / "cfgs")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "engram-null" in out and "400 -> 325" in out
    eng = ModelConfig.from_json((tmp_path / "cfgs" / "engram.json").read_text())
    assert eng.engram.layer_ids == (1, 2) and eng.engram.compressed_vocab_size == 325
