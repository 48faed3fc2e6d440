"""memory-help: bucket losses against a float64 hand recomputation (counts, collisions and gates found by
brute force from the model's own hooks), the capacity override (k = full is the normal forward exactly,
k = 1 makes every n-gram of a head share one row, as the memory inspector sees it), and the findings on
random models (not established)."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import pytest
import torch

import engram_interp as ei
from engram_interp.analysis.memory import memory_inspect
from engram_interp.analysis.memory_help import memory_help
from engram_interp.analysis.ngram_counts import count_ngrams
from engram_interp.claims.memory_help import memory_help_findings
from engram_interp.errors import EngramInterpError
from engram_interp.memory import open_tables
from engram_interp.memory.capacity import CapacityTables
from engram_interp.testing import tiny_model

TEXTS = ["The capital of France is Paris. The capital of Italy is Rome.",
         "The capital of France is Paris. It was the best of times.",
         "The capital of Spain is Madrid. Once upon a time there lived a fox.",
         "The capital of France is Paris. The grapes were sour, said the fox."]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    e, b = tiny_model("engram"), tiny_model("moe", seed=1)
    path = ei.save(e, tmp_path_factory.mktemp("mh") / "engram.ckpt")
    return e.requires_grad_(False), b.requires_grad_(False), open_tables(path)


def _hand(e, b, texts, cold, hot, gate_bins=5):
    """Per bucket: the float64 mean of loss_e - loss_b over the scored positions, from single-text forwards,
    n-gram counts by Counter over canonical ids and row users from the model's hook_hash_ids."""
    N, K, pad = 3, 4, int(e.compression.table[2])
    canon_of = lambda ids: [int(e.compression.table[i]) for i in ids]  # noqa: E731
    key = lambda c, t, n: tuple(c[t - j] if t - j >= 0 else pad for j in range(n))  # noqa: E731
    counts, users = Counter(), defaultdict(set)
    per_text = []
    for text in texts:
        tok = e.to_tokens(text)
        c = canon_of(tok[0].tolist())
        names = {f"blocks.{l}.engram.{h}" for l in e.engram_layers for h in ("hook_hash_ids", "hook_gate")}
        logits, cache = e.run_with_cache(tok, names_filter=lambda x: x in names)
        for t in range(1, len(c)):  # the counting corpus: every real position, BOS excluded
            for n in (2, 3):
                counts[key(c, t, n)] += 1
                for l in e.engram_layers:
                    for k in range(K):
                        col = (n - 2) * K + k
                        users[(l, col, int(cache[f"blocks.{l}.engram.hook_hash_ids"][0, t, col]))].add(key(c, t, n))
        le = -torch.log_softmax(logits[0].double(), -1)
        lb = -torch.log_softmax(b(tok)[0].double(), -1)
        for t in range(1, len(c) - 1):
            nxt = int(tok[0, t + 1])
            gates = {l: float(cache[f"blocks.{l}.engram.hook_gate"][0, t].double().mean()) for l in e.engram_layers}
            rows = {(l, col): int(cache[f"blocks.{l}.engram.hook_hash_ids"][0, t, col]) for l in e.engram_layers
                    for col in range((N - 1) * K)}
            per_text.append((c, t, float(le[t, nxt]) - float(lb[t, nxt]), gates, rows))
    buckets = defaultdict(list)
    for c, t, d, gates, rows in per_text:
        buckets[("all", None, "all")].append(d)
        for n in (2, 3):
            k_ = key(c, t, n)
            cnt = counts[k_]
            buckets[("frequency", n, "cold" if cnt < cold else "hot" if cnt >= hot else "warm")].append(d)
            shared = sum(1 for l in e.engram_layers for kk in range(K)
                         if users[(l, (n - 2) * K + kk, rows[(l, (n - 2) * K + kk)])] - {k_})
            buckets[("collision", n, "none" if shared == 0 else "all" if shared == 2 * K else "some")].append(d)
        for l, g in gates.items():
            i = min(int(g * gate_bins), gate_bins - 1)
            buckets[("gate", l, f"{i / gate_bins:.2f}-{(i + 1) / gate_bins:.2f}")].append(d)
    return {k: np.mean(np.asarray(v, dtype=np.float64)) for k, v in buckets.items()}, len(per_text)


def test_bucket_losses_equal_a_float64_hand_recomputation(pair):
    e, b, tables = pair
    counts = count_ngrams(tables, TEXTS, corpus="test texts")
    res = memory_help(e, b, TEXTS, counts, tables, capacities=(), cold=2, hot=3, batch_size=1, n_boot=20)
    want, n = _hand(e, b, TEXTS, cold=2, hot=3)
    assert res.n_tokens == n
    got = {(x["dim"], x["key"], x["bucket"]): x for x in res.buckets}
    for k, v in want.items():
        assert got[k]["delta_baseline"] == pytest.approx(v, abs=1e-9, rel=1e-9), k
    for k, x in got.items():  # empty buckets are exactly the ones the hand count never filled
        assert (x["n_tokens"] == 0) == (k not in want), k
    seen = {k[0] for k in want}
    assert {"frequency", "collision", "gate"} <= seen
    assert len({k[2] for k in want if k[0] == "frequency"}) >= 2  # the case reaches more than one bucket
    hot, cold = want[("frequency", 3, "hot")], want[("frequency", 3, "cold")]
    assert res.hot_minus_cold["value"] == pytest.approx(hot - cold, abs=1e-9)


def test_capacity_full_is_the_normal_forward_exactly(pair):
    e, b, tables = pair
    tok = e.to_tokens(TEXTS)
    normal = e(tok)
    biggest = max(max(e.engram_heads(l).head_sizes) for l in e.engram_layers)
    for k in (None, biggest):
        with e.engram_capacity(k):
            assert torch.equal(e(tok), normal)
    assert all(e.blocks[l].engram.capacity is None for l in e.engram_layers)  # restored
    with e.engram_capacity(1):
        assert not torch.equal(e(tok), normal)
    counts = count_ngrams(tables, TEXTS)
    res = memory_help(e, b, TEXTS, counts, tables, capacities=(biggest,), n_boot=0)
    full, same = res.capacity[-1], res.capacity[0]
    assert full["k"] is None and same["loss"] == full["loss"] and same["rise"] == 0.0


def test_capacity_one_shares_one_row_in_the_inspector(pair):
    e, _, tables = pair
    tok = e.to_tokens(TEXTS[0])
    names = {f"blocks.{l}.engram.hook_hash_ids" for l in e.engram_layers}
    for k in (1, 16):
        with e.engram_capacity(k):
            _, cache = e.run_with_cache(tok, names_filter=lambda x: x in names)
        folded = CapacityTables(tables, k)
        ctx = folded.contexts(tok[0].tolist())
        for l in e.engram_layers:  # the inspector's view of the truncated tables is what the model reads
            assert np.array_equal(cache[f"blocks.{l}.engram.hook_hash_ids"][0].numpy(), folded.rows(l, ctx))
    res = memory_inspect(CapacityTables(tables, 1), TEXTS, progress=False, untouched=4, pca_points=10)
    for layer in res.layers:
        for h in layer.heads:
            assert h.rows == 1 and h.touched == 1
            assert h.ngrams_per_row_max == h.distinct_ngrams > 1 and h.collision_share == 1.0
    with pytest.raises(EngramInterpError):
        with e.engram_capacity(0):
            pass


def test_a_dense_or_moe_model_refuses_the_capacity_override():
    with pytest.raises(EngramInterpError, match="no Engram tables"):
        with tiny_model("moe").engram_capacity(1):
            pass


def test_on_random_models_the_findings_are_not_established(pair):
    _, _, tables = pair
    counts = count_ngrams(tables, TEXTS)
    kw = dict(capacities=(1,), cold=2, hot=3, batch_size=1, n_boot=50)
    seeds = [memory_help(ei.untrained_twin(tiny_model("engram"), s), ei.untrained_twin(tiny_model("moe"), s), TEXTS,
                         counts, tables, **kw).to_dict() for s in (1, 2, 3)]
    twin = memory_help(ei.untrained_twin(tiny_model("engram"), 9), ei.untrained_twin(tiny_model("moe"), 9), TEXTS,
                       counts, tables, **kw).to_dict()
    found = memory_help_findings(seeds, twin)
    assert [f.finding for f in found] == ["memory help by n-gram frequency", "capacity-1 tables"]
    for f in found:
        assert f.n_seeds == 3 and f.verdict == "not established", f.sentence
        assert "untrained twin" in f.sentence and "overlaps" in f.reason  # the controls decide, not the seed count
    one = memory_help_findings(seeds[:1])  # one seed, no twin: never a claim word
    assert all(f.verdict == "not established" and "--twin" in f.reason for f in one)


def test_cli_json_matches_the_library_and_bad_input_is_one_line(tiny_ckpts, capsys, tmp_path):
    import json

    from engram_interp.cli import main

    text = " ".join(TEXTS)
    args = ["memory-help", str(tiny_ckpts["engram"]), "--baseline", str(tiny_ckpts["moe"]), "--null",
            str(tiny_ckpts["engram-null"]), "--text", text, "--capacities", "1,16", "--boot", "20", "--device", "cpu",
            "--quiet", "--json"]
    assert main(args) == 0
    d = json.loads(capsys.readouterr().out)
    m = d["models"][0]
    e, b, n = (ei.load(tiny_ckpts[k], device="cpu") for k in ("engram", "moe", "engram-null"))
    tables = open_tables(tiny_ckpts["engram"])
    want = memory_help(e, b, [text], count_ngrams(tables, [text]), tables, null=n, capacities=(1, 16), n_boot=20).to_dict()
    assert [x["delta_baseline"] for x in m["buckets"]] == [x["delta_baseline"] for x in want["buckets"]]
    assert [c["k"] for c in m["capacity"]] == [1, 16, None] and m["null"] == "engram-null"
    assert [f["finding"] for f in d["findings"]] == ["memory help by n-gram frequency", "capacity-1 tables"]
    assert all(f["verdict"] == "not established" for f in d["findings"])  # one seed, no twin
    stream = tmp_path / "train.bin"  # --counts a training stream: counted flat
    np.asarray([i for t in TEXTS for i in [0] + e.encode(t)], dtype=np.uint16).tofile(stream)
    assert main(args[:8] + ["--counts", str(stream), "--capacities", "1", "--boot", "2", "--quiet", "--json"]) == 0
    c = json.loads(capsys.readouterr().out)["models"][0]["counts"]
    assert c["corpus"] == str(stream) and c["texts"] == len(TEXTS)
    for bad, words in (([str(tiny_ckpts["moe"]), "--baseline", str(tiny_ckpts["moe"])], "no Engram layers"),
                       ([str(tiny_ckpts["engram"]), "--baseline", str(tiny_ckpts["moe"]), "--cold", "9", "--hot", "2"], "--cold")):
        assert main(["memory-help", *bad, "--text", text, "--quiet"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[-1], err
    with pytest.raises(SystemExit) as exit_:  # argparse's own refusal: one line, exit 2
        main(["memory-help", str(tiny_ckpts["engram"]), "--baseline", str(tiny_ckpts["moe"]), "--capacities", "1,0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and "every capacity must be >= 1" in err[0]


@pytest.mark.slow
def test_report_memory_help_section(tiny_ckpts, tmp_path, capsys):
    import json

    from engram_interp.cli import main

    out = tmp_path / "rep"
    rc = main(["report", str(tiny_ckpts["engram"]), str(tiny_ckpts["moe"]), "--out", str(out), "--max-tokens", "200",
               "--cka-batch", "16", "--device", "cpu", "--quiet", "--no-twin", "--memory-help"])
    assert rc == 0, capsys.readouterr().err
    got = json.loads((out / "results.json").read_text())
    assert got["memory_help"]["models"][0]["baseline"] == "moe"
    assert {"memory help by n-gram frequency", "capacity-1 tables"} <= {f["finding"] for f in got["findings"]}
    assert "Where the memory helps" in (out / "report.html").read_text()
    capsys.readouterr()
    assert main(["report", str(tiny_ckpts["engram"]), "--out", str(tmp_path / "r2"), "--memory-help", "--quiet"]) == 2
    assert "baseline B" in capsys.readouterr().err


def test_qwen4_exp_capacity_folds_the_ple_rows(tmp_path):
    """Qwen4-Exp: k = None and k >= every head's size give Hugging Face's forward exactly; k = 1 makes every
    position read its head's first row (global ids = the head offsets), as the PLE table source folded to 1 row."""
    pytest.importorskip("transformers.models.qwen4_exp")
    from engram_interp.backends.testing import tiny_qwen4_exp_folder

    folder = tiny_qwen4_exp_folder(tmp_path / "qwen4")
    m = ei.load(folder, device="cpu").requires_grad_(False)
    tok = m.to_tokens(TEXTS[0])
    normal = m(tok)
    biggest = max(max(m.ple_hashing(l).head_sizes) for l in m.engram_layers)
    for k in (None, biggest):
        with m.engram_capacity(k):
            assert torch.equal(m(tok), normal)
    names = {f"blocks.{l}.engram.hook_hash_ids" for l in m.engram_layers}
    with m.engram_capacity(1):
        _, cache = m.run_with_cache(tok, names_filter=lambda x: x in names)
        assert not torch.equal(m(tok), normal)
    folded = CapacityTables(open_tables(folder), 1)
    ctx = folded.contexts(tok[0].tolist())
    for l in m.engram_layers:
        offsets = torch.tensor(m.ple_hashing(l).head_offsets)
        ids = cache[f"blocks.{l}.engram.hook_hash_ids"][0]
        assert torch.equal(ids, offsets.expand_as(ids))
        assert np.array_equal(ids.numpy(), folded.rows(l, ctx) + folded.offsets(l))
    assert torch.equal(m(tok), normal)  # the hooks are gone after the block


def test_training_stream_counts_equal_a_hand_count_over_the_flat_stream(pair, tmp_path):
    """count_stream reads train.bin as training does (one flat sequence; BOS positions not counted): every
    order-2 and order-3 count equals a Counter over the canonical ids, chunk boundaries included."""
    from engram_interp.analysis.ngram_counts import count_stream

    e, _, tables = pair
    flat = [i for t in TEXTS for i in [0] + e.encode(t)]
    path = tmp_path / "train.bin"
    np.asarray(flat, dtype=np.uint16).tofile(path)
    counts = count_stream(tables, path, chunk=7)  # tiny chunks: contexts must continue across them
    pad = int(e.compression.table[2])
    canon = [int(e.compression.table[i]) for i in flat]
    ctx = np.array([[canon[t - j] if t - j >= 0 else pad for j in range(3)] for t in range(len(flat))], dtype=np.int64)
    real = np.array(flat) != 0
    assert counts.n_positions == int(real.sum()) and counts.n_texts == len(TEXTS)
    rows = {l: tables.rows(l, ctx[real]) for l in tables.layers}
    for n in (2, 3):
        hand = Counter(tuple(c[:n]) for c in ctx[real].tolist())
        got, _ = counts.lookup(n, ctx[real], rows)
        assert got.tolist() == [hand[tuple(c[:n])] for c in ctx[real].tolist()]
