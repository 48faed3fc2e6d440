"""The model-randomisation check (issue 20): on models that learned nothing (the untrained twins of the
bundled Engram / MoE / Engram-null set, a tiny random Qwen4-Exp folder) the report, the commands'
``--json`` and the app's Overview claim nothing, every finding is a record carrying its controls, and
the Overview's verdict table equals FINDINGS.md for the same numbers."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

import engram_interp as ei
from engram_interp.cli import main
from engram_interp.claims.verdict import VERDICTS

ROOT = Path(__file__).resolve().parents[1]
CLAIMS = ("reproduced", "aligns with deeper", "explains more of the gate", "drop established")
RECORD_KEYS = {"finding", "verdict", "sentence", "effect", "interval", "controls"}


def _claims_nothing(found: list[dict]) -> None:
    assert found, "no finding was stated"
    for f in found:
        assert RECORD_KEYS <= set(f) and f["verdict"] in VERDICTS
        assert f["verdict"] in ("not established", "not testable"), f["sentence"]
        words = re.sub(r"not (reproduced|established)", "", f["sentence"])
        assert not any(c in words for c in CLAIMS), f["sentence"]


@pytest.fixture(scope="module")
def random_bundled(tmp_path_factory) -> dict[str, Path]:
    """The bundled engram / moe / engram-null architectures with every weight re-drawn at random."""
    d = tmp_path_factory.mktemp("random-bundled")
    out = {}
    for i, arm in enumerate(("engram", "moe", "engram-null")):
        model = ei.load(ROOT / "checkpoints" / f"{arm}.ckpt", device="cpu")
        out[arm] = ei.save(ei.untrained_twin(model, 100 + i), d / f"r-{arm}.ckpt")
    suites = d / "suites"
    suites.mkdir()
    for name in ("entities", "facts_world", "agreement"):
        lines = (ROOT / "probes" / f"{name}.jsonl").read_text().splitlines()[:20]
        (suites / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    out["suites"] = suites
    return out


def test_report_on_a_randomly_redrawn_bundled_set_claims_nothing(random_bundled, tmp_path, capsys):
    r = random_bundled
    out = tmp_path / "rep"
    rc = main(["report", str(r["engram"]), str(r["moe"]), str(r["engram-null"]), "--out", str(out), "--suites",
               str(r["suites"]), "--corpus", str(ROOT / "probes" / "texts" / "heldout.txt"), "--max-tokens", "600",
               "--max-items", "20", "--cka-batch", "64", "--device", "cpu", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    res = json.loads((out / "results.json").read_text())
    found = res["findings"]
    _claims_nothing(found)
    kinds = {f["finding"].split(":")[0] for f in found}
    assert {"logit-lens early-half mean KL", "cka soft alignment", "gate selectivity (omega^2)",
            "ablation retained %"} <= kinds
    # the twin (of the random engram model) is measured and named in every finding that has controls
    assert "r-engram~twin" not in [m["name"] for m in res["logit_lens"]["models"]]  # the figures show A, B, C
    assert res["cka"]["references"]["twin"]["name"] == "r-engram~twin"
    for f in found:
        if f["controls"]:
            assert "untrained twin" in {c["name"] for c in f["controls"]}, f["sentence"]
    html = (out / "report.html").read_text()
    assert all(f["verdict"] in html for f in found)
    # chance is measured: the twin's full accuracy and the candidate prior next to the uniform guess
    abl = [f for f in found if f["finding"].startswith("ablation")]
    assert all("untrained twin" in f["sentence"] and "candidate prior" in f["sentence"] for f in abl)


def test_report_on_a_tiny_random_qwen4_exp_claims_nothing(tmp_path, capsys):
    from engram_interp.backends.testing import tiny_qwen4_exp_folder

    folder = tiny_qwen4_exp_folder(tmp_path / "q")
    suite = tmp_path / "suite.jsonl"
    suite.write_text("".join(json.dumps({"id": f"a{i}", "suite": "agreement", "prompt": p, "answer": a,
                                         "candidates": [" is", " are"]}) + "\n"
                             for i, (p, a) in enumerate([("The dog", " is"), ("The dogs", " are"),
                                                         ("A cat", " is"), ("Two cats", " are")] * 3)))
    out = tmp_path / "rep"
    rc = main(["report", str(folder), "--out", str(out), "--suites", str(suite), "--max-tokens", "300",
               "--cka-batch", "32", "--device", "cpu", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    found = json.loads((out / "results.json").read_text())["findings"]
    _claims_nothing(found)


def test_command_json_carries_the_same_records(random_bundled, capsys):
    r = random_bundled
    common = ["--device", "cpu", "--quiet", "--json", "--twin", "--max-tokens", "400",
              "--corpus", str(ROOT / "probes" / "texts" / "heldout.txt")]
    assert main(["logit-lens", str(r["engram"]), str(r["moe"]), str(r["engram-null"]), *common]) == 0
    lens = json.loads(capsys.readouterr().out)
    assert [m["name"] for m in lens["models"]] == ["r-engram", "r-moe", "r-engram-null", "r-engram~twin"]
    _claims_nothing(lens["findings"])
    assert main(["gates", str(r["engram"]), *common]) == 0
    gates = json.loads(capsys.readouterr().out)
    assert gates["twin"]["name"] == "r-engram~twin"
    _claims_nothing(gates["findings"])
    assert main(["cka", str(r["engram"]), str(r["moe"]), "--control", str(r["engram-null"]), "--cka-batch", "64",
                 *common]) == 0
    cka = json.loads(capsys.readouterr().out)
    assert set(cka["references"]) == {"control", "twin"}
    _claims_nothing(cka["findings"])


def test_overview_on_untrained_twins_claims_nothing_and_agrees_with_findings_md(tiny_ckpts, tmp_path, monkeypatch):
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    from engram_interp.claims.findings import compute_findings, load_measurements

    d = tmp_path / "twins"
    d.mkdir()
    paths = [ei.save(ei.untrained_twin(ei.load(tiny_ckpts[k], device="cpu"), 7), d / f"t-{k}.ckpt")
             for k in ("engram", "moe", "engram-null")]
    probes = tmp_path / "probes"
    probes.mkdir()
    (probes / "facts.jsonl").write_text('{"prompt": "The capital of France is", "answer": " Paris", '
                                        '"candidates": [" Paris", " Rome"]}\n' * 4)
    monkeypatch.setenv("ENGRAM_INTERP_APP_CKPTS", os.pathsep.join(map(str, paths)))
    monkeypatch.setenv("ENGRAM_INTERP_APP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ENGRAM_INTERP_PROBES", str(probes))
    monkeypatch.chdir(ROOT)
    at = AppTest.from_file(str(ROOT / "app" / "Home.py"), default_timeout=180).run()
    at.button(key="overview-compute").click().run()
    assert not at.exception, [e.value for e in at.exception]
    lines = [str(m.value) for m in at.markdown if "Verdict:" in str(m.value)]
    assert lines and all(("not established" in x or "not testable" in x) for x in lines), lines
    assert any("untrained twin" in x for x in lines)  # the twins were computed and stated against
    # the Overview's verdicts (one paragraph per finding) and FINDINGS.md are the same objects for the same numbers
    shown = [str(m.value) for m in at.markdown]
    found = compute_findings(load_measurements(ROOT / "checkpoints" / "measurements"))
    heads = [next(x for x in shown if x.startswith(f"**{f.title}**: ")) for f in found]
    assert [h[len(f"**{f.title}**: "):].split("  \n")[0] for h, f in zip(heads, found)] == [f.verdict for f in found]
    assert list(at.dataframe[-1].value.columns) == ["arm", "mean", "min", "max", "seeds"]  # the last finding's bands
    md = (ROOT / "checkpoints" / "FINDINGS.md").read_text()
    for f in found:
        assert f"| {f.title} | **{f.verdict}** |" in md
