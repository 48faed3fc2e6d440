"""The app's Memory page on tiny checkpoints: its collision table equals the library's result, the
reverse lookup answers a typed n-gram, bad input is a message, a model without Engram is explained."""

from __future__ import annotations

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from test_app import ROOT, TIMEOUT, app_env, ckpts  # noqa: E402,F401  (fixtures)

PAGE = str(ROOT / "app" / "pages" / "6_Memory.py")


def _run() -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_memory_page_tables_match_library(app_env, ckpts):
    from engram_interp.analysis.common import default_texts
    from engram_interp.analysis.memory import memory_inspect
    from engram_interp.memory import open_tables

    app_env("engram", "moe")
    at = _run()
    assert any("no memory tables" in str(i.value) for i in at.info)  # the MoE model is explained
    df = at.dataframe[0].value
    from engram_interp.defaults import DEFAULTS

    ref = memory_inspect(open_tables(ckpts["engram"]), default_texts(), max_tokens=DEFAULTS.memory_tokens, progress=False)
    heads = [h for L in ref.layers for h in L.heads]
    assert len(df) == len(heads)
    assert df["touched"].tolist() == [h.touched for h in heads]
    assert df["collision share"].tolist() == [round(h.collision_share, 3) for h in heads]
    assert df["uniform hash"].tolist() == [round(h.uniform_collision_share, 3) for h in heads]
    assert len(at.get("plotly_chart")) >= 3  # usage curve, norms, PCA map
    markdown = "\n".join(m.value for m in at.markdown)
    assert "-gram 'the capital'" in markdown and "Nearest by memory vector" in markdown

    at.text_input(key="memory-ngram").set_value("Q").run()
    assert not at.exception
    assert any("at least 2 tokens" in str(e.value) for e in at.error)


def test_memory_page_without_engram_stops_with_a_note(app_env):
    app_env("moe")
    at = _run()
    assert any("no memory tables" in str(i.value) for i in at.info)
    assert not at.get("plotly_chart")
