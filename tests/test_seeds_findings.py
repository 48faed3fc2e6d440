"""Across-seed bands, seed grouping of checkpoint arguments, the findings' verdict rule, and
checkpoints/FINDINGS.md == what `engram-interp findings` makes of checkpoints/measurements/."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from engram_interp.analysis.seeds import arm_of, band, bands, group_by_arm, separated
from engram_interp.commands._common import arm_groups
from engram_interp.errors import EngramInterpError
from engram_interp.claims.findings import compute_findings, load_measurements, render_markdown

ROOT = Path(__file__).resolve().parents[1]


def test_band_matches_hand_computation():
    b = band([1.0, 2.0, None, 3.0, float("nan")])
    assert (b.n, b.mean, b.low, b.high) == (3, 2.0, 1.0, 3.0)
    assert b.sd == pytest.approx(1.0)
    half = 4.303 / math.sqrt(3)  # t(0.975, df=2) * sd / sqrt(n)
    assert b.ci == pytest.approx((2.0 - half, 2.0 + half), abs=1e-3)
    one = band([0.5])
    assert (one.n, one.sd, one.ci, one.low, one.high) == (1, 0.0, None, 0.5, 0.5)
    assert band([None]) is None
    per_layer = bands([[1.0, 4.0], [3.0, 8.0]])
    assert [x.mean for x in per_layer] == [2.0, 6.0] and per_layer[1].low == 4.0


def test_arm_names_and_separation():
    assert arm_of("moe-seed12") == "moe" and arm_of("engram-null") == "engram-null"
    assert arm_of("engram-null-seed2") == "engram-null" and arm_of("seedless") == "seedless"
    assert group_by_arm(["engram", "moe", "engram-seed1"]) == {"engram": ["engram", "engram-seed1"], "moe": ["moe"]}
    assert separated(band([3, 4]), band([1, 2])) == 1 and separated(band([1, 2]), band([3, 4])) == -1
    assert separated(band([1, 3]), band([2, 4])) == 0 and separated(None, band([1])) == 0


def test_arm_groups_expand_seeds(tmp_path):
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    for p in [tmp_path / "moe.ckpt", seeds / "moe-seed2.ckpt", seeds / "moe-seed10.ckpt", seeds / "moe-seedx.ckpt",
              seeds / "moe-other-seed1.ckpt", tmp_path / "x.ckpt"]:
        p.write_bytes(b"")
    groups = arm_groups([str(tmp_path / "moe.ckpt"), f"{tmp_path / 'x.ckpt'},{tmp_path / 'moe.ckpt'}"], str(seeds))
    assert groups[0] == ("moe", [str(tmp_path / "moe.ckpt"), str(seeds / "moe-seed2.ckpt"), str(seeds / "moe-seed10.ckpt")])
    assert groups[1][0] == "x" and groups[1][1][:2] == [str(tmp_path / "x.ckpt"), str(tmp_path / "moe.ckpt")]
    with pytest.raises(EngramInterpError, match="no such model"):
        arm_groups([str(tmp_path / "missing.ckpt")])
    with pytest.raises(EngramInterpError, match="--seeds"):
        arm_groups([str(tmp_path / "moe.ckpt")], str(tmp_path / "nowhere"))


def _lens(kl_early: dict[str, float], twin: float | None = 0.9) -> dict:
    """A logit_lens.json whose layer points 1..4 all hold the given KL (point 0 and 5..8 fixed); ``twin``:
    the untrained twin's early KL (None: no twin measured)."""
    curves = dict(kl_early) | ({"engram~twin": twin} if twin is not None else {})
    return {"models": [{"name": n, "layers": list(range(9)), "kl": [2.0, v, v, v, v, 0.1, 0.1, 0.1, 0.0]}
                       for n, v in curves.items()]}


def _verdict(m: dict, key: str) -> str:
    return {f.key: f for f in compute_findings(m)}[key].verdict


def test_lens_verdicts_follow_the_rule():
    two = {"engram": 0.4, "engram-seed1": 0.45, "moe": 0.6, "moe-seed1": 0.65, "engram-null": 0.58, "engram-null-seed1": 0.62}
    f = {x.key: x for x in compute_findings({"lens": _lens(two)})}["logit_lens"]
    assert f.verdict == "reproduced"
    assert f.bands["engram"]["mean"] == pytest.approx(0.425) and f.bands["moe"]["values"] == [0.6, 0.65]
    overlap = dict(two, **{"engram-seed1": 0.61})
    assert _verdict({"lens": _lens(overlap)}, "logit_lens") == "not established"
    worse = {k: (0.9 + i * 0.01 if k.startswith("engram") and "null" not in k else v) for i, (k, v) in enumerate(two.items())}
    assert _verdict({"lens": _lens(worse, twin=0.5)}, "logit_lens") == "not reproduced"
    one = {"engram": 0.1, "moe": 0.9, "engram-null": 0.9}  # a large gap, but one seed each
    f1 = {x.key: x for x in compute_findings({"lens": _lens(one)})}["logit_lens"]
    assert f1.verdict == "not established" and "fewer than 2 seeds" in f1.reason
    # the untrained twin is required, and a twin as low as Engram covers the effect
    f2 = {x.key: x for x in compute_findings({"lens": _lens(two, twin=None)})}["logit_lens"]
    assert f2.verdict == "not established" and "untrained twin" in f2.reason
    assert _verdict({"lens": _lens(two, twin=0.42)}, "logit_lens") == "not established"
    assert f.bands["untrained twin"]["mean"] == pytest.approx(0.9)


def _cka(name_a: str, pairs: list[tuple[str, str, list[float]]], twin: list[float] | None = None) -> dict:
    refs = {"twin": {"name": name_a + "~twin", "soft_alignment": twin, "soft_alignment_ci": [twin, twin], "k": 2}} if twin else {}
    return {"name_a": name_a, "name_b": "moe", "soft_alignment": pairs[0][2], "engram_layers_a": [1, 3],
            "seed_pairs": [{"a": a, "b": b, "soft_alignment": sa} for a, b, sa in pairs], "references": refs}


def test_cka_counts_independent_seeds_and_uses_the_null_control():
    up = [0.0, 3.0, 2.5, 5.0, 4.0, 5.0, 6.0, 7.0, 8.0]  # shift at layers 1, 3: (2 + 2) / 2
    up2 = [0.0, 3.1, 2.5, 5.1, 4.0, 5.0, 6.0, 7.0, 8.0]  # a second seed: (2.1 + 2.1) / 2
    flat = [0.0, 1.2, 2.0, 3.1, 4.0, 5.0, 6.0, 7.0, 8.0]
    m = {"cka": _cka("engram", [("engram", "moe", up), ("engram-seed1", "moe-seed1", up2)], twin=flat),
         "cka_null": _cka("engram-null", [("engram-null", "moe", flat), ("engram-null-seed1", "moe-seed1", flat)])}
    f = {x.key: x for x in compute_findings(m)}["cka"]
    assert f.verdict == "reproduced" and f.bands["engram"]["mean"] == pytest.approx(2.05)
    assert f.bands["engram-null"]["mean"] == pytest.approx(0.15)
    assert f.bands["untrained twin"]["mean"] == pytest.approx(0.15)
    # a twin that shifts as much as Engram (architecture alone) covers it
    m_twin = dict(m, cka=_cka("engram", [("engram", "moe", up), ("engram-seed1", "moe-seed1", up2)], twin=up))
    assert _verdict(m_twin, "cka") == "not established"
    assert _verdict(dict(m, cka=_cka("engram", [("engram", "moe", up), ("engram-seed1", "moe-seed1", up2)])), "cka") \
        == "not established"  # no twin measured
    # one Engram seed against two MoE seeds is two pairs but one independent Engram seed
    m["cka"] = _cka("engram", [("engram", "moe", up), ("engram", "moe-seed1", up)])
    assert _verdict(m, "cka") == "not established"
    m["cka"] = _cka("engram", [("engram", "moe", flat), ("engram-seed1", "moe-seed1", flat)])
    assert _verdict(m, "cka") == "not established"  # the null control covers it


def _ablate(reading: float, facts: float, retained_reading: float, retained_facts: float,
            kv: float | None = None, null_diff: float | None = None) -> dict:
    """Zero-ablation JSON of two seeds per arm: ``reading`` / ``facts`` full accuracies, the Engram
    seeds' retained %; ``kv`` adds a kv_recall suite (retained as reading); ``null_diff`` adds
    Engram-null seeds whose reading - facts retained difference is that many points."""
    def suites(arm: str, jitter: float):  # seeds differ a little: a band of identical seeds carries no claim
        r, f = (retained_reading, retained_facts) if arm == "engram" else (100.0, 100.0)
        if arm == "engram-null":
            r, f = 100.0 + null_diff, 100.0
        r += jitter
        out = {"reading": {"full": reading, "retained": r}, "facts_world": {"full": facts, "retained": f},
               "facts_real": {"full": facts, "retained": f}}
        if kv is not None:
            out["kv_recall"] = {"full": kv, "retained": r}
        return out
    arms = ("engram", "moe") + (("engram-null",) if null_diff is not None else ())
    twin = {"reading": {"full": 0.25, "retained": 100.0}, "facts_world": {"full": 0.25, "retained": 100.0},
            "facts_real": {"full": 0.25, "retained": 100.0}, "kv_recall": {"full": 0.25, "retained": 100.0}}
    return {"models": [{"name": a + s, "suites": suites(a, j)} for a in arms for s, j in (("", 0.0), ("-seed1", 1.0))],
            "twin": {"models": [{"name": "engram~twin", "suites": twin}]}}


def test_ablation_is_testable_only_when_the_full_models_pass():
    f = {x.key: x for x in compute_findings({"ablate": _ablate(0.26, 0.12, 77.0, 117.0)})}["ablation"]
    assert f.verdict == "not testable" and "0.26" in f.reason and "50%" in f.reason
    assert _verdict({"ablate": _ablate(0.9, 0.6, 95.0, 20.0)}, "ablation") == "reproduced"
    assert _verdict({"ablate": _ablate(0.9, 0.6, 20.0, 95.0)}, "ablation") == "not reproduced"
    assert _verdict({"ablate": _ablate(0.9, 0.3, 95.0, 20.0)}, "ablation") == "not testable"


def test_ablation_uses_an_in_context_suite_that_passes_and_the_null_control():
    # reading at chance but kv_recall passed by both arms: the contrast is kv_recall vs facts_world
    f = {x.key: x for x in compute_findings({"ablate": _ablate(0.25, 0.6, 95.0, 20.0, kv=0.9)})}["ablation"]
    assert f.verdict == "reproduced" and f.reason.startswith("kv_recall (in context) against facts_world")
    assert f.bands["engram retained % kv_recall - facts_world, points"]["mean"] == pytest.approx(75.5)
    # the Engram-null seeds show the same difference: the control covers the effect
    assert _verdict({"ablate": _ablate(0.9, 0.6, 95.0, 20.0, null_diff=75.0)}, "ablation") == "not established"
    assert _verdict({"ablate": _ablate(0.9, 0.6, 95.0, 20.0, null_diff=0.0)}, "ablation") == "reproduced"


def test_findings_md_is_generated_from_the_measurements():
    """Every figure in FINDINGS.md comes from checkpoints/measurements/ (regenerate: measure.sh)."""
    measured = load_measurements(ROOT / "checkpoints" / "measurements")
    expected = render_markdown(compute_findings(measured))
    assert (ROOT / "checkpoints" / "FINDINGS.md").read_text(encoding="utf-8") == expected
    early = [sum(m["kl"][1:5]) / 4 for m in measured["lens"]["models"] if arm_of(m["name"]) == "engram"]
    # spot check against the raw JSON: the Engram seeds' mean, min and max of the early-layer KL
    for value in (sum(early) / len(early), min(early), max(early)):
        assert f"{value:.3f}" in expected


def test_findings_command(tmp_path, capsys):
    from engram_interp.cli import main

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "logit_lens.json").write_text(json.dumps(_lens({"engram": 0.4, "moe": 0.6})))
    out = tmp_path / "F.md"
    assert main(["findings", "--measurements", str(tmp_path / "m"), "--out", str(out)]) == 0
    assert "not established" in capsys.readouterr().out and "0.400" in out.read_text()
    assert main(["findings", "--measurements", str(tmp_path / "m"), "--out", str(out)]) == 2  # no silent overwrite
    assert main(["findings", "--measurements", str(tmp_path / "none")]) == 2


def test_app_overview_shows_the_same_verdicts(tmp_path, monkeypatch):
    """The Overview's verdict table is built by engram_interp.claims.findings from the same measurements."""
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("ENGRAM_INTERP_APP_CKPTS", str(ROOT / "checkpoints" / "engram.ckpt"))
    monkeypatch.setenv("ENGRAM_INTERP_APP_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(ROOT)
    at = AppTest.from_file(str(ROOT / "app" / "Home.py"), default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]
    found = compute_findings(load_measurements(ROOT / "checkpoints" / "measurements"))
    shown = [str(m.value) for m in at.markdown]  # one paragraph per finding: "**title**: verdict  \nMeasured: ..."
    heads = [x for x in shown if any(x.startswith(f"**{f.title}**: ") for f in found)]
    assert [h.split("**: ", 1)[0][2:] for h in heads] == [f.title for f in found]
    assert [h.split("**: ", 1)[1].split("  \n")[0] for h in heads] == [f.verdict for f in found]
