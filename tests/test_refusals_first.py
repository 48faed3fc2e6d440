"""Refusals come before the work (issue 22 item 4): every check that can fail (one tokenizer where
models are compared, one residual stream where a command needs it, Engram layers where a command
reads them, input files) runs before the first forward pass and the first progress bar, and the
refusal is the one line on stderr: the libraries' warnings are held until the work starts."""

from __future__ import annotations

import json
import logging
import warnings

import pytest
import torch

import engram_interp as ei
from engram_interp.cli import main
from engram_interp.errors import EngramInterpError
from engram_interp.interface import InterpModel


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from engram_interp.backends.testing import tiny_qwen4_exp_folder
    from engram_interp.model import EngramTransformer
    from engram_interp.testing import tiny_config, tiny_model, tiny_tokenizer
    from engram_interp.tokenizer import build_compression

    d = tmp_path_factory.mktemp("refuse")
    paths = {k: str(ei.save(tiny_model(k), d / f"{k}.ckpt")) for k in ("engram", "moe", "dense")}
    tok = tiny_tokenizer(300)  # another tokenizer: ids mean other strings
    other = EngramTransformer(tiny_config("engram", tok.get_vocab_size()), tokenizer=tok, compression=build_compression(tok))
    paths["other"] = str(ei.save(other.eval(), d / "other.ckpt"))
    paths["qwen"] = str(tiny_qwen4_exp_folder(d / "qwen"))  # two residual streams (hc_count=2)
    suite = d / "suite.jsonl"
    suite.write_text(json.dumps({"id": "0", "suite": "s", "prompt": "The capital of France is", "answer": " Paris",
                                 "candidates": [" Paris", " Rome"]}) + "\n")
    paths["suite"] = str(suite)
    paths["dir"] = d
    return paths


@pytest.fixture
def forwards():
    """How many forward passes of a model (any backend) ran."""
    n = [0]

    def count(module, args):
        if isinstance(module, InterpModel):
            n[0] += 1

    handle = torch.nn.modules.module.register_module_forward_pre_hook(count)
    yield n
    handle.remove()


TEXT = ["--text", "the cat sat on the", "--target", " the"]
CASES = {  # name: (argv with {placeholders}, what the one line says)
    "cka tokenizers": (["cka", "{engram}", "{other}"], "different tokenizers"),
    "cka control tokenizer": (["cka", "{engram}", "{moe}", "--control", "{other}"], "different tokenizers"),
    "report tokenizers": (["report", "{engram}", "{other}", "--out", "{dir}/r1"], "different tokenizers"),
    "report locate without Engram": (["report", "{moe}", "--locate", "the cat| the", "--out", "{dir}/r2"],
                                     "moe has no Engram layers"),
    "report attribution file": (["report", "{engram}", "--attribution", "{dir}/missing.jsonl", "--out", "{dir}/r3"],
                                "missing.jsonl"),
    "report attribution two streams": (["report", "{qwen}", "--attribution", "{suite}", "--out", "{dir}/r4"],
                                       "2-stream model"),
    "attribute two streams": (["attribute", "{qwen}", *TEXT], "2-stream model"),
    "attribute per-expert on a dense second model": (["attribute", "{engram}", "{dense}", *TEXT, "--per-expert"],
                                                     "dense has no MoE layers"),
    "attribute target of the second model": (["attribute", "{engram}", "{other}", "--text", "the cat",
                                              "--target", " By"], "is 3 tokens"),
    "ablate without any Engram model": (["ablate", "{moe}", "--suites", "{suite}"], "no model has Engram layers"),
    "gates without Engram": (["gates", "{moe}"], "moe has no Engram layers"),
    "locate without Engram": (["locate", "{dense}", "--prompt", "the cat", "--target", " the"],
                              "dense has no Engram layers"),
    "memory without Engram": (["memory", "{moe}"], "no Engram layers"),
    "patch prompts of different lengths": (["patch", "{engram}", "--clean", "the cat", "--corrupt", "the cat sat on",
                                            "--target", " the"], "equal length"),
    "routing by a gate of another tokenizer": (["routing", "{moe}", "--gate-from", "{other}", "--text", "the cat sat"],
                                               "different tokenizers"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_refusal_is_one_line_before_any_forward(case, models, forwards, capfd):
    argv, says = CASES[case]
    argv = [a.format(**models) for a in argv] + ["--device", "cpu"] * (argv[0] != "memory")
    capfd.readouterr()
    rc = main(argv)
    err = capfd.readouterr().err
    assert rc == 2, err
    assert forwards[0] == 0, f"{forwards[0]} forward pass(es) ran before the refusal"
    lines = err.strip().splitlines()
    assert len(lines) == 1, err  # no progress bar, no library warning before it
    assert lines[0].startswith(f"engram-interp {argv[0]}: error: ") and says in lines[0], lines[0]


def test_a_refusal_after_forwards_is_one_line_too(models, forwards, capfd):
    """A refusal that needs the model's output (the two prompts give the same metric) comes after two
    forward passes of the two-stream model, whose kernels warn on their first use: the warnings are
    held and dropped, so the refusal is still the one line."""
    logging.Logger.warning_once.cache_clear()  # transformers warns once per process: make it warn again
    capfd.readouterr()
    rc = main(["patch", models["qwen"], "--clean", "the cat sat", "--corrupt", "the cat sat", "--target", " the",
               "--device", "cpu"])
    err = capfd.readouterr().err
    assert rc == 2 and forwards[0] == 2, err
    assert err.strip().splitlines() == [err.strip()] and "same metric" in err


def test_held_warnings_print_when_the_work_starts_and_drop_on_a_refusal():
    import io

    from engram_interp.analysis.progress import hold_library_logs, progress_bar, warnings_held

    import transformers  # noqa: F401  (the logger held is a library's: it must be imported)

    root = logging.getLogger("transformers")
    printed = io.StringIO()
    mine = logging.StreamHandler(printed)  # stands for transformers' own handler (its stderr is pytest's)
    root.addHandler(mine)
    level = root.level  # earlier tests may have turned transformers' verbosity down (quiet_transformers)
    root.setLevel(logging.WARNING)
    log = logging.getLogger("transformers.some.module")
    shown: list[str] = []  # what Python's warnings would print (pytest records them otherwise)
    keep_filters = warnings.catch_warnings()
    keep_filters.__enter__()
    warnings.simplefilter("always")
    warnings.showwarning = lambda message, *a, **k: shown.append(str(message))
    try:
        with pytest.raises(EngramInterpError):
            with warnings_held():
                hold_library_logs()
                log.warning("a transformers warning")
                warnings.warn("a python warning")
                raise EngramInterpError("refused")
        assert printed.getvalue() == "" and shown == []
        with warnings_held():
            hold_library_logs()
            log.warning("held until the bar")
            warnings.warn("a held python warning")
            assert printed.getvalue() == "" and shown == []
            progress_bar(total=1, disable=True).close()  # the work starts: what was held prints now
            assert printed.getvalue() == "held until the bar\n"
            assert shown == ["a held python warning"]
            log.warning("after the release")
            assert printed.getvalue().endswith("after the release\n")
        with warnings_held():
            hold_library_logs()
            log.warning("printed at the end of a command without a bar")
        assert printed.getvalue().endswith("printed at the end of a command without a bar\n")
        assert mine in root.handlers and all(type(h).__name__ != "_Keep" for h in root.handlers)
    finally:
        root.removeHandler(mine)
        root.setLevel(level)
        keep_filters.__exit__(None, None, None)
