"""Routing analysis (engram_interp.analysis.routing) against hand computations, Hugging Face's own router
logits, and the CLI's refusals and findings."""

from __future__ import annotations

import json
import math

import pytest
import torch

import engram_interp as ei
from engram_interp.analysis.routing import RoutingAccumulator, js_divergence, routing
from engram_interp.backends.testing import tiny_llama_folder, tiny_moe_folder
from engram_interp.cli import main as cli

TEXTS = ["the cat sat on the mat and the dog sat on the log.", "a bird in the hand is worth two in the bush."]


def test_js_divergence_hand_cases():
    assert float(js_divergence(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]))) == pytest.approx(math.log(2))
    assert float(js_divergence(torch.tensor([2.0, 2.0]), torch.tensor([1.0, 1.0]))) == pytest.approx(0.0, abs=1e-15)
    p, q = [0.7, 0.2, 0.1], [0.1, 0.3, 0.6]
    m = [(a + b) / 2 for a, b in zip(p, q)]
    want = 0.5 * sum(a * math.log(a / c) for a, c in zip(p, m)) + 0.5 * sum(b * math.log(b / c) for b, c in zip(q, m))
    assert float(js_divergence(torch.tensor(p, dtype=torch.float64), torch.tensor(q, dtype=torch.float64))) == pytest.approx(want)


def test_accumulator_sums_equal_a_hand_count():
    acc = RoutingAccumulator([0], n_experts=3, n_boot=4, seed=1)
    ids = torch.tensor([[0, 1], [0, 2], [1, 2], [0, 1]])
    scores = torch.tensor([[0.5, 0.3, 0.2], [0.6, 0.1, 0.3], [0.1, 0.5, 0.4], [0.7, 0.2, 0.1]])
    bigrams = torch.tensor([[9, 5], [9, 5], [9, 5], [4, 5]])
    gate = torch.tensor([1.0, 0.0, 1.0, 0.5])
    acc.update([ids], [scores], bigrams, gate, 0)
    assert acc.load[0].tolist() == [3, 3, 2]
    want_h = -sum(p * math.log(p) for row in scores.tolist() for p in row)
    assert float(acc.entropy[0]) == pytest.approx(want_h)
    assert acc.open[0].tolist() == [1.5, 2.5, 1.0]  # g of the tokens choosing each expert
    assert acc.closed[0].tolist() == [1.5, 0.5, 1.0]
    cons, _, n = acc.consistency(0, min_count=3, n_shuffles=5, seed=0)
    assert n == 1 and cons == pytest.approx(2 / 3)  # bigram (9, 5): top experts 0, 0, 1


@pytest.fixture(scope="module")
def mixtral(tmp_path_factory):
    folder = tiny_moe_folder("mixtral", tmp_path_factory.mktemp("routing") / "mixtral")
    return folder, ei.load(folder, device="cpu")


def test_expert_load_equals_hf_router_logits(mixtral):
    _, model = mixtral
    res = routing({"m": model}, TEXTS, batch_size=1, max_tokens=None, n_boot=0)
    counts = {l: torch.zeros(4, dtype=torch.float64) for l in model.info.moe_layers}
    for text in TEXTS:
        tokens = model.to_tokens(text)
        assert tokens.shape[1] <= model.info.max_seq_len and tokens[0, 0] == model.info.bos_token_id
        out = model.hf(tokens, output_router_logits=True)
        for l, logits in zip(model.info.moe_layers, out.router_logits):
            top = logits[1:].float().softmax(-1).topk(2, dim=-1).indices  # BOS is not analysed
            counts[l] += torch.bincount(top.flatten(), minlength=4).double()
    for x in res.models[0].layers:
        torch.testing.assert_close(torch.tensor(x.load, dtype=torch.float64), counts[x.layer] / counts[x.layer].sum())
    batched = routing({"m": model}, TEXTS, batch_size=2, max_tokens=None, n_boot=0)
    for a, b in zip(res.models[0].layers, batched.models[0].layers):  # streaming: batching changes nothing
        assert a.load == pytest.approx(b.load) and a.router_entropy == pytest.approx(b.router_entropy)


def test_a_dense_model_is_refused_in_one_line_before_any_forward(tmp_path, capsys):
    folder = tiny_llama_folder(tmp_path / "dense")
    capsys.readouterr()
    assert cli(["routing", str(folder), "--text", "hello there", "--json"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no mixture-of-experts layers" in err[0]


def test_the_bundled_pair_states_one_finding_against_the_twin_and_the_baseline(capsys):
    code = cli(["routing", "checkpoints/engram.ckpt", "checkpoints/moe.ckpt", "--twin", "--max-tokens", "600",
                "--boot", "50", "--shuffles", "3", "--quiet", "--json"])
    assert code == 0
    d = json.loads(capsys.readouterr().out)
    names = [m["name"] for m in d["models"]]
    assert names == ["engram", "moe", "engram~twin"]
    assert d["models"][1]["gate_from"] == "engram"  # the baseline is split by the Engram model's gate
    [f] = d["findings"]
    assert f["verdict"] in ("not established", "not testable")  # one seed: never a claim word
    assert {c["name"] for c in f["controls"]} == {"untrained twin", "moe"}
    lo, hi = f["interval"]
    assert 0 <= lo <= f["effect"] <= hi and hi > lo
