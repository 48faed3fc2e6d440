"""The analysis subcommands on checkpoints saved by the test (tiny models), with the JSON keys of issue 4."""

from __future__ import annotations

import json
import re

import pytest
import torch

import engram_interp as ei
from engram_interp.cli import main
from engram_interp.testing import tiny_model

TEXT = "Alexander the Great was a king of Macedon. The Milky Way is a galaxy. By the way, the Princess of Wales visited London."


def save(model, path):
    ei.save(model, path, provenance={"test": True}, overwrite=True)
    return path


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpts")
    paths = {}
    for name, kind, seed in [("engram", "engram", 0), ("moe", "moe", 1), ("moe_seed1", "moe", 2)]:
        paths[name] = d / f"{name}.ckpt"
        save(tiny_model(kind, seed=seed), paths[name])
    corpus = d / "corpus.txt"
    corpus.write_text("\n\n".join([TEXT, "The capital of France is Paris. It was the best of times."] * 3))
    paths["corpus"] = corpus
    model = ei.load(paths["engram"], device="cpu")
    items = []
    for i, p in enumerate(["Alexander the", "The Milky", "By the way, the", "The capital of France", "Once upon a time there",
                           "Water boils at one", "The capital of Italy is", "said the", "New York, new"]):
        with torch.no_grad():
            nxt = int(model(model.to_tokens(p))[0, -1].argmax())
        ans = model.tokenizer.decode([nxt])
        if model.tokenizer.encode(ans, add_special_tokens=False).ids == [nxt]:
            items.append({"id": str(i), "suite": "self", "prompt": p, "answer": ans})
    items.append({"id": "mc", "suite": "mc", "prompt": "The capital of France is", "answer": " Paris", "candidates": [" Paris", " Rome", " Madrid"]})
    paths["suite"] = d / "suite.jsonl"
    paths["suite"].write_text("\n".join(json.dumps(x) for x in items) + "\n")
    return paths


def _json(capsys, argv):
    rc = main(argv)
    out = capsys.readouterr().out
    assert rc == 0, out
    return json.loads(out)


def test_logit_lens(ckpts, capsys):
    d = _json(capsys, ["logit-lens", str(ckpts["engram"]), str(ckpts["moe"]), "--corpus", str(ckpts["corpus"]),
                       "--json", "--device", "cpu", "--quiet", "--max-tokens", "200"])
    assert [m["name"] for m in d["models"]] == ["engram", "moe"]
    for m in d["models"]:
        assert set(m) >= {"name", "layers", "kl"} and len(m["kl"]) == len(m["layers"]) == 5
        assert abs(m["kl"][-1]) < 1e-4 and min(m["kl"]) >= -1e-6
    rc = main(["logit-lens", str(ckpts["engram"]), "--text", TEXT, "--device", "cpu", "--quiet"])
    table = capsys.readouterr().out
    assert rc == 0 and "KL" in table and re.search(r"^\s+4\s", table, re.M)


def test_cka_pair_and_noise(ckpts, capsys, tmp_path):
    d = _json(capsys, ["cka", str(ckpts["engram"]), str(ckpts["moe"]), "--corpus", str(ckpts["corpus"]), "--json",
                       "--device", "cpu", "--quiet", "--cka-batch", "32", "--noise", str(ckpts["moe_seed1"])])
    for k in ("layers_a", "layers_b", "cka", "soft_alignment", "argmax", "n_examples"):
        assert k in d
    assert len(d["cka"]) == len(d["layers_a"]) == 5 and len(d["cka"][0]) == 5
    assert d["n_examples"] > 32 and len(d["noise_band"]) == 5
    out = tmp_path / "cka.json"
    assert main(["cka", str(ckpts["engram"]), "--text", TEXT, "--out", str(out), "--device", "cpu", "--quiet",
                 "--cka-batch", "8"]) == 0
    self_cka = json.loads(out.read_text())
    assert all(abs(self_cka["cka"][i][i] - 1) < 1e-9 for i in range(5))


def test_cka_entities_and_positions(ckpts, capsys, tmp_path):
    probes = tmp_path / "ents.jsonl"
    lines = []
    for t in [TEXT, "The capital of France is Paris. New York is big."] * 4:
        ends = [m.end() - 1 for m in re.finditer(r"Alexander the Great|Milky Way|Princess of Wales|London|Paris|France|New York", t)]
        lines.append(json.dumps({"text": t, "entity_end_positions": ends}))
    probes.write_text("\n".join(lines))
    d = _json(capsys, ["cka", str(ckpts["engram"]), str(ckpts["moe"]), "--tokens", "entities", "--probes", str(probes),
                       "--json", "--device", "cpu", "--quiet", "--cka-batch", "8"])
    assert d["tokens"] == "entities" and d["n_examples"] == 4 * (4 + 3)


def test_char_offsets_to_token_positions():
    from engram_interp.analysis.common import char_to_token_positions

    model = tiny_model("moe")
    text = "Alexander the Great visited New York."
    ends = [text.index("Great") + 4, text.index("York") + 3]
    pos = char_to_token_positions(model, text, ends)
    strs = model.to_str_tokens(text)
    assert strs[pos[0]].endswith("at") and strs[pos[1]].endswith("ork")
    assert pos[0] < pos[1] < len(strs)


def test_gates_text_and_corpus(ckpts, capsys):
    d = _json(capsys, ["gates", str(ckpts["engram"]), "--text", "Alexander the Great", "--json", "--device", "cpu"])
    assert d["tokens"][0] == "<|bos|>" and set(d["gates"]) == {"1", "2"}
    assert len(d["gates"]["1"]) == len(d["tokens"]) and len(d["gates"]["1"][0]) == 1
    c = _json(capsys, ["gates", str(ckpts["engram"]), "--corpus", str(ckpts["corpus"]), "--json", "--device", "cpu",
                       "--quiet", "--min-count", "2"])
    assert c["top"]["1.0"] and c["branch_ranking"]


def test_ablate(ckpts, capsys):
    d = _json(capsys, ["ablate", str(ckpts["engram"]), str(ckpts["moe"]), "--suites", str(ckpts["suite"]), "--json",
                       "--device", "cpu", "--quiet", "--boot", "100"])
    s = d["suites"]["self"]
    assert set(s) >= {"full", "ablated", "retained", "ci"}
    assert s["full"] == 1.0
    moe = d["models"][1]["suites"]
    assert all(v["ablated"] == v["full"] for v in moe.values())
    rc = main(["ablate", str(ckpts["engram"]), "--suites", str(ckpts["suite"]), "--device", "cpu", "--quiet", "--boot", "50"])
    assert rc == 0 and "retained" in capsys.readouterr().out


def test_report_html_offline(ckpts, capsys, tmp_path):
    out = tmp_path / "rep"
    rc = main(["report", str(ckpts["engram"]), str(ckpts["moe"]), "--out", str(out), "--corpus", str(ckpts["corpus"]),
               "--suites", str(ckpts["suite"]), "--device", "cpu", "--quiet", "--cka-batch", "32", "--max-tokens", "300"])
    assert rc == 0
    html = (out / "report.html").read_text()
    assert "<script src=" not in html and "<link" not in html  # nothing fetched: no CDN, no external files
    assert "Plotly.newPlot" in html and len(html) > 1_000_000  # plotly.js inlined
    assert html.count("Plotly.newPlot") >= 6
    res = json.loads((out / "results.json").read_text())
    assert set(res) >= {"logit_lens", "cka", "gates", "ablation"}
    assert (out / "cka.csv").is_file() and (out / "ablation.csv").is_file()


def test_report_with_seeds_bands_and_findings_as_findings_md(ckpts, capsys, tmp_path):
    """`report A,A2 B,B2 --suites`: the seed bands equal LogitLens run on each model alone, the models
    in the figures are the first seeds, and the verdicts are compute_findings of the same numbers
    named by role (so they do not depend on the file names)."""
    from engram_interp.analysis import ablation_sensitivity, logit_lens
    from engram_interp.data.suite_files import read_suites
    from engram_interp.claims.findings import compute_findings

    engram2 = tmp_path / "engram_b.ckpt"
    save(tiny_model("engram", seed=5), engram2)
    a, b = f"{ckpts['engram']},{engram2}", f"{ckpts['moe']},{ckpts['moe_seed1']}"
    out = tmp_path / "rep"
    rc = main(["report", a, b, "--out", str(out), "--corpus", str(ckpts["corpus"]), "--suites", str(ckpts["suite"]),
               "--device", "cpu", "--quiet", "--cka-batch", "32", "--max-tokens", "300"])
    assert rc == 0
    printed = capsys.readouterr().out
    res = json.loads((out / "results.json").read_text())
    assert [m["name"] for m in res["logit_lens"]["models"]] == ["engram", "moe"]  # the figures: first seeds
    texts = [t for t in ckpts["corpus"].read_text().split("\n\n") if t.strip()]
    alone = {}
    for name, path in [("engram", ckpts["engram"]), ("engram_b", engram2), ("moe", ckpts["moe"]),
                       ("moe_seed1", ckpts["moe_seed1"])]:
        alone[name] = logit_lens({name: ei.load(path, device="cpu")}, texts, max_tokens=300).models[0].kl
    band = res["seed_bands"]["logit_lens"]["engram"]
    assert band["seeds"] == ["engram", "engram_b"]
    for layer, x in enumerate(band["kl"]):
        pair = [alone["engram"][layer], alone["engram_b"][layer]]
        assert x["low"] == pytest.approx(min(pair), abs=1e-6) and x["high"] == pytest.approx(max(pair), abs=1e-6)
    models = {n: ei.load(p, device="cpu") for n, p in [("engram", ckpts["engram"]), ("engram-seed1", engram2),
                                                       ("moe", ckpts["moe"]), ("moe-seed1", ckpts["moe_seed1"])]}
    lens = {"models": [dict(m, name=n) for n, m in zip(models, logit_lens(models, texts, max_tokens=300).to_dict()["models"])]}
    abl = ablation_sensitivity(models, read_suites([str(ckpts["suite"])])).to_dict()
    expected = compute_findings({"lens": lens, "ablate": abl})
    got = res["seed_findings"]
    assert [f["verdict"] for f in got] == [f.verdict for f in expected]
    assert got[0]["bands"]["engram"]["values"] == pytest.approx(expected[0].bands["engram"]["values"], abs=1e-6)
    html = (out / "report.html").read_text()
    assert "Across seeds" in html and "across seeds, LogitLens" in printed


def test_user_errors(ckpts, capsys, tmp_path):
    assert main(["gates", str(ckpts["moe"]), "--text", "hi", "--device", "cpu"]) == 2
    assert "no Engram" in capsys.readouterr().err
    assert main(["logit-lens", str(ckpts["engram"]), "--text", "   ", "--device", "cpu"]) == 2
    assert "empty" in capsys.readouterr().err
    assert main(["cka", str(ckpts["engram"]), str(tmp_path / "nope.ckpt"), "--device", "cpu"]) == 2
    capsys.readouterr()
    # a model with another tokenizer
    from engram_interp.model import EngramTransformer
    from engram_interp.testing import tiny_config, tiny_tokenizer
    from engram_interp.tokenizer import build_compression

    tok = tiny_tokenizer(300)
    other = EngramTransformer(tiny_config("moe", tok.get_vocab_size()), tokenizer=tok, compression=build_compression(tok))
    p = tmp_path / "other.ckpt"
    save(other, p)
    assert main(["cka", str(ckpts["engram"]), str(p), "--text", TEXT, "--device", "cpu", "--quiet"]) == 2
    assert "tokenizer" in capsys.readouterr().err


def test_top_level_help_lists_analysis_commands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for name in ("logit-lens", "cka", "gates", "ablate", "report"):
        assert name in out
