"""Qwen4-Exp PLE tables through the table-source abstraction, against transformers' own n-gram
module on a tiny random model saved with save_pretrained."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("transformers.models.qwen4_exp")

from engram_interp.analysis.memory import memory_inspect  # noqa: E402
from engram_interp.errors import EngramInterpError  # noqa: E402
from engram_interp.memory import open_tables  # noqa: E402
from engram_interp.testing import tiny_tokenizer  # noqa: E402


def _tiny_qwen4(folder, eos: int = 1):
    from transformers.models.qwen4_exp import configuration_qwen4_exp as C
    from transformers.models.qwen4_exp import modeling_qwen4_exp as M

    tok = tiny_tokenizer()
    tc = C.Qwen4ExpTextConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=4, num_attention_heads=2, num_key_value_heads=1,
        head_dim=16, linear_key_head_dim=8, linear_value_head_dim=8, linear_num_key_heads=2, linear_num_value_heads=2,
        moe_intermediate_size=16, shared_expert_intermediate_size=16, num_experts=4, num_experts_per_tok=2,
        hc_count=2, ple_layer_ids=[1, 3], ple_embed_dim=48, ngram_size=3, heads_per_ngram=3, ngram_vocab_size_base=97,
        make_ngram_vocab_size_divisible_by=16, seed=7, eos_token_id=eos,
        layer_types=["linear_attention", "linear_attention", "linear_attention", "indexed_attention"],
        indexer_n_heads=1, indexer_kv_heads=1, indexer_head_dim=16, indexer_budget=4, indexer_compress_ratio=2)
    torch.manual_seed(0)
    model = M.Qwen4ExpForCausalLM(tc).eval()
    model.save_pretrained(str(folder))
    tok.save(str(folder / "tokenizer.json"))
    return model, tok


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    folder = tmp_path_factory.mktemp("qwen4")
    model, tok = _tiny_qwen4(folder)
    return folder, model, tok


def test_ple_rows_and_vectors_equal_transformers_module(qwen):
    folder, model, tok = qwen
    src = open_tables(folder)
    assert src.layout == "qwen4-exp-ple" and src.layers == (0, 2)
    text = "Alexander the Great was a king.<|eos|>The Milky Way is a galaxy."
    ids = tok.encode(text).ids
    assert 1 in ids  # an EOS inside the text: contexts are cut there
    ctx = src.contexts(ids)
    for l in src.layers:
        hf = model.model.layers[l].ple.ple_embedding
        want = hf(torch.tensor([ids]), None)[0].detach().double().numpy()  # transformers' own lookup, [p, H * d]
        rows = src.rows(l, ctx) + src.offsets(l)
        got = src.read_rows(l, rows.reshape(-1)).reshape(len(ids), -1)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
        assert src.head_sizes(l) == [int(s) for s in hf.ngram_heads_vocab_sizes]


def test_ple_memory_inspect_runs(qwen):
    folder, _, _ = qwen
    res = memory_inspect(open_tables(folder), ["The capital of France is Paris."] * 3, progress=False)
    assert [L.layer for L in res.layers] == [0, 2] and res.layout == "qwen4-exp-ple"
    assert all(h.touched >= 1 for L in res.layers for h in L.heads)


def test_ple_table_size_mismatch_is_one_line(qwen, tmp_path):
    import json
    import shutil

    folder, _, _ = qwen
    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["ngram_vocab_size_base"] = 50
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(EngramInterpError, match="table size does not match"):
        open_tables(bad)
