"""The Attribution page (AppTest) and the Probe page's routing / attention views on tiny checkpoints."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 120


@pytest.fixture
def use(tiny_ckpts, tmp_path_factory, monkeypatch):
    def set_ckpts(*kinds: str) -> None:
        monkeypatch.setenv("ENGRAM_INTERP_APP_CKPTS", os.pathsep.join(str(tiny_ckpts[k]) for k in kinds))
        monkeypatch.setenv("ENGRAM_INTERP_APP_CACHE", str(tmp_path_factory.getbasetemp() / "attr-app-cache"))
        monkeypatch.chdir(ROOT)

    return set_ckpts


def _run(page: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / page), default_timeout=TIMEOUT).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _charts(at: AppTest) -> dict[str, dict]:
    return {c.proto.id: json.loads(c.proto.spec) for c in at.get("plotly_chart")}


def test_attribution_page_shows_bars_trace_and_patching(use):
    use("engram", "moe")
    at = _run("app/pages/7_Attribution.py")
    assert at.error  # the bundled defaults (' States') are several tokens for the tiny tokenizer: one message each
    assert all("tokens for this tokenizer" in e.value or "equal length" in e.value for e in at.error)
    at.text_input(key="attr-text").set_value("The capital of France is")
    at.text_input(key="attr-target").set_value(" the")
    at.text_input(key="attr-contrast").set_value(" of")
    at.text_input(key="patch-clean").set_value("The capital of France is")
    at.text_input(key="patch-corrupt").set_value("The fox of France is")
    at.text_input(key="patch-target").set_value(" the")
    at.text_input(key="patch-contrast").set_value(" of")
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    assert len(specs) == 5  # two DLA bar charts, the trace, the patching grid, the patching bars
    bars = [s for s in specs if s["data"][0]["type"] == "bar" and s["data"][0].get("orientation") == "h"]
    assert len(bars) == 2
    names = bars[0]["data"][0]["y"]
    assert names[0] == "embed" and "L1.engram" in names and names[-1] == "remainder"
    title = bars[0]["layout"]["title"]["text"]
    logit = float(title.split("<br>= ")[1].split(" ")[0])
    assert sum(bars[0]["data"][0]["x"]) == pytest.approx(logit, abs=2e-3)  # the bars add up to the logit
    grid = next(s for s in specs if s["data"][0]["type"] == "heatmap")
    assert len(grid["data"][0]["z"]) == 5 and len(grid["data"][0]["z"][0]) == 8  # 5 layer points x 8 tokens
    assert grid["data"][0]["z"][-1][-1] == pytest.approx(1.0, abs=1e-6)  # final stream at the last position
    assert "restores **1.000**" in "\n".join(m.value for m in at.markdown)
    at.text_input(key="patch-corrupt").set_value("The capital of Italy is").run()
    assert not at.exception and any("equal length" in e.value for e in at.error)


def test_probe_page_routing_and_attention_views(use):
    use("engram", "dense")
    at = _run("app/pages/5_Probe.py")
    assert not at.error, [e.value for e in at.error]
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    heat = [s for s in specs if s["data"][0]["type"] == "heatmap"]
    routing = [s for s in heat if "routed experts" in s["layout"]["title"]["text"]]
    attention = [s for s in heat if "attention" in s["layout"]["title"]["text"]]
    assert len(routing) == 1 and len(attention) == 2  # the dense model has no MoE layers
    z = routing[0]["data"][0]["z"]
    assert all(sum(row) == pytest.approx(1.0, abs=1e-5) and sum(v > 0 for v in row) == 2 for row in z)  # top-2
    for s in attention:
        for i, row in enumerate(s["data"][0]["z"]):
            assert sum(row) == pytest.approx(1.0, abs=1e-5) and all(v == 0 for v in row[i + 1:])  # causal
    assert "no MoE layers" in "\n".join(i.value for i in at.info)


BUNDLED = [ROOT / "checkpoints" / "engram.ckpt", ROOT / "checkpoints" / "moe.ckpt"]


@pytest.mark.slow
@pytest.mark.skipif(not all(p.is_file() for p in BUNDLED), reason="bundled checkpoints not present")
def test_attribution_page_on_the_bundled_pair(monkeypatch, tmp_path):
    """The page's defaults are an entity completion of the bundled pair: 'Southern United' -> ' States'."""
    monkeypatch.setenv("ENGRAM_INTERP_APP_CKPTS", os.pathsep.join(map(str, BUNDLED)))
    monkeypatch.setenv("ENGRAM_INTERP_APP_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(ROOT)
    at = _run("app/pages/7_Attribution.py")
    assert not at.error and not at.warning, [e.value for e in at.error] + [w.value for w in at.warning]
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    assert len(specs) == 5
    names = specs[0]["data"][0]["y"]
    assert {"L1.engram", "L3.engram"} <= set(names)
    assert "restores **1.000**" in "\n".join(m.value for m in at.markdown)
