"""--twin on memory, attribute and patch (issue 20 item 1): the untrained twin's numbers beside the
model's, and findings that never claim more than "not established" (points: no spread measured)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

import engram_interp as ei
from engram_interp.cli import main

ROOT = Path(__file__).resolve().parents[1]
CKPT = str(ROOT / "checkpoints" / "engram.ckpt")
CORPUS = str(ROOT / "probes" / "texts" / "heldout.txt")


def _json(capsys, argv: list[str]) -> dict:
    assert main(argv) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def test_twin_tables_share_the_hash_and_draw_rows_from_the_init():
    from engram_interp.analysis.memory import memory_inspect
    from engram_interp.memory import open_tables
    from engram_interp.memory.twin import twin_tables

    src = open_tables(CKPT)
    tw = twin_tables(src, seed=3)
    from engram_interp.checkpoint import read_info

    info = read_info(CKPT)
    assert tw.std == info.config.init_std and tw.layers == src.layers and tw.name == "engram~twin"
    rows = np.arange(4000)
    x = tw.read_rows(src.layers[0], rows)
    assert np.array_equal(x, twin_tables(src, seed=3).read_rows(src.layers[0], rows))  # seeded per row
    assert np.array_equal(x[7:9], tw.read_rows(src.layers[0], rows[7:9]))  # any subset reads the same rows
    assert abs(float(x.std()) - tw.std) < 0.03 * tw.std and abs(float(x.mean())) < 0.03 * tw.std
    texts = [Path(CORPUS).read_text()[:6000]]
    a = memory_inspect(src, texts, max_tokens=1500, untouched=64, progress=False, pca_points=4)
    b = memory_inspect(tw, texts, max_tokens=1500, untouched=64, progress=False, pca_points=4)
    for la, lb in zip(a.layers, b.layers):  # the hash is not learned: its statistics are the twin's too
        for ha, hb in zip(la.heads, lb.heads):
            assert (ha.touched, ha.collision_share, ha.zipf_exponent) == (hb.touched, hb.collision_share, hb.zipf_exponent)
            # Normal(0, s) rows of d dims: mean norm ~ s * sqrt(d) for touched and untouched alike
            assert hb.norm_touched == pytest.approx(tw.std * math.sqrt(tw.d_head), rel=0.1)
            assert hb.norm_untouched == pytest.approx(tw.std * math.sqrt(tw.d_head), rel=0.1)


def test_memory_twin_cli(capsys):
    d = _json(capsys, ["memory", CKPT, "--corpus", CORPUS, "--max-tokens", "1500", "--untouched", "128", "--twin",
                       "--quiet", "--json"])
    assert d["twin"]["name"] == "engram~twin" and [L["layer"] for L in d["twin"]["layers"]] == [L["layer"] for L in d["layers"]]
    assert len(d["findings"]) == len(d["layers"])
    for f in d["findings"]:
        assert f["verdict"] in ("not established", "not testable")
        assert [c["name"] for c in f["controls"]] == ["untrained twin"] and "the hash is not learned" in f["sentence"]
    plain = _json(capsys, ["memory", CKPT, "--corpus", CORPUS, "--max-tokens", "1500", "--untouched", "128", "--quiet",
                           "--json"])
    assert "twin" not in plain and all("run with --twin" in f["sentence"] for f in plain["findings"])


@pytest.mark.slow  # ~70 s of CPU: three patching grids and two attributions of the bundled model
def test_attribute_and_patch_twin_cli(capsys):
    from engram_interp.analysis.attribution import direct_logit_attribution

    args = ["--text", "The capital of France is", "--target", " Paris", "--contrast", " London", "--device", "cpu"]
    d = _json(capsys, ["attribute", CKPT, *args, "--twin", "--json"])
    assert d["twin"]["model"] == "engram~twin"
    # independent: the twin built by the library, attributed directly
    twin = ei.untrained_twin(ei.load(CKPT, device="cpu"), 0)
    ref = direct_logit_attribution(twin, "The capital of France is", " Paris", " London", name="engram~twin")
    want = sum(c.contribution for c in ref.components if c.kind == "engram")
    (f,) = d["findings"]
    assert f["controls"][0]["name"] == "untrained twin" and f["controls"][0]["value"] == pytest.approx(want, abs=1e-6)
    assert f["verdict"] == "not established" and "no spread measured" in f["sentence"]
    p = _json(capsys, ["patch", CKPT, "--clean", "The capital of France is", "--corrupt", "The capital of Italy is",
                       "--target", " Paris", "--contrast", " Rome", "--device", "cpu", "--twin", "--json"])
    (f,) = p["findings"]
    assert p["twin"]["model"] == "engram~twin" and f["verdict"] == "not established"
    engram = next(b for b in p["twin"]["components"] if b["kind"] == "engram")
    assert f["controls"][0]["value"] == pytest.approx(max(engram["restored"]))
    assert "twin" not in _json(capsys, ["patch", CKPT, "--clean", "The capital of France is", "--corrupt",
                                        "The capital of Italy is", "--target", " Paris", "--device", "cpu", "--json"])
