"""Every bad flag, bad path and bad output of the CLI: exit status 2 and ONE line on stderr, no
traceback, nothing overwritten, and the checks happen before any analysis runs."""

from __future__ import annotations

import json
import os

import pytest

import engram_interp.analysis as analysis
from engram_interp.cli import main


def run_cli(argv, capsys):
    """Run the CLI in-process. Returns (exit status, stdout, stderr)."""
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse usage errors
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc, err, needle):
    assert rc == 2, err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert "Traceback" not in err and "error:" in err, err
    assert needle in err, err


@pytest.fixture
def no_analysis(monkeypatch):
    """Make every analysis fail loudly: the errors below must come before any of them runs."""
    def boom(*a, **k):
        raise AssertionError("the analysis ran before the input check")

    for name in ("logit_lens", "logit_lens_tokens", "cka_analysis", "gate_corpus", "gate_map", "ablation_sensitivity"):
        monkeypatch.setattr(analysis, name, boom)


BAD_FLAGS = [
    (["logit-lens", "{ckpt}", "--max-tokens", "0"], "--max-tokens: must be >= 1"),
    (["logit-lens", "{ckpt}", "--max-tokens", "-5"], "--max-tokens: must be >= 1"),
    (["logit-lens", "{ckpt}", "--batch-size", "0"], "--batch-size: must be >= 1"),
    (["logit-lens", "{ckpt}", "--top-k", "0"], "--top-k: must be >= 1"),
    (["cka", "{ckpt}", "--k", "0"], "--k: must be >= 1"),
    (["cka", "{ckpt}", "--cka-batch", "0"], "--cka-batch: must be >= 1"),
    (["gates", "{ckpt}", "--top", "0"], "--top: must be >= 1"),
    (["gates", "{ckpt}", "--min-count", "0"], "--min-count: must be >= 1"),
    (["ablate", "{ckpt}", "--boot", "-1"], "--boot: must be >= 0"),
    (["ablate", "{ckpt}", "--max-items", "0"], "--max-items: must be >= 1"),
    (["report", "{ckpt}", "{ckpt}", "--out", "{tmp}/r", "--max-items", "0"], "--max-items: must be >= 1"),
    (["card", "{ckpt}", "--max-items", "0"], "--max-items: must be >= 1"),
    (["logit-lens", "{ckpt}", "--device", "mps"], "unsupported device 'mps'"),
    (["logit-lens", "{ckpt}", "--device", "meta"], "unsupported device 'meta'"),
    (["info", "{ckpt}", "--bogus"], "unrecognized arguments"),
    (["app", "--port", "0"], "--port: must be a port in 1..65535"),
    (["app", "--port", "70000"], "--port: must be a port in 1..65535"),
    (["train", "--recipe", "x.toml", "--max-minutes", "0"], "--max-minutes: must be a finite number > 0"),
    (["train", "--recipe", "x.toml", "--max-minutes", "nan"], "--max-minutes: must be a finite number > 0"),
    (["train", "--recipe", "x.toml", "--max-steps", "0"], "--max-steps: must be >= 1"),
    (["data", "build", "--text", "{tmp}/missing.txt"], "no such file"),
    (["data", "build", "--text", "{tmp}"], "is a directory"),
    (["plan", "--ngram", "0"], "--ngram: must be >= 1"),
]


@pytest.mark.parametrize("argv,needle", BAD_FLAGS, ids=[" ".join(a[:1] + a[2:]) for a, _ in BAD_FLAGS])
def test_bad_flag_exits_2_with_one_line(argv, needle, tiny_ckpts, tmp_path, capsys):
    argv = [a.format(ckpt=tiny_ckpts["engram"], tmp=tmp_path) for a in argv]
    rc, _, err = run_cli(argv, capsys)
    assert_one_line_error(rc, err, needle)


def test_bad_inputs_are_refused_before_any_analysis(tiny_ckpts, tmp_path, capsys, no_analysis):
    ckpt = tiny_ckpts["engram"]
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    (tmp_path / "ro").mkdir()
    report_dir = tmp_path / "old_report"
    report_dir.mkdir()
    (report_dir / "results.json").write_text("{}")
    long_text = "word " * 600  # the tiny models' context is 256 tokens
    cases = [
        (["logit-lens", ckpt, "--text", "hi", "--out", precious], "exists; pass --force"),
        (["logit-lens", ckpt, "--text", "hi", "--out", tmp_path], "is a folder"),
        (["cka", ckpt, "--text", "hi", "--out", str(tmp_path / "sub") + "/"], "is a folder"),
        (["gates", ckpt, "--text", "hi", "--out", precious / "x.json"], "is not a folder"),
        (["report", ckpt, ckpt, "--text", "hi", "--out", precious], "exists and is not a folder"),
        (["report", ckpt, ckpt, "--text", "hi", "--out", report_dir], "already holds a result"),
        (["logit-lens", ckpt, "--text", long_text, "--per-token"], "--per-token text"),
        (["report", ckpt, tiny_ckpts["moe"], "--text", "hi", "--out", tmp_path / "new", "--probe-text", long_text], "--probe-text"),
        (["info", str(ckpt) + "/"], "trailing slash"),
        (["info", tmp_path / "missing.ckpt"], "no such model"),
        (["logit-lens", tmp_path / "missing.ckpt", "--text", "hi"], "no such model"),
        (["logit-lens", ckpt, "--corpus", tmp_path / "missing.txt"], "no such corpus file"),
        (["app", tmp_path / "missing.ckpt", "--cache-dir", tmp_path / "cache"], "no such checkpoint"),
        (["data", "suites", "--only", "bogus", "--out", tmp_path / "suites"], "unknown suite(s) 'bogus'"),
        (["ablate", ckpt, "--suites", tmp_path / "missing.jsonl"], "no such suite file"),
    ]
    for argv, needle in cases:
        rc, _, err = run_cli(argv, capsys)
        assert_one_line_error(rc, err, needle)
    assert precious.read_text() == "keep me"
    assert (report_dir / "results.json").read_text() == "{}"
    assert not (tmp_path / "new").exists() or not any((tmp_path / "new").iterdir())


def test_fifo_is_refused_without_blocking(tmp_path, capsys):
    fifo = tmp_path / "x.ckpt"
    os.mkfifo(fifo)
    rc, _, err = run_cli(["info", fifo], capsys)
    assert_one_line_error(rc, err, "is a FIFO")
    rc, _, err = run_cli(["logit-lens", "checkpoints/engram.ckpt", "--corpus", fifo], capsys)
    assert_one_line_error(rc, err, "is a FIFO")


def test_out_force_replaces_and_json_is_strict(tiny_ckpts, tmp_path, capsys):
    out = tmp_path / "lens.json"
    out.write_text("old")
    rc, _, err = run_cli(["logit-lens", tiny_ckpts["engram"], "--text", "Alexander the Great", "--out", out,
                          "--force", "--quiet"], capsys)
    assert rc == 0, err
    doc = json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"bare {c} in the JSON output"))
    assert doc["models"][0]["n_tokens"] > 0
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # the temporary file was renamed


def test_plan_bad_tokenizer_is_one_line(tmp_path, capsys):
    from engram_interp.testing import tiny_config

    cfg = tmp_path / "moe.json"
    cfg.write_text(tiny_config("moe").to_json())
    bad = tmp_path / "tokenizer.json"
    bad.write_text('{"version": "1.0", "model": ')
    rc, _, err = run_cli(["plan", "--config", cfg, "--tokenizer", bad], capsys)
    assert_one_line_error(rc, err, "not a valid tokenizer.json")


def test_ablate_defaults_to_the_bundled_suites():
    from engram_interp.cli import build_parser
    from engram_interp.data.suite_files import DEFAULT_SUITES

    args = build_parser().parse_args(["ablate", "x.ckpt"])
    assert args.suites == [str(DEFAULT_SUITES)] and (DEFAULT_SUITES / "facts_world.jsonl").is_file()
