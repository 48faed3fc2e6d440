"""locate: row contributions add up to attribute's Engram term (tiny models and the bundled checkpoint),
one row's contribution recomputed by hand in float64 from the raw weights, zeroing / restoring row
groups equals running the model with those table rows zeroed, collisions against a brute-force count,
and the CLI (table, --json, one-line errors)."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest
import torch

import engram_interp as ei
from engram_interp.analysis.attribution import direct_logit_attribution
from engram_interp.analysis.locate import locate
from engram_interp.cli import main
from engram_interp.errors import EngramInterpError
from engram_interp.testing import tiny_config, tiny_model, tiny_tokenizer

CKPT = Path(__file__).resolve().parents[1] / "checkpoints" / "engram.ckpt"
PROMPT, TARGET, CONTRAST = "Once upon a time there lived a", " fox", " the"  # single tokens of the tiny tokenizer
FACT = ("Southern United", " States", " Kingdom")  # a completion the bundled model gets right


def _biased(kind: str = "engram", use_conv: bool = True):
    """A tiny model whose Engram projections carry random biases (the bundled checkpoint has them)."""
    from engram_interp.model import EngramTransformer
    from engram_interp.tokenizer import build_compression

    if use_conv:
        model = tiny_model(kind)
    else:
        tok = tiny_tokenizer()
        cfg = tiny_config(kind, tok.get_vocab_size())
        cfg = dataclasses.replace(cfg, engram=dataclasses.replace(cfg.engram, use_conv=False))
        torch.manual_seed(0)
        model = EngramTransformer(cfg, tokenizer=tok, compression=build_compression(tok)).eval()
        for l in model.engram_layers:
            model.blocks[l].engram.memory.weight.data.normal_()
    gen = torch.Generator().manual_seed(1)
    for l in model.engram_layers:
        e = model.blocks[l].engram
        for lin in [e.W_V, *e.W_K]:
            lin.bias.data = torch.randn(lin.bias.shape, generator=gen) * 0.3
    return model.requires_grad_(False)


@pytest.fixture(scope="module")
def bundled():
    if not CKPT.is_file():
        pytest.skip("checkpoints/engram.ckpt is not bundled in this checkout")
    return ei.load(CKPT, device="cpu").requires_grad_(False)


def _engram_terms(model, prompt, target, contrast) -> dict[int, float]:
    a = direct_logit_attribution(model, prompt, target, contrast)
    return {l: sum(c.contribution for c in a.components if c.kind == "engram" and c.layer == l) for l in model.engram_layers}


def _check_sum(model, prompt, target, contrast):
    res = locate(model, prompt, target, contrast)
    terms = _engram_terms(model, prompt, target, contrast)
    for lay in res.layers:
        rows = [r.contribution for r in lay.rows]
        assert len(rows) == model.engram_heads(lay.layer).n_heads
        assert abs(sum(rows) + lay.value_bias + lay.conv - terms[lay.layer]) <= 1e-5
        assert abs(lay.engram_term - terms[lay.layer]) <= 1e-9
    return res


@pytest.mark.parametrize("kind, contrast", [("engram", CONTRAST), ("engram", None), ("mhc", CONTRAST)])
def test_rows_sum_to_attribute_engram_term_tiny(kind, contrast):
    res = _check_sum(_biased(kind), PROMPT, TARGET, contrast)
    assert all(abs(lay.value_bias) > 1e-4 and abs(lay.conv) > 1e-4 for lay in res.layers)  # every term is exercised


def test_without_conv_the_rows_and_bias_are_the_whole_term():
    res = _check_sum(_biased(use_conv=False), PROMPT, TARGET, CONTRAST)
    assert all(abs(lay.conv) < 1e-6 and abs(lay.rows_sum) > 1e-3 for lay in res.layers)


def test_rows_sum_to_attribute_engram_term_bundled(bundled):
    res = _check_sum(bundled, *FACT)
    assert res.logprob > -1.0 and all(abs(lay.value_bias) > 0 for lay in res.layers)


def test_one_row_by_hand_in_float64(bundled):
    """Hash, gate, value and frozen readout of one row recomputed from the raw float64 weights."""
    from engram_interp.memory import CkptTables

    prompt, target, contrast = FACT
    res = locate(bundled, prompt, target, contrast)
    row = max((r for lay in res.layers for r in lay.rows), key=lambda r: abs(r.contribution))
    m64 = copy.deepcopy(bundled).double()
    tokens = m64.to_tokens(prompt)
    eng = m64.blocks[row.layer].engram
    src = CkptTables(CKPT)  # the memory inspector's numpy hashing, not the model's
    assert int(src.rows(row.layer, src.contexts(tokens[0].tolist()))[-1, row.column]) == row.row
    names = [f"blocks.{row.layer}.hook_resid_pre", "blocks.7.hook_resid_post"]
    _, cache = m64.run_with_cache(tokens, names_filter=lambda n: n in names)
    h, final = cache[names[0]][0, -1], cache[names[1]][0, -1]
    offsets = torch.cumsum(eng.primes, 0) - eng.primes
    e = torch.cat([eng.memory.weight[int(r) + int(o)] for r, o in zip(src.rows(row.layer, src.contexts(tokens[0].tolist()))[-1], offsets)])

    def rms(x, w, eps):
        return x / torch.sqrt(x.pow(2).mean() + eps) * w

    eps32 = torch.finfo(torch.float32).eps  # nn.RMSNorm(eps=None) in the float32 model
    k = rms(eng.W_K[0].weight @ e + eng.W_K[0].bias, eng.key_norm[0].weight, eps32)
    q = rms(h, eng.query_norm[0].weight, eps32)
    s = (k @ q) / 128 ** 0.5
    alpha = torch.sigmoid(torch.sign(s) * torch.sqrt(s.abs().clamp_min(1e-6)))
    d = eng.memory.weight.shape[1]
    r = eng.memory.weight[row.row + int(offsets[row.column])]
    u = alpha * (eng.W_V.weight[:, row.column * d:(row.column + 1) * d] @ r)
    scale = 1 / torch.sqrt(final.pow(2).mean() + m64.ln_final.eps)
    w_u = m64.unembed.W_U
    t, c = bundled.encode(target)[0], bundled.encode(contrast)[0]
    by_hand = float((u * scale * m64.ln_final.w) @ (w_u[:, t] - w_u[:, c]))
    assert abs(row.contribution - by_hand) <= 1e-5 * max(1.0, abs(by_hand)) and abs(by_hand) > 1e-3


def _zeroed_logprob(model, prompt, target, zero: dict[int, dict[int, set[int]]]) -> float:
    """log p(target) of a copy of ``model`` whose table rows ``zero[layer][column]`` are set to 0."""
    m = copy.deepcopy(model)
    for l, cols in zero.items():
        eng = m.blocks[l].engram
        offsets = torch.cumsum(eng.primes, 0) - eng.primes
        for h, rows in cols.items():
            for r in rows:
                eng.memory.weight.data[r + int(offsets[h])] = 0.0
    logits = m(m.to_tokens(prompt))[0, -1].double()
    return float(torch.log_softmax(logits, -1)[model.encode(target)[0]])


@pytest.mark.parametrize("scope", ["last", "all"])
def test_zeroing_and_restoring_equal_zeroed_table_rows(scope):
    model = _biased()
    res = locate(model, PROMPT, TARGET, CONTRAST, scope=scope)
    read = {lay.layer: {} for lay in res.layers}  # the rows of the groups (scope)
    for lay in res.layers:
        for r in lay.rows:
            read[lay.layer].setdefault(r.column, set()).add(r.row)
    _, cache = model.run_with_cache(model.to_tokens(PROMPT), names_filter=lambda n: n.endswith("hook_hash_ids"))
    every = {l: {h: set(cache[f"blocks.{l}.engram.hook_hash_ids"][0, :, h].tolist()) for h in range(8)} for l in read}
    assert abs(_zeroed_logprob(model, PROMPT, TARGET, every) - res.logprob_all_zeroed) <= 1e-5
    lay = res.layers[1]
    for g in [lay.groups[0], lay.groups[4], lay.groups[-1]]:  # a head, an order, the layer
        cols = {h: rows for h, rows in read[lay.layer].items()
                if (g.order is None or 2 + h // 4 == g.order) and (g.head is None or h % 4 == g.head)}
        assert g.n_rows == sum(len(v) for v in cols.values())
        assert abs(_zeroed_logprob(model, PROMPT, TARGET, {lay.layer: cols}) - g.logprob_zeroed) <= 1e-5
        rest = {l: {h: rows - (cols.get(h, set()) if l == lay.layer else set()) for h, rows in c.items()} for l, c in every.items()}
        assert abs(_zeroed_logprob(model, PROMPT, TARGET, rest) - g.logprob_restored) <= 1e-5
    assert any(abs(g.logprob_zeroed - res.logprob) > 1e-3 for g in lay.groups)  # the groups matter


def test_collisions_match_a_brute_force_count():
    from engram_interp.memory import CkptTables

    model = tiny_model("engram").requires_grad_(False)
    corpus = ["Once upon a time there lived a fox who loved grapes.", "The capital of Italy is Rome. The way a fox ran."]
    path = ei.save(model, Path(__import__("tempfile").mkdtemp()) / "t.ckpt")
    res = locate(model, PROMPT, TARGET, corpus=corpus, tables=CkptTables(path))
    canon = model.compression_table
    seen = {}  # (layer, column) -> {n-gram key: row}
    for text in corpus:
        tokens = model.to_tokens(text)
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_hash_ids"))
        ids = [2, 2] + canon[tokens[0]].tolist()  # canonical pad before the start
        for l in model.engram_layers:
            for p in range(1, tokens.shape[1]):  # BOS is no corpus position
                for h in range(8):
                    n = 2 + h // 4
                    seen.setdefault((l, h), {})[tuple(ids[p + 2 - n + 1: p + 3])] = int(cache[f"blocks.{l}.engram.hook_hash_ids"][0, p, h])
    prompt_ids = [2, 2] + canon[model.to_tokens(PROMPT)[0]].tolist()
    for lay in res.layers:
        for r in lay.rows:
            own = tuple(prompt_ids[len(prompt_ids) - r.order:])
            mates = [k for k, row in seen[(lay.layer, r.column)].items() if row == r.row and k != own]
            assert r.n_shared == len(mates)
    assert res.corpus["texts"] == 2 and any(r.n_shared for lay in res.layers for r in lay.rows)


def run_cli(argv, capsys):
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_json_and_table(tiny_ckpts, capsys):
    rc, out, _ = run_cli(["locate", tiny_ckpts["engram"], "--prompt", PROMPT, "--target", TARGET, "--contrast", CONTRAST,
                          "--json", "--no-collisions", "--device", "cpu"], capsys)
    d = json.loads(out)
    assert rc == 0 and [l["layer"] for l in d["layers"]] == [1, 2] and d["corpus"] is None
    lay = d["layers"][0]
    assert abs(sum(r["contribution"] for r in lay["rows"]) + lay["value_bias"] + lay["conv"] - lay["engram_term"]) <= 1e-5
    rc, out, _ = run_cli(["locate", tiny_ckpts["engram"], "--prompt", PROMPT, "--target", TARGET, "--all-positions",
                          "--no-collisions", "--device", "cpu"], capsys)
    assert rc == 0 and "layer 2" in out and "rows read at every position" in out


@pytest.mark.parametrize("kind, flags, needle", [
    ("engram", ["--prompt", PROMPT, "--target", " Paris"], "is 3 tokens"),
    ("engram", ["--prompt", "   ", "--target", TARGET], "prompt is empty"),
    ("moe", ["--prompt", PROMPT, "--target", TARGET], "has no Engram layers"),
])
def test_cli_one_line_errors(tiny_ckpts, capsys, kind, flags, needle):
    rc, _, err = run_cli(["locate", tiny_ckpts[kind], *flags, "--no-collisions", "--device", "cpu"], capsys)
    assert rc == 2 and err.count("\n") == 1 and needle in err and "Traceback" not in err, err


def test_backend_without_accessors_is_refused_in_one_line():
    model = tiny_model("engram")
    with pytest.raises(EngramInterpError, match="scope must be"):
        locate(model, PROMPT, TARGET, scope="everywhere")
    from engram_interp.interface import InterpModel

    with pytest.raises(EngramInterpError, match="does not expose the value projection"):
        InterpModel.engram_value_projection(model, 1)


def test_figure_bars_sum_to_the_engram_terms():
    from engram_interp.figures import locate_figure

    res = locate(_biased(), PROMPT, TARGET, CONTRAST)
    fig = locate_figure(res)
    for lay in res.layers:
        total = sum(x for x, y in zip(fig.data[0].x, fig.data[0].y) if y.startswith(f"L{lay.layer} "))
        assert abs(total - lay.engram_term) <= 1e-5


def test_qwen4_exp_is_refused_in_one_line(tmp_path):
    pytest.importorskip("transformers")
    from engram_interp.backends.testing import tiny_qwen4_exp_folder

    model = ei.load(tiny_qwen4_exp_folder(tmp_path / "qwen4"), device="cpu").requires_grad_(False)
    assert model.engram_layers
    target = model.decode_token(model.encode(" the")[0])
    with pytest.raises(EngramInterpError, match="does not expose the layout of its memory heads") as exc:
        locate(model, "Once upon a time", target)
    assert "\n" not in str(exc.value)


def test_report_locate_section(tiny_ckpts, tmp_path, capsys):
    """`report --locate PROMPT|TARGET|CONTRAST`: results.json carries the same LocateResult as the library,
    and the HTML its section; a malformed spec is one line before any analysis runs."""
    out = tmp_path / "rep"
    spec = f"{PROMPT}|{TARGET}|{CONTRAST}"
    rc = main(["report", str(tiny_ckpts["engram"]), "--out", str(out), "--max-tokens", "200", "--cka-batch", "16",
               "--device", "cpu", "--quiet", "--no-twin", "--locate", spec])
    assert rc == 0, capsys.readouterr().err
    got = json.loads((out / "results.json").read_text())["locate"][0]
    want = locate(ei.load(tiny_ckpts["engram"], device="cpu"), PROMPT, TARGET, CONTRAST).to_dict()
    assert [l["engram_term"] for l in got["layers"]] == pytest.approx([l["engram_term"] for l in want["layers"]], abs=1e-6)
    assert "Locate: engram" in (out / "report.html").read_text()
    capsys.readouterr()
    assert main(["report", str(tiny_ckpts["engram"]), "--out", str(tmp_path / "r2"), "--locate", "no target"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "PROMPT|TARGET" in err[0] and not (tmp_path / "r2").exists()
