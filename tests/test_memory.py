"""Memory inspector figures against independent recomputations: the model's own forward (hash hook,
memory weight) with plain Python bookkeeping, Monte Carlo for the uniform-hash reference, scipy for
Spearman, numpy SVD for the PCA map, brute-force cosine for the neighbours."""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict

import numpy as np
import pytest

import engram_interp as ei
from engram_interp.analysis.memory import (
    memory_inspect, mean_ci, row_loads, spearman_ci, uniform_hash_expectation, zipf_exponent,
)
from engram_interp.cli import main
from engram_interp.errors import EngramInterpError
from engram_interp.memory import open_tables
from engram_interp.testing import tiny_model

TEXTS = ["Alexander the Great was a king of Macedon. The Milky Way is a galaxy.",
         "By the way, the Princess of Wales visited London. The capital of France is Paris.",
         "It was the best of times, it was the worst of times. The capital of Italy is Rome."] * 3


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("mem")
    model = tiny_model("engram")
    return model, ei.save(model, d / "engram.ckpt")


@pytest.fixture(scope="module")
def result(tiny):
    _, path = tiny
    return memory_inspect(open_tables(path), TEXTS, max_tokens=None, ngram="the capital", progress=False,
                          untouched=500, pool=10_000)


def test_zipf_exponent_on_exact_power_law():
    ranks = np.arange(1, 501)
    assert zipf_exponent(1e6 * ranks**-1.3) == pytest.approx(1.3, abs=1e-9)
    assert zipf_exponent(np.array([5.0])) is None


def test_uniform_expectation_matches_monte_carlo():
    rng = np.random.default_rng(0)
    d, p, trials = 300, 701, 4000
    touched, shared = [], []
    for _ in range(trials):
        rows = rng.integers(0, p, size=d)
        _, per = np.unique(rows, return_counts=True)
        touched.append(per.size)
        shared.append((per[np.searchsorted(np.unique(rows), rows)] > 1).mean())
    e = uniform_hash_expectation(d, p)
    assert e["touched"] == pytest.approx(np.mean(touched), rel=2e-3)
    assert e["collision_share"] == pytest.approx(np.mean(shared), rel=5e-3)
    assert e["ngrams_per_row_mean"] == pytest.approx(d / e["touched"])


def test_spearman_and_mean_ci_against_references():
    from scipy import stats

    rng = np.random.default_rng(3)
    a = rng.integers(0, 20, size=200).astype(float)
    b = a + rng.normal(size=200) * 5
    r, ci = spearman_ci(a, b)
    assert r == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)
    z = math.atanh(r)
    assert ci == pytest.approx([math.tanh(z - 1.96 / math.sqrt(197)), math.tanh(z + 1.96 / math.sqrt(197))])
    m, (lo, hi) = mean_ci(np.array([1.0, 2.0, 3.0, 4.0]))
    assert m == 2.5 and hi - m == pytest.approx(1.96 * math.sqrt(5 / 3) / 2)
    assert spearman_ci(np.ones(10), np.arange(10)) == (None, None)


def test_row_loads_hand_computed():
    uniq, loads, per, inv = row_loads(np.array([4, 1, 4, 9]), np.array([2, 3, 5, 1]))
    assert uniq.tolist() == [1, 4, 9] and loads.tolist() == [3, 7, 1] and per.tolist() == [1, 2, 1]
    assert inv.tolist() == [1, 0, 1, 2]


def _reference(model, texts):
    """Every per-head figure from the model's own forward pass (hook_hash_ids, BOS dropped) and plain
    Python dictionaries keyed by canonical n-gram tuples."""
    comp, e = model.compression.table, model.cfg.engram
    pad = int(comp[e.pad_id])
    out = {}
    for l in e.layer_ids:
        per_head = defaultdict(lambda: defaultdict(Counter))  # head -> row -> Counter(ngram)
        for text in texts:
            tokens = model.to_tokens(text)
            _, cache = model.run_with_cache(tokens, names_filter=lambda n: n == f"blocks.{l}.engram.hook_hash_ids")
            rows = cache[f"blocks.{l}.engram.hook_hash_ids"][0].tolist()
            canon = [int(comp[t]) for t in tokens[0].tolist()]
            for t in range(1, len(canon)):  # position 0 is BOS
                for h in range(e.n_hash_heads):
                    n = 2 + h // e.n_head_per_ngram
                    gram = tuple(canon[t - j] if t - j >= 0 else pad for j in range(n))
                    per_head[h][rows[t][h]][gram] += 1
        out[l] = per_head
    return out


def test_head_figures_equal_independent_recomputation(tiny, result):
    model, _ = tiny
    ref = _reference(model, TEXTS)
    weight = {l: model.blocks[l].engram.memory.weight.detach().double().numpy() for l in model.engram_layers}
    total = sum(len(model.encode(t)) for t in TEXTS)
    assert result.n_positions == total and result.n_texts == len(TEXTS)
    for L in result.layers:
        sizes = model.cfg.engram.table_sizes[model.cfg.engram.layer_ids.index(L.layer)]
        offsets = np.cumsum(sizes) - np.array(sizes)
        for h, hs in enumerate(L.heads):
            rows = ref[L.layer][h]
            loads = sorted((sum(c.values()) for c in rows.values()), reverse=True)
            grams = Counter()
            for c in rows.values():
                grams.update(c)
            assert hs.rows == sizes[h] and hs.touched == len(rows) and hs.n_positions == total
            assert hs.distinct_ngrams == len(grams)
            assert hs.ngrams_per_row_max == max(len(c) for c in rows.values())
            assert hs.ngrams_per_row_mean == pytest.approx(len(grams) / len(rows))
            shared = sum(sum(c.values()) for c in rows.values() if len(c) > 1)
            assert hs.collision_share == pytest.approx(shared / total)
            top = max(1, math.ceil(0.01 * len(rows)))
            assert hs.top1pct_share == pytest.approx(sum(loads[:top]) / total)
            assert hs.uniform_collision_share == pytest.approx(1 - (1 - 1 / sizes[h]) ** (len(grams) - 1))
            slope = np.polyfit(np.log(np.arange(1, len(loads) + 1)), np.log(loads), 1)[0]
            assert hs.zipf_exponent == pytest.approx(-slope)
            norms = [float(np.linalg.norm(weight[L.layer][r + offsets[h]])) for r in rows]
            assert hs.norm_touched == pytest.approx(np.mean(norms))
            heavy = max(rows, key=lambda r: sum(rows[r].values()))
            assert hs.heavy_rows[0]["load"] == sum(rows[heavy].values())
            assert hs.heavy_rows[0]["n_ngrams"] == len(rows[max(rows, key=lambda r: (sum(rows[r].values()), -r))])
            assert hs.n_untouched_sampled == min(500, sizes[h] - len(rows))


def test_untouched_sample_and_norm_control(tiny, result):
    """Random-init rows (std 1, width 8) have norm ~ sqrt(8); untouched rows are never touched."""
    model, _ = tiny
    for L in result.layers:
        for hs in L.heads:
            assert hs.norm_untouched == pytest.approx(math.sqrt(model.cfg.engram.d_head), rel=0.1)
            assert hs.norm_untouched_ci[0] < hs.norm_untouched < hs.norm_untouched_ci[1]


def test_ngram_lookup_and_neighbours_brute_force(tiny, result):
    model, path = tiny
    src = open_tables(path)
    look = result.ngram
    ids = model.encode("the capital")
    assert look["tokens"] == [model.decode_token(i) for i in ids]
    K, e = src.n_head_per_ngram, model.cfg.engram
    ref = _reference(model, TEXTS)
    comp = model.compression.table
    o = next(o for o in look["orders"] if o["order"] == 2)
    gram = (int(comp[ids[-1]]), int(comp[ids[-2]]))
    for L in o["layers"]:
        w = model.blocks[L["layer"]].engram.memory.weight.detach().double().numpy()
        offs = np.cumsum(e.table_sizes[e.layer_ids.index(L["layer"])])
        offs = offs - np.array(e.table_sizes[e.layer_ids.index(L["layer"])])
        for hd in L["heads"]:
            mates = ref[L["layer"]][hd["head"]].get(hd["row"], Counter())
            assert hd["n_shared"] == len([g for g in mates if g != gram])
        # neighbours: brute-force cosine over every other order-2 corpus n-gram
        allgrams = Counter()
        rows_of = {}
        for h in range(K):
            for r, c in ref[L["layer"]][h].items():
                for g, cnt in c.items():
                    rows_of.setdefault(g, [None] * K)[h] = r
                    if h == 0:
                        allgrams[g] += cnt
        qrows = [hd["row"] for hd in L["heads"]]
        q = np.concatenate([w[r + offs[k]] for k, r in enumerate(qrows)])
        cos = []
        for g in allgrams:
            if g == gram:
                continue
            v = np.concatenate([w[r + offs[k]] for k, r in enumerate(rows_of[g])])
            cos.append(float(v @ q / np.linalg.norm(v) / np.linalg.norm(q)))
        cos.sort(reverse=True)
        assert [n["cosine"] for n in L["neighbours"]] == pytest.approx(cos[: len(L["neighbours"])], abs=1e-6)
        assert L["cosine_baseline"]["mean"] == pytest.approx(np.mean(cos))


def test_pca_map_matches_svd(tiny):
    from engram_interp.analysis.memory import NgramAccumulator, _pca, _positions, _Texts

    model, path = tiny
    src = open_tables(path)
    acc = NgramAccumulator(src.max_ngram_size, src.n_head_per_ngram, src.layers)
    for ctx, raw in _positions(src, TEXTS, None, 8192, False, {"texts": 0}):
        acc.update(ctx, raw, {l: src.rows(l, ctx) for l in src.layers})
    tables = acc.tables()
    e, K = model.cfg.engram, src.n_head_per_ngram
    for l in src.layers:
        pca = _pca(src, l, tables, _Texts(src), 40)
        w = model.blocks[l].engram.memory.weight.detach().double().numpy()
        sizes = np.array(e.table_sizes[e.layer_ids.index(l)])
        offs = np.cumsum(sizes) - sizes
        vecs, orders = [], []
        for n, t in sorted(tables.items()):
            for i in np.argsort(-t.counts, kind="stable")[:20]:
                vecs.append(np.concatenate([w[t.rows[l][i, k] + offs[(n - 2) * K + k]] for k in range(K)]))
                orders.append(n)
        x = np.array(vecs)
        xc = x - x.mean(0)
        _, sv, vt = np.linalg.svd(xc, full_matrices=False)
        ref = xc @ vt[:2].T
        got = np.array([[p["x"], p["y"]] for p in pca["points"]])
        assert [p["order"] for p in pca["points"]] == orders
        for c in range(2):
            sign = np.sign(got[:, c] @ ref[:, c])
            np.testing.assert_allclose(got[:, c], sign * ref[:, c], atol=1e-8)
        np.testing.assert_allclose(pca["explained_variance_ratio"], (sv**2 / (sv**2).sum())[:2], rtol=1e-9)


def test_null_memory_contrast(tmp_path):
    model = tiny_model("engram-null")
    p = ei.save(model, tmp_path / "null.ckpt")
    r = memory_inspect(open_tables(p), TEXTS[:3], progress=False)
    assert r.null_memory
    for L in r.layers:
        for hs in L.heads:
            assert hs.touched == 1 and hs.heavy_rows[0]["row"] == 0
            assert hs.collision_share == 1.0 and hs.top1pct_share == 1.0
        # every n-gram of an order reads the same rows: the map collapses to one point per order
        assert len({(round(p["x"], 6), round(p["y"], 6)) for p in L.pca["points"]}) <= 2


def test_cli_memory_json_keys_and_errors(tiny, tmp_path, capsys):
    _, path = tiny
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n\n".join(TEXTS))
    assert main(["memory", str(path), "--corpus", str(corpus), "--json", "--quiet"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert {"layers", "n_positions", "source"} <= set(d) and d["source"] == str(path)
    head = d["layers"][0]["heads"][0]
    assert {"order", "head", "rows", "touched", "top1pct_share", "zipf_exponent", "collision_share",
            "uniform_collision_share"} <= set(head) and "layer" in d["layers"][0]
    assert main(["memory", str(path), "--corpus", str(corpus), "--ngram", "Q", "--quiet"]) == 2
    assert "at least 2 tokens" in capsys.readouterr().err
    moe = ei.save(tiny_model("moe"), tmp_path / "moe.ckpt")
    assert main(["memory", str(moe), "--corpus", str(corpus), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no Engram layers" in err and len(err.strip().splitlines()) == 1
    out = tmp_path / "out"
    assert main(["memory", str(path), "--corpus", str(corpus), "--out", str(out), "--quiet", "--ngram", "the capital"]) == 0
    printed = capsys.readouterr().out
    assert "heaviest rows" in printed and "nearest by memory vector" in printed
    assert json.loads((out / "memory.json").read_text())["n_positions"] == d["n_positions"]
    assert main(["memory", str(path), "--corpus", str(corpus), "--out", str(out), "--quiet"]) == 2
    assert "already holds a result" in capsys.readouterr().err


def test_accumulator_compaction_is_invisible(tiny):
    """Compacting after every chunk or once at the end gives the same n-gram tables."""
    _, path = tiny
    src = open_tables(path)
    a = memory_inspect(src, TEXTS, progress=False, chunk=7)
    b = memory_inspect(src, TEXTS, progress=False, chunk=100_000)
    assert a.to_dict() == b.to_dict()


def test_report_memory_section(result, tmp_path):
    from engram_interp.figures import memory_pca_figure, memory_usage_figure, write_report

    paths = write_report(tmp_path / "rep", memory=result)
    page = paths["html"].read_text()
    assert "Memory: engram" in page and page.count("Plotly.newPlot") == 2 + len(result.layers)
    assert "<script src=" not in page and len(page) > 1_000_000  # plotly.js inlined once: opens offline
    assert json.loads(paths["json"].read_text())["memory"]["n_positions"] == result.n_positions
    fig = memory_usage_figure(result)
    assert len(fig.data) == sum(len(L.heads) for L in result.layers)
    h = result.layers[0].heads[0]
    assert list(fig.data[0].x) == h.rank_curve["rank"] and list(fig.data[0].y) == h.rank_curve["load"]
    pca = memory_pca_figure(result, result.layers[0].layer)
    assert sum(len(t.x) for t in pca.data) == len(result.layers[0].pca["points"])
