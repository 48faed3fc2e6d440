"""The Streamlit workbench: every page runs without an exception on tiny checkpoints, shows what it
should, and turns bad input into a message instead of a traceback. Also the ``app`` CLI command."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

import engram_interp as ei  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PAGES = {
    "overview": "app/Home.py",
    "logit_lens": "app/pages/1_LogitLens.py",
    "cka": "app/pages/2_CKA.py",
    "gates": "app/pages/3_Gates.py",
    "ablation": "app/pages/4_Ablation.py",
    "probe": "app/pages/5_Probe.py",
}
TIMEOUT = 90


@pytest.fixture(scope="session")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    """Tiny checkpoints (engram, moe, dense, other-tokenizer) plus a corrupt file and a suite folder."""
    from engram_interp.model import EngramTransformer
    from engram_interp.testing import tiny_config, tiny_model, tiny_tokenizer
    from engram_interp.tokenizer import build_compression

    d = tmp_path_factory.mktemp("ckpts")
    out = {}
    for kind in ("engram", "moe", "dense"):
        out[kind] = ei.save(tiny_model(kind), d / f"{kind}.ckpt", provenance={"val_loss": 5.25})
    tok = tiny_tokenizer(300)  # another tokenizer: pairs with it must be refused
    other = EngramTransformer(tiny_config("moe", tok.get_vocab_size()), tokenizer=tok, compression=build_compression(tok))
    out["other_tok"] = ei.save(other, d / "other-tok.ckpt")
    corrupt = d / "corrupt.ckpt"
    corrupt.write_bytes(out["engram"].read_bytes()[:5000])
    out["corrupt"] = corrupt
    probes = d / "probes"
    probes.mkdir()
    (probes / "facts.jsonl").write_text('{"prompt": "The capital of France is", "answer": " Paris"}\n'
                                        '{"prompt": "Alexander the", "answer": " Great"}\n')
    (probes / "entities_ner.jsonl").write_text(
        '{"text": "Alexander the Great was a king of Macedon. The Milky Way is a galaxy.", '
        '"entity_end_positions": [18, 40, 55]}\n'
        '{"text": "By the way, the Princess of Wales visited London and Paris.", '
        '"entity_end_positions": [32, 47, 57]}\n')
    out["probes"] = probes
    return out


@pytest.fixture
def app_env(ckpts, tmp_path_factory, monkeypatch):
    """Point the app at some checkpoints: ``app_env("engram", "moe")``."""
    cache = tmp_path_factory.getbasetemp() / "app-cache"  # shared: later tests reuse computed results

    def use(*names: str) -> None:
        monkeypatch.setenv("ENGRAM_INTERP_APP_CKPTS", os.pathsep.join(str(ckpts[n]) for n in names))
        monkeypatch.setenv("ENGRAM_INTERP_APP_CACHE", str(cache))
        monkeypatch.setenv("ENGRAM_INTERP_PROBES", str(ckpts["probes"]))
        monkeypatch.chdir(ROOT)

    return use


def run_page(page: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / PAGES[page]), default_timeout=TIMEOUT).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


@pytest.mark.parametrize("page", list(PAGES))
def test_every_page_runs(app_env, page):
    app_env("engram", "moe")
    at = run_page(page)
    assert at.title and at.title[0].value
    assert not at.error, texts(at.error)


def test_locate_page_rows_add_up_to_the_engram_term(app_env, ckpts):
    """The Locate page shows, per Engram layer, the rows + value bias + short conv = the Engram term of
    `attribute` (engram_interp.analysis.attribution), for the page's default prompt."""
    from engram_interp.analysis.attribution import direct_logit_attribution

    app_env("engram", "moe")
    at = AppTest.from_file(str(ROOT / "app" / "pages" / "8_Locate.py"), default_timeout=TIMEOUT).run()
    at.text_input(key="loc-prompt").set_value("The capital of France is")
    at.text_input(key="loc-target").set_value(" the")
    at.text_input(key="loc-contrast").set_value(" of").run()
    assert not at.exception and not at.error, texts(at.error)
    layers = at.dataframe[0].value
    dla = direct_logit_attribution(ei.load(ckpts["engram"], device="cpu"), "The capital of France is", " the", " of")
    engram_terms: dict[int, float] = {}
    for c in dla.components:
        if c.kind == "engram":
            engram_terms[c.layer] = engram_terms.get(c.layer, 0.0) + c.contribution
    assert list(layers["layer"]) == sorted(engram_terms)
    for _, row in layers.iterrows():
        assert row["rows"] + row["value bias"] + row["short conv"] == pytest.approx(engram_terms[row["layer"]], abs=1e-5)
    assert len(at.dataframe) == 3 and len(at.dataframe[2].value) > 0  # top rows and the row groups


def test_overview_shows_param_accounting_and_val_loss(app_env, ckpts):
    app_env("engram", "moe", "dense")
    at = run_page("overview")
    table = at.dataframe[0].value
    assert list(table["model"]) == ["engram", "moe", "dense"]
    from engram_interp.checkpoint import read_info
    from engram_interp.model.params import count_params

    expected = count_params(read_info(ckpts["engram"]).config)
    row = table[table["model"] == "engram"].iloc[0]
    assert row["P_tot"] == f"{expected.P_tot:,}" and row["P_act"] == f"{expected.P_act:,}"
    assert row["rho"] == f"{expected.rho:.3f}"
    assert row["val loss (nats)"] == "5.2500"
    assert table[table["model"] == "dense"].iloc[0]["rho"] == "-"
    assert "Findings" in texts(at.subheader)


def test_overview_compute_button_fills_the_findings(app_env):
    app_env("engram", "moe")
    at = run_page("overview")
    at.button(key="overview-compute").click().run()
    assert not at.exception, [e.value for e in at.exception]
    summary = texts(at.markdown)
    assert not at.warning, texts(at.warning)
    assert "open the CKA page" not in summary and "soft alignment" in summary


def test_missing_and_corrupt_checkpoints_are_messages(app_env, ckpts, monkeypatch, tmp_path):
    app_env("engram", "corrupt")
    at = run_page("overview")
    err = texts(at.error)
    assert "corrupt" in err and "Traceback" not in err
    assert len(at.dataframe[0].value) == 1  # the good one is still shown
    monkeypatch.setenv("ENGRAM_INTERP_APP_CKPTS", str(tmp_path / "checkpoints" / "engram.ckpt"))
    at = run_page("overview")
    assert "does not exist" in texts(at.error)
    assert "No checkpoint could be opened" in texts(at.warning)
    monkeypatch.delenv("ENGRAM_INTERP_APP_CKPTS")  # the bundled default set, absent in a fresh checkout
    monkeypatch.chdir(tmp_path)
    at = run_page("probe")
    assert "engram-interp app --demo" in texts(at.info)


def test_probe_page_tops_per_layer_side_by_side(app_env):
    app_env("engram", "moe")
    at = run_page("probe")
    assert len(at.dataframe) == 2  # one table per model
    for df in at.dataframe:
        table = df.value
        assert list(table["layer"]) == ["L0", "L1", "L2", "L3", "final"]
        assert {"#1", "#5"} <= set(table.columns)
    at.slider(key="probe-k").set_value(3).run()
    assert not at.exception and "#4" not in at.dataframe[0].value.columns


def test_probe_final_row_is_the_models_own_prediction(app_env, ckpts):
    import torch

    app_env("engram", "moe")
    at = run_page("probe")
    model = ei.load(ckpts["engram"], device="cpu")
    text = at.text_area(key="probe-text").value
    with torch.no_grad():
        probs = torch.softmax(model(text)[0, -1].float(), -1)
    top = int(probs.argmax())
    cell = at.dataframe[0].value.iloc[-1]["#1"]
    assert cell.startswith(repr(model.tokenizer.decode([top], skip_special_tokens=False)))
    assert cell.endswith(f"{float(probs[top]):.3f}")


def test_bad_text_is_a_message(app_env):
    app_env("engram", "moe")
    at = run_page("probe")
    at.text_area(key="probe-text").set_value("   ").run()
    assert not at.exception and "Type some text" in texts(at.info)
    at.text_area(key="probe-text").set_value("grapes " * 400).run()
    assert not at.exception and "at most 256" in texts(at.error)
    at = run_page("gates")
    at.text_area(key="gates-text").set_value("fox " * 600).run()
    assert not at.exception and "at most 256" in texts(at.error)


def test_different_tokenizers_are_refused(app_env):
    app_env("engram", "other_tok")
    for page in ("probe", "cka"):
        at = run_page(page)
        assert "different tokenizers" in texts(at.error)


def test_models_without_engram_are_explained(app_env):
    app_env("moe", "dense")
    for page in ("gates", "ablation"):
        at = run_page(page)
        info = texts(at.info)
        assert "no Engram layers" in info and "dense" in info


def test_gates_heatmap_has_one_row_per_engram_layer(app_env, ckpts):
    import torch

    app_env("engram", "moe")
    at = run_page("gates")
    charts = at.get("plotly_chart")
    assert charts
    import json

    fig = json.loads(charts[0].proto.spec)
    heat = fig["data"][0]
    assert heat["y"] == ["L1", "L2"]  # one row per Engram layer (one branch)
    assert all(0.0 < v < 1.0 for row in heat["z"] for v in row)
    assert "3-gram" in heat["customdata"][0][-1]
    model = ei.load(ckpts["engram"], device="cpu")  # the values are the model's own hook_gate
    with torch.no_grad():
        _, cache = model.run_with_cache(at.text_area(key="gates-text").value)
    expected = [cache[f"blocks.{l}.engram.hook_gate"][0, :, 0].tolist() for l in (1, 2)]
    assert torch.allclose(torch.tensor(heat["z"]), torch.tensor(expected), atol=1e-6)


def test_ablation_item_view_full_vs_suppressed(app_env):
    app_env("engram", "moe")
    at = run_page("ablation")
    assert "Alexander the" in texts(at.markdown) or "capital of France" in texts(at.markdown)
    assert len(at.dataframe) >= 2


def test_ablation_per_layer_on_demand_keeps_the_all_layer_figures(app_env):
    """The first view scores full + all Engram layers suppressed; the switch adds one column per
    Engram layer alone, and the all-layer retained % stays what it was."""
    app_env("engram", "moe")
    at = run_page("ablation")
    first = at.dataframe[0].value
    assert not [c for c in first.columns if "only" in c]
    at.toggle(key="abl-per-layer").set_value(True).run()
    assert not at.exception
    both = at.dataframe[0].value
    assert [c for c in both.columns if "only" in c] == ["retained % (layer 1 only)", "retained % (layer 2 only)"]
    assert list(both["retained %"]) == list(first["retained %"])
    assert list(both["full acc [95% CI]"]) == list(first["full acc [95% CI]"])


def test_cka_page_draws_a_vs_b_first_then_its_references_in_one_pass(app_env, ckpts, tmp_path, monkeypatch):
    """Issue 22 item 1: on a cold cache A vs B is computed alone and drawn at once; then control vs B
    and twin vs B come from one pass (B runs once for both); the page ends with the verdicts drawn.
    Each stored result equals its own cka_analysis call with the page's settings."""
    from app import results, state
    from engram_interp.analysis.cka_models import cka_analysis
    from engram_interp.testing import tiny_model

    ckpts["null"] = ei.save(tiny_model("engram-null", seed=2), tmp_path / "null.ckpt")
    app_env("engram", "moe", "null")
    monkeypatch.setenv("ENGRAM_INTERP_APP_CACHE", str(tmp_path / "fresh-cache"))
    import engram_interp.analysis.cka_models as cka_lib

    calls = []
    original = cka_lib.cka_analyses
    monkeypatch.setattr(cka_lib, "cka_analyses", lambda rows, *a, **k: calls.append(list(rows)) or original(rows, *a, **k))
    from engram_interp import figures

    drawn = _count_models_per_draw(monkeypatch, figures, "cka_figure", lambda res: len(res.references or {}))
    at = run_page("cka")
    assert not at.error, texts(at.error)
    assert calls == [["engram"], ["null", "engram~twin"]]  # the untrained twin is a reference too, same pass
    assert drawn == [0, 2]  # A vs B alone first, then with the control and the twin
    assert "Engram-null" in texts(at.markdown) and "being computed" not in texts(at.info)
    entries = {e.label: e for e in state.entries()}
    params = dict(results.CKA_DEFAULTS, n_examples=results.CKA_DEFAULTS["n_examples"])
    for row in ("engram", "null"):
        stored = state.cached_result("cka", [entries[row].sha, entries["moe"].sha], results.cka_key(params, None))
        alone = cka_analysis(ei.load(ckpts[row], device="cpu"), ei.load(ckpts["moe"], device="cpu"), None,
                             tokens="entities", probes=str(state.probes_dir() / "entities_ner.jsonl"),
                             batch_size=params["batch"], max_tokens=params["n_examples"], n_boot=params["n_boot"],
                             seed=params["seed"], names=(row, "moe"))
        assert {k: v for k, v in stored.items() if k != "source"} == alone.to_dict()


def test_cka_cached_on_disk_and_reused(app_env, monkeypatch):
    from app import state

    app_env("engram", "moe")
    at = run_page("cka")
    assert "token positions" in texts(at.caption)
    assert any(p.name.startswith("cka-") for p in state.cache_dir().iterdir())
    import engram_interp.analysis.cka_models as cka_lib

    calls = []
    original = cka_lib.cka_analysis
    monkeypatch.setattr(cka_lib, "cka_analysis", lambda *a, **k: calls.append(1) or original(*a, **k))
    at = run_page("cka")  # second run (new session): read from disk, no model run
    assert not calls
    at.slider(key="cka-k").set_value(2).run()  # a display-only widget never recomputes
    assert not at.exception and not calls


def test_file_sha256_is_cached_by_path_mtime_size(ckpts, tmp_path, monkeypatch):
    import hashlib

    from app import state

    monkeypatch.setenv("ENGRAM_INTERP_APP_CACHE", str(tmp_path))
    path = tmp_path / "x.ckpt"
    path.write_bytes(ckpts["moe"].read_bytes())
    assert state.file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert "x.ckpt" in (tmp_path / "sha256-index.json").read_text()
    path.write_bytes(ckpts["dense"].read_bytes())  # new content, new size: hashed again
    assert state.file_sha256(path) == hashlib.sha256(ckpts["dense"].read_bytes()).hexdigest()


def test_result_cache_is_weights_only(tmp_path, monkeypatch):
    import torch

    from app import state

    monkeypatch.setenv("ENGRAM_INTERP_APP_CACHE", str(tmp_path))
    value = {"cka": torch.eye(3, dtype=torch.float64), "n_examples": 12, "source": "x"}
    state.store_result("cka", ["a", "b"], {"k": 1}, value)
    back = state.cached_result("cka", ["a", "b"], {"k": 1})
    assert torch.equal(back["cka"], value["cka"]) and back["n_examples"] == 12
    assert state.cached_result("cka", ["a", "b"], {"k": 2}) is None
    assert state.cached_result("cka", ["b", "a"], {"k": 1}) is None
    path = next(tmp_path.glob("cka-*.pt"))
    path.write_bytes(b"garbage")
    assert state.cached_result("cka", ["a", "b"], {"k": 1}) is None  # damaged entry = recompute


# ---- the CLI -----------------------------------------------------------------------------------
def test_cli_app_command_is_discovered():
    from engram_interp.cli import build_parser

    args = build_parser().parse_args(["app", "a.ckpt", "b.ckpt", "--port", "9999"])
    assert args.command == "app" and args.ckpts == ["a.ckpt", "b.ckpt"] and args.port == 9999


def test_cli_app_starts_streamlit_with_the_checkpoints(ckpts, monkeypatch, capsys, tmp_path):
    from engram_interp.commands import app as app_cmd

    seen = {}

    class FakePopen:
        def __init__(self, cmd, env, stdout):
            seen["cmd"], seen["env"] = cmd, env

        def wait(self, timeout=None):
            return 0

    monkeypatch.setattr(app_cmd.subprocess, "Popen", FakePopen)
    args = argparse.Namespace(ckpts=[str(ckpts["engram"]), str(ckpts["moe"])], port=8599, host="localhost",
                              cache_dir=tmp_path, probes=None, demo=False, browser=False)
    assert app_cmd.run(args) == 0
    out = capsys.readouterr().out
    assert "http://localhost:8599" in out
    assert seen["cmd"][1:4] == ["-m", "streamlit", "run"] and seen["cmd"][4].endswith("app/Home.py")
    assert seen["env"]["ENGRAM_INTERP_APP_CKPTS"].split(os.pathsep) == [str(ckpts["engram"]), str(ckpts["moe"])]
    assert seen["env"]["PYTHONPATH"].split(os.pathsep)[0] == str(ROOT)


def test_cli_app_defaults_demo_and_errors(monkeypatch, capsys, tmp_path):
    from engram_interp.commands import app as app_cmd
    from engram_interp.errors import EngramInterpError

    seen = {}
    monkeypatch.setattr(app_cmd.subprocess, "Popen",
                        type("P", (), {"__init__": lambda s, cmd, env, stdout: seen.update(env=env),
                                       "wait": lambda s, timeout=None: 0}))
    monkeypatch.chdir(tmp_path)
    base = dict(port=8598, host="localhost", cache_dir=tmp_path / "c", probes=None, browser=False)
    with pytest.raises(EngramInterpError, match="no such checkpoint.*--demo"):  # refused before a server starts
        app_cmd.run(argparse.Namespace(ckpts=[], demo=False, **base))
    assert "env" not in seen
    (tmp_path / "checkpoints").mkdir()
    for name in app_cmd.DEFAULT_CKPTS:
        (tmp_path / name).write_bytes(b"")
    assert app_cmd.run(argparse.Namespace(ckpts=[], demo=False, **base)) == 0
    assert seen["env"]["ENGRAM_INTERP_APP_CKPTS"].split(os.pathsep)[0] == str(tmp_path / "checkpoints" / "engram.ckpt")
    assert app_cmd.run(argparse.Namespace(ckpts=[], demo=True, **base)) == 0
    demo = seen["env"]["ENGRAM_INTERP_APP_CKPTS"].split(os.pathsep)
    assert [Path(p).name for p in demo] == ["demo-engram.ckpt", "demo-moe.ckpt", "demo-engram-null.ckpt"]
    assert all(ei.load(p, device="cpu").cfg.n_layers == 4 for p in demo[:1])
    with pytest.raises(EngramInterpError):
        app_cmd.run(argparse.Namespace(ckpts=[str(tmp_path)], demo=False, **base))


def test_disk_cache_never_answers_for_other_data(app_env, tmp_path, monkeypatch):
    """Issue 9, item 1: a result cached for one corpus is not returned for another (the key holds the
    data's identity), so a session never sees a result computed on someone else's data."""
    from app import results

    app_env("engram", "moe")
    monkeypatch.setenv("ENGRAM_INTERP_APP_CACHE", str(tmp_path / "cache"))
    from app import state

    entry = state.entries()[0]
    got = {}
    for name, text in (("a", "The Milky Way is a galaxy. " * 20), ("b", "Alexander the Great was a king. " * 20)):
        corpus = tmp_path / f"{name}.txt"
        corpus.write_text(text)
        monkeypatch.setenv("ENGRAM_INTERP_CORPUS", str(corpus))
        got[name] = results.lens_curves([entry], dict(results.LENS_DEFAULTS, max_tokens=64))[0]
    assert got["a"]["source"] != got["b"]["source"] and got["a"]["kl"] != got["b"]["kl"]


def test_cached_result_is_not_computed_under_another_sessions_ablation(app_env, tmp_path, monkeypatch):
    """Issue 9, item 1 at the app level: while one session holds ``engram_suppressed`` on the shared
    model, another session's gate statistics (stored in the disk cache) are those of the full model."""
    import threading
    import time

    import torch

    from app import results, state

    app_env("engram")
    corpus = tmp_path / "c.txt"
    corpus.write_text("The Milky Way is a galaxy. By the way, the Princess of Wales came. " * 10)
    monkeypatch.setenv("ENGRAM_INTERP_CORPUS", str(corpus))
    entry = state.entries()[0]
    params = dict(results.GATES_DEFAULTS, max_tokens=128, n_perm=3)
    monkeypatch.setenv("ENGRAM_INTERP_APP_CACHE", str(tmp_path / "ref"))
    reference = results.gate_corpus(entry, params)
    monkeypatch.setenv("ENGRAM_INTERP_APP_CACHE", str(tmp_path / "shared"))
    model = entry.model()
    inside = threading.Event()

    def other_session():
        with model.engram_suppressed(replacement={l: torch.full((model.info.d_model,), 5.0) for l in model.engram_layers}):
            inside.set()
            time.sleep(1.0)

    t = threading.Thread(target=other_session)
    t.start()
    inside.wait(10)
    got = results.gate_corpus(entry, params)
    t.join()
    assert got["mean_gate"] == reference["mean_gate"] and got["selectivity"] == reference["selectivity"]


def test_routing_page_shows_each_moe_model_and_the_gate_split(app_env, ckpts):
    """The Routing page lists the MoE models' layers (not the dense one's), with the baseline split by the
    Engram model's gate and balances inside (0, 1]."""
    app_env("engram", "moe", "dense")
    at = AppTest.from_file(str(ROOT / "app" / "pages" / "11_Routing.py"), default_timeout=TIMEOUT).run()
    assert not at.exception and not at.error, texts(at.error)
    table = at.dataframe[0].value
    assert set(table["model"]) == {"engram", "moe"}  # the dense model has no routing
    assert table["gate JS"].notna().all()  # both split by the Engram model's gate
    assert ((table["balance"] > 0) & (table["balance"] <= 1)).all()


def test_overview_names_every_page_first(app_env):
    """Issue 22: the Overview's subtitle lists every page of app/pages (it listed five of eight), and the
    title and that list are drawn before anything else (before torch and the models load)."""
    from app.nav import page_names

    app_env("engram", "moe")
    at = run_page("overview")
    files = sorted((ROOT / "app" / "pages").glob("*_*.py"))
    assert len(page_names()) == len(files) >= 9
    listed = at.caption[0].value
    for f in files:
        assert f.stem.split("_", 1)[1].replace("_", " ") in listed, (f.name, listed)
    first = at.main.children[0]
    assert first.type == "title" and first.value == "Overview"


def _count_models_per_draw(monkeypatch, module, name: str, count) -> list[int]:
    """Patch figure ``module.name`` to record ``count(its argument)`` at every call (one call = one drawing)."""
    calls: list[int] = []
    original = getattr(module, name)

    def wrapped(res, *args, **kwargs):
        calls.append(count(res))
        return original(res, *args, **kwargs)

    monkeypatch.setattr(module, name, wrapped)
    return calls


def test_logit_lens_draws_each_model_as_it_is_done_and_cached_ones_at_once(app_env, ckpts, tmp_path, monkeypatch):
    """Issue 22 item 1: the KL figure is drawn after the first model's curve, then again with the next
    (not once at the end); a second run draws every cached curve in one go."""
    from engram_interp import figures

    app_env("engram", "moe", "dense")
    monkeypatch.setenv("ENGRAM_INTERP_APP_CACHE", str(tmp_path / "cache"))  # cold: nothing computed yet
    calls = _count_models_per_draw(monkeypatch, figures, "kl_figure", lambda res: len(res.models))
    at = run_page("logit_lens")
    assert calls == [1, 2, 3]
    assert "3 of 3" not in texts(at.caption) and "Bars: 95% interval" in texts(at.caption)
    calls.clear()
    run_page("logit_lens")
    assert calls == [3]


def test_ablation_draws_each_engram_model_as_it_is_done(app_env, ckpts, tmp_path, monkeypatch):
    """Issue 22 item 1: with two Engram models the retained figure is drawn after the first, then with both."""
    from engram_interp import figures
    from engram_interp.testing import tiny_model

    ckpts["null"] = ei.save(tiny_model("engram-null"), tmp_path / "engram-null.ckpt")
    app_env("engram", "null")
    monkeypatch.setenv("ENGRAM_INTERP_APP_CACHE", str(tmp_path / "cache"))
    calls = _count_models_per_draw(monkeypatch, figures, "retained_figure", lambda res: len(res.models))
    at = run_page("ablation")
    assert calls == [1, 2]
    assert not at.error, texts(at.error)
    table = at.dataframe[0].value
    assert sorted(set(table["model"])) == ["engram", "engram-null"]

def test_memory_help_page_draws_the_buckets_and_states_the_findings(app_env, ckpts):
    """The Memory help page: a table of non-empty buckets (the 'all' bucket holds every scored token), the
    figure, and both findings stated against the untrained twin."""
    app_env("engram", "moe", "dense")
    at = AppTest.from_file(str(ROOT / "app" / "pages" / "10_Memory_help.py"), default_timeout=TIMEOUT).run()
    assert not at.exception and not at.error, texts(at.error)
    table = at.dataframe[0].value
    assert {"all", "frequency", "collision", "gate"} <= set(table["bucket"])
    assert (table[table["bucket"] == "all"]["share"] == 1.0).all() and (table["tokens"] > 0).all()
    said = texts(at.markdown)
    assert "untrained twin" in said and said.count("Verdict:") == 2


def test_markdown_keeps_twin_labels_literal():
    """Issue 22 item 2 (seen in the browser): two ``engram~twin`` labels in one finding struck through the
    text between them; ``state.md`` escapes the tildes, and the Overview's sentences go through it."""
    from app.state import md

    line = "twin engram~twin: 0.00; untrained twin engram~twin: 0.01"
    assert md(line) == line.replace("~", "\\~") and md("no tilde") == "no tilde"
