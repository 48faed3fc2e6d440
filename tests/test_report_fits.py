"""The report fits its models (issue 22 item 3): a model alone gets only the sections and sentences
that apply to it (no Engram-null or alignment findings from CKA of a model against itself), the
LogitLens figures turn logarithmic where the layers' KL spans orders of magnitude, and the memory
table's corpus budget is the one default of engram_interp/defaults.py everywhere."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from engram_interp.analysis.logit_lens import LensCurve, LogitLensResult, TokenLens
from engram_interp.cli import build_parser, main
from engram_interp.defaults import DEFAULTS
from engram_interp.figures import cka_figure, kl_figure, shared_kl_log, token_lens_figure

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "probes" / "texts" / "heldout.txt"


def _visible_text(html: str) -> str:
    """The report's text as a reader sees it: scripts (plotly.js, figure JSON) and tags removed."""
    import html as _html

    return _html.unescape(re.sub(r"<[^>]+>", " ", re.sub(r"<script.*?</script>", " ", html, flags=re.S)))


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    from engram_interp.backends.testing import tiny_llama_folder

    return tiny_llama_folder(tmp_path_factory.mktemp("llama") / "llama")


def test_one_dense_model_gets_no_engram_boilerplate_and_no_self_cka_result(llama, tmp_path, capfd):
    out = tmp_path / "rep"
    rc = main(["report", str(llama), "--out", str(out), "--corpus", str(CORPUS), "--max-tokens", "200",
               "--cka-batch", "32", "--device", "cpu", "--quiet"])
    printed = capfd.readouterr()
    assert rc == 0, printed.err
    res = json.loads((out / "results.json").read_text())
    assert "findings" not in res  # nothing to state about one dense model: no verdict table
    assert set(res) == {"source", "logit_lens", "token_lens", "cka"}
    assert res["cka"]["references"] == {}  # no twin / control curves against A itself
    text = _visible_text((out / "report.html").read_text())
    for phrase in ("Engram-null", "control", "Findings", "Verdict", "a_j", "soft alignment", "diagonal mean"):
        assert phrase not in text, phrase
    assert "CKA of llama's layers with each other" in text
    # the summary describes A's layers (adjacent-layer CKA), never the 1.000 its diagonal is by construction
    assert "diagonal mean" not in printed.out
    line = next(l for l in printed.out.splitlines() if l.startswith("cka"))
    m = res["cka"]["cka"]
    adj = sum(m[i][i + 1] for i in range(len(m) - 1)) / (len(m) - 1)
    assert f"adjacent-layer CKA mean {adj:.3f}" in line


def test_engram_model_alone_states_no_alignment_finding_against_itself(tmp_path, capfd):
    import engram_interp as ei
    from engram_interp.testing import tiny_model

    path = ei.save(tiny_model("engram"), tmp_path / "engram.ckpt")
    out = tmp_path / "rep"
    rc = main(["report", str(path), "--out", str(out), "--corpus", str(CORPUS), "--max-tokens", "200",
               "--memory-tokens", "150", "--cka-batch", "32", "--device", "cpu", "--quiet"])
    printed = capfd.readouterr()
    assert rc == 0, printed.err
    res = json.loads((out / "results.json").read_text())
    kinds = [f["finding"].split(":")[0] for f in res["findings"]]
    assert not any(k.startswith("cka") for k in kinds), kinds  # CKA of A against A is no finding
    assert any(k.startswith("logit-lens") for k in kinds) and any(k.startswith("gate") for k in kinds)
    assert res["memory"]["n_positions"] == 150  # --memory-tokens, not --max-tokens, sizes the memory section
    assert "diagonal mean" not in printed.out and "adjacent-layer CKA mean" in printed.out
    # the cka command alike: A's layers against each other state no alignment finding
    assert main(["cka", str(path), "--corpus", str(CORPUS), "--max-tokens", "200", "--cka-batch", "32", "--json",
                 "--device", "cpu", "--quiet"]) == 0
    cka = json.loads(capfd.readouterr().out)
    assert cka["name_a"] == cka["name_b"] and cka["findings"] == []


def _lens(kl: list[float]) -> LogitLensResult:
    return LogitLensResult([LensCurve("m", list(range(len(kl))), kl, [0.01] * len(kl), [1.0] * len(kl), 100)])


def test_kl_axis_turns_logarithmic_when_layers_span_more_than_30x():
    wide = kl_figure(_lens([112.0, 4.0, 1.5, 0.6, 0.0]))  # SmolLM2-like: layer 0 at 112 nats
    assert wide.layout.yaxis.type == "log" and wide.layout.yaxis.dtick == 1  # decade ticks only
    narrow = kl_figure(_lens([2.0, 1.0, 0.5, 0.0]))  # 4x: a linear axis reads fine
    assert narrow.layout.yaxis.type in (None, "linear")
    # 30x is the boundary; the final point (KL 0 by construction) does not count
    assert kl_figure(_lens([30.0, 1.0, 0.0])).layout.yaxis.type in (None, "linear")
    assert kl_figure(_lens([31.0, 1.0, 0.0])).layout.yaxis.type == "log"


def _token_lens(name: str, rows: list[list[float]]) -> TokenLens:
    n = len(rows[0])
    return TokenLens(name, [f"t{i}" for i in range(n)], list(range(len(rows))), rows, rows,
                     [[[("x", 0.5)]] * n for _ in rows])


def test_per_token_heatmap_uses_a_log_colour_scale_labelled_in_nats():
    rows = [[150.0, 90.0, 120.0], [2.0, 0.5, 1.0], [0.3, 0.2, 0.1], [0.0, 0.0, 0.0]]
    t = _token_lens("m", rows)
    fig = token_lens_figure(t, zmax=150.0)
    hm = fig.data[0]
    floor = 150.0 * 1e-4
    assert hm.z[0][0] == pytest.approx(math.log10(150.0)) and hm.z[1][1] == pytest.approx(math.log10(0.5))
    assert hm.z[3][0] == pytest.approx(math.log10(floor))  # KL 0 sits at the bottom of the scale
    assert hm.zmin == pytest.approx(math.log10(floor)) and hm.zmax == pytest.approx(math.log10(150.0))
    # colour-bar ticks are decades written in nats, placed at their log10
    ticks = dict(zip(hm.colorbar.ticktext, hm.colorbar.tickvals))
    assert ticks["1"] == pytest.approx(0.0) and ticks["100"] == pytest.approx(2.0) and ticks["0.1"] == pytest.approx(-1.0)
    assert hm.text[1][1] == "0.500" and "%{text}" in hm.hovertemplate  # hover shows KL itself, not its log
    flat = token_lens_figure(_token_lens("m", [[2.0, 1.0], [1.0, 0.5], [0.0, 0.0]]))
    assert [list(r) for r in flat.data[0].z] == [[2.0, 1.0], [1.0, 0.5], [0.0, 0.0]] and flat.data[0].zmin == 0
    # side by side: one choice for every model (the wide one decides)
    assert shared_kl_log([t, _token_lens("n", [[2.0, 1.0], [1.0, 0.5], [0.0, 0.0]])])


def test_cka_figure_of_a_model_against_itself_overlays_nothing():
    from engram_interp.analysis.cka_models import CKAResult

    m = [[1.0, 0.8], [0.8, 1.0]]
    own = CKAResult("a", "a", [0, 1], [0, 1], m, m, m, [0.4, 0.6], [[0.4, 0.6], [0.4, 0.6]], [0, 1], 1, 50, 2, 25, "all")
    fig = cka_figure(own)
    assert len(fig.data) == 1 and "with each other" in fig.layout.title.text
    pair = cka_figure(CKAResult("a", "b", *[getattr(own, f) for f in ("layers_a", "layers_b", "cka", "ci_low", "ci_high",
                                                                      "soft_alignment", "soft_alignment_ci", "argmax",
                                                                      "k", "n_examples", "n_batches", "batch_size",
                                                                      "tokens")]))
    assert len(pair.data) > 1  # A vs B keeps its diagonal, alignment and argmax overlays


def _default(command: str, dest: str):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return next(a.default for a in sub._actions if a.dest == dest)


def test_one_memory_budget_for_cli_report_app_and_measure_sh():
    n = DEFAULTS.memory_tokens
    assert _default("memory", "max_tokens") == n
    assert _default("report", "memory_tokens") == n
    assert _default("locate", "max_tokens") == n
    shell = subprocess.run([sys.executable, "-m", "engram_interp.defaults"], capture_output=True, text=True,
                           check=True).stdout
    assert f"MEMORY_TOKENS={n}" in shell.split()
    sh = (ROOT / "checkpoints" / "measure.sh").read_text()
    memory_lines = [l for l in sh.splitlines() if "$E memory" in l]
    assert len(memory_lines) == 2 and all("--max-tokens $MEMORY_TOKENS" in l for l in memory_lines)
    assert "MEMORY_TOKENS=${MEMORY_TOKENS:-$D_MEMORY_TOKENS}" in sh
    # the app's Memory page keys its cache and its corpus pass on the same default
    page = (ROOT / "app" / "pages" / "6_Memory.py").read_text()
    assert re.search(r'PARAMS = \{"max_tokens": DEFAULTS\.memory_tokens', page)
