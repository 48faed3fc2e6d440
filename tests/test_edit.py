"""Memory editing (issue 25 item 2): row offsets act exactly as a table write, an edit changes the table
rows only (every other tensor bit-identical, in memory and in the written file), reverts exactly, never
touches the source, refuses to overwrite without force, and on the bundled checkpoint writes
counterfactual facts_world facts with the other facts and held-out loss kept within stated bounds."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from engram_interp.checkpoint import load, save
from engram_interp.edit.method import EditConfig, edit_rows, encode_pairs
from engram_interp.edit.rows import RowDelta, applied, rows_of
from engram_interp.edit.save import check_destination, write_edited
from engram_interp.errors import EngramInterpError
from engram_interp.testing import tiny_model
from tests.test_cli_errors import run_cli

CKPT = Path(__file__).resolve().parents[1] / "checkpoints" / "engram.ckpt"
SUITE = Path(__file__).resolve().parents[1] / "probes" / "facts_world.jsonl"
TINY_FACTS = [{"prompt": "Once upon a time there lived a", "target": " fox"},
              {"prompt": "The cat sat on the", "target": " mat", "candidates": [" mat", " dog", " time"]}]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _is_table(name: str) -> bool:
    return name.endswith("engram.memory.weight")


def test_row_offsets_equal_a_table_write():
    """The hooked offsets give the same logits as writing row + delta into the table (bit for bit)."""
    model = tiny_model()
    tokens, _, _ = encode_pairs(model, [(f["prompt"], f["target"]) for f in TINY_FACTS])
    delta = RowDelta(model, rows_of(model, tokens))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in delta.delta.values():
            p.copy_(torch.randn(p.shape, generator=gen))
        hooked = model.run_with_hooks(tokens, fwd_hooks=delta.hooks())
        plain = model(tokens)
        record = delta.record()
        with applied(model, record):
            written = model(tokens)
    assert not torch.equal(plain, written)
    assert torch.equal(hooked, written)
    assert torch.equal(model(tokens), plain)  # reverted


def test_edit_changes_only_table_rows_and_reverts_exactly():
    model = tiny_model()
    before = _state(model)
    record, trace = edit_rows(model, TINY_FACTS, EditConfig(steps=4, margin=100.0))
    assert trace["steps"] == 4 and not trace["converged"]
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # edit_rows leaves the model as it was
    record.apply(model)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(_is_table(k) for k in changed)
    n_changed = sum(int((before[k] != after[k]).any(-1).sum()) for k in changed)
    assert n_changed == record.n_rows == len(record.keys)
    record.revert(model)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_offsets_stay_within_the_bound():
    model = tiny_model()
    record, _ = edit_rows(model, TINY_FACTS, EditConfig(steps=3, lr=1.0, bound=0.1, margin=100.0))
    for c in record.changes():
        heads = model.engram_heads(c["layer"])
        rows = model.engram_rows(c["layer"], c["head"], torch.arange(heads.head_sizes[c["head"]]))
        assert c["norm_delta"] <= 0.1 * float(rows.double().norm(dim=-1).median()) * (1 + 1e-5)


def test_written_checkpoint_differs_in_table_rows_only(tmp_path):
    src = tmp_path / "src.ckpt"
    save(tiny_model(), src)
    digest = _sha(src)
    model = load(src, device="cpu")
    record, _ = edit_rows(model, TINY_FACTS, EditConfig(steps=5, margin=100.0))
    record.apply(model)
    out = write_edited(model, tmp_path / "new.ckpt", {"method": "test"})
    assert _sha(src) == digest  # the source is never touched (its tables are mapped copy-on-write)
    a, b = load_file(str(src)), load_file(str(out))
    assert a.keys() == b.keys()
    for k in a:
        if not _is_table(k):
            assert a[k].dtype == b[k].dtype and torch.equal(a[k].view(torch.uint8), b[k].view(torch.uint8)), k
    assert any(not torch.equal(a[k], b[k]) for k in a if _is_table(k))
    record.revert(model)  # writing the old rows back gives the original tensors
    reverted = write_edited(model, tmp_path / "reverted.ckpt", {"method": "test"})
    c = load_file(str(reverted))
    assert all(torch.equal(a[k].view(torch.uint8), c[k].view(torch.uint8)) for k in a)
    assert load(out, device="cpu").provenance["edit"]["method"] == "test"


def test_destination_rules(tmp_path):
    src = tmp_path / "src.ckpt"
    save(tiny_model(), src)
    with pytest.raises(EngramInterpError, match="source model"):
        check_destination(src, src, force=True)
    other = tmp_path / "other.ckpt"
    other.write_bytes(b"x")
    with pytest.raises(EngramInterpError, match="--force"):
        check_destination(src, other)
    assert check_destination(src, other, force=True) == other
    with pytest.raises(EngramInterpError, match=r"\.ckpt"):
        check_destination(src, tmp_path / "new.bin")


def _suite_items():
    from engram_interp.data.suite_files import read_suites

    return read_suites([SUITE])["facts_world"]


def _check_bundled(n: int, steps: int, n_unrelated: int, max_tokens: int) -> dict:
    """Edit ``n`` counterfactual facts into the bundled checkpoint and evaluate; efficacy is checked
    against ``score_items`` (the task-suite scorer, independent code) on the edited model."""
    from engram_interp.analysis.ablation import score_items
    from engram_interp.analysis.common import default_texts
    from engram_interp.edit.evaluate import evaluate_edit
    from engram_interp.edit.facts import counterfactual_facts

    model = load(CKPT, device="cpu")
    items = _suite_items()
    facts = counterfactual_facts(items, n, seed=0)
    record, _ = edit_rows(model, facts, EditConfig(steps=steps))
    res = evaluate_edit(model, facts, record, unrelated=items[1000:1000 + n_unrelated], texts=default_texts(),
                        max_tokens=max_tokens)
    with applied(model, record):
        ref = score_items(model, [{"prompt": f["prompt"], "answer": f["target"], "candidates": f["candidates"]} for f in facts])
    assert [r["efficacy_after"] for r in res["facts"]] == [bool(x) for x in ref.tolist()]
    return res


def _within_bounds(res: dict) -> None:
    """The bounds docs/EDIT.md states for the bundled checkpoint."""
    t = res["total"]
    assert t["efficacy"]["after"]["mean"] >= 0.9
    assert t["neighbours_kept"]["mean"] >= 0.8
    assert res["unrelated"]["kept"]["mean"] >= 0.85
    assert abs(res["unrelated"]["change"]["mean"]) <= 0.05
    assert abs(res["heldout"]["loss_after"] - res["heldout"]["loss_before"]) <= 0.02


def test_bundled_three_facts():
    res = _check_bundled(3, steps=30, n_unrelated=50, max_tokens=1000)
    _within_bounds(res)


@pytest.mark.slow
def test_bundled_twenty_counterfactual_facts():
    res = _check_bundled(20, steps=60, n_unrelated=100, max_tokens=2000)
    _within_bounds(res)


def _facts_file(tmp_path, lines) -> Path:
    import json

    p = tmp_path / "facts.jsonl"
    p.write_text("".join((l if isinstance(l, str) else json.dumps(l)) + "\n" for l in lines))
    return p


def test_cli_writes_new_checkpoint_and_respects_force(tiny_ckpts, tmp_path, capsys):
    import json

    src = Path(tiny_ckpts["engram"])
    digest = _sha(src)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("The cat sat on the mat. Once upon a time there lived a fox.\n\nThe dog ran.\n")
    facts = _facts_file(tmp_path, TINY_FACTS)
    out = tmp_path / "new.ckpt"
    argv = ["edit", src, "--facts", facts, "--out", out, "--steps", "3", "--max-unrelated", "0", "--corpus", corpus,
            "--device", "cpu", "--quiet"]
    rc, stdout, err = run_cli([*argv, "--json"], capsys)
    assert rc == 0, err
    d = json.loads(stdout)
    assert d["rows"]["n_rows"] == sum(1 for c in d["rows"]["changes"]) > 0 and len(d["facts"]) == 2
    assert d["heldout"]["tokens"] > 0 and d["total"]["efficacy"]["after"]["n"] == 2
    assert _sha(src) == digest and out.is_file()
    first = _sha(out)
    rc, _, err = run_cli(argv, capsys)  # no --force: refused before any work, the file kept
    assert rc == 2 and err.count("\n") == 1 and "--force" in err and _sha(out) == first
    rc, _, err = run_cli([*argv[:5], src, *argv[6:]], capsys)  # the source as --out: refused, even with --force
    assert rc == 2 and "source model" in err and _sha(src) == digest
    rc, _, err = run_cli([*argv[:5], src, *argv[6:], "--force"], capsys)
    assert rc == 2 and "source model" in err and _sha(src) == digest
    rc, stdout, err = run_cli([*argv, "--force"], capsys)
    assert rc == 0, err
    assert "efficacy" in stdout and _sha(src) == digest


@pytest.mark.parametrize("lines, needle", [
    (["{not json"], "line 1"),
    ([{"prompt": "The cat sat on the"}], "'target'"),
    ([{"prompt": "a", "target": " b", "colour": 1}], "unknown field"),
    ([{"prompt": "a", "target": " b", "candidates": " b"}], "candidates"),
    ([], "no facts"),
])
def test_cli_bad_facts_file_is_one_line(tiny_ckpts, tmp_path, capsys, lines, needle):
    facts = _facts_file(tmp_path, lines)
    rc, _, err = run_cli(["edit", tiny_ckpts["engram"], "--facts", facts, "--out", tmp_path / "x.ckpt",
                           "--max-unrelated", "0", "--device", "cpu", "--quiet"], capsys)
    assert rc == 2 and err.count("\n") == 1 and needle in err and "Traceback" not in err, err
    assert not (tmp_path / "x.ckpt").exists()


def test_cli_model_without_engram_is_refused(tiny_ckpts, tmp_path, capsys):
    facts = _facts_file(tmp_path, TINY_FACTS)
    rc, _, err = run_cli(["edit", tiny_ckpts["moe"], "--facts", facts, "--out", tmp_path / "x.ckpt",
                           "--max-unrelated", "0", "--device", "cpu", "--quiet"], capsys)
    assert rc == 2 and err.count("\n") == 1 and "no Engram layers" in err


def test_app_page_edits_and_reverts(tiny_ckpts, monkeypatch):
    """The Edit page runs on its default fact and shows the library's numbers (rows changed as edit_rows gives them)."""
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    from engram_interp.edit.facts import check_fact

    root = Path(__file__).resolve().parents[1]
    monkeypatch.setenv("ENGRAM_INTERP_APP_CKPTS", str(tiny_ckpts["engram"]))
    monkeypatch.setenv("ENGRAM_INTERP_APP_CACHE", str(Path(tiny_ckpts["engram"]).parent / "app-cache"))
    monkeypatch.chdir(root)
    at = AppTest.from_file(str(root / "app" / "pages" / "12_Edit.py"), default_timeout=180)
    at.session_state["edit-steps"] = 5
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.exception or at.error]
    model = load(tiny_ckpts["engram"], device="cpu")
    fact = check_fact({"prompt": "The capital of France is", "target": " Rome", "candidates": [" Rome", " Paris", " London"],
                       "paraphrases": ["The French capital is"], "neighbours": ["The capital of Spain is"]}, "t")
    record, _ = edit_rows(model, [fact], EditConfig(steps=5))
    assert f"**{record.n_rows}** table rows changed" in "\n".join(m.value for m in at.markdown)
    table = at.dataframe[0].value
    assert list(table["question"])[:2] == ["target ranked first among the candidates", "p(target)"]
