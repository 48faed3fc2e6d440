"""Direct logit attribution: the sum rule against an independent float64 recomputation (dense, MoE,
Engram, mHC), per-expert splits, target-through-layers, bad input, and the CLI."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from engram_interp.analysis.attribution import direct_logit_attribution, resolve_token, target_through_layers
from engram_interp.cli import main
from engram_interp.errors import EngramInterpError
from engram_interp.model.moe import MoE
from engram_interp.testing import tiny_model

TEXT = "The capital of France is"
TARGET, CONTRAST = " the", " of"  # single tokens of the tiny tokenizer


def _model(kind: str):
    model = tiny_model(kind).double().requires_grad_(False)
    with torch.no_grad():  # logits of order 1 (random tiny models give ~0.01), so 1e-4 is a real check
        model.unembed.W_U.mul_(40)
    return model


def _expert_outputs(mlp: MoE, h: torch.Tensor) -> tuple[list[int], list[torch.Tensor], torch.Tensor]:
    """Routed experts of one token h [d]: their ids, g_i * expert_i(h), and the shared experts' output."""
    scores = torch.sigmoid(h @ mlp.router.T)
    ids = torch.topk(scores.float() + mlp.balance_bias, mlp.top_k).indices.tolist()
    g = scores[ids] / scores[ids].sum()
    outs = [g[j] * ((F.silu(h @ mlp.W_gate[e]) * (h @ mlp.W_up[e])) @ mlp.W_down[e]) for j, e in enumerate(ids)]
    shared = mlp.shared_experts(h) if mlp.shared_experts is not None else torch.zeros_like(h)
    return ids, outs, shared


@torch.no_grad()
def _reference(model, text: str, t: int, c: int | None, per_expert: bool) -> dict[str, float]:
    """Independent recomputation from the modules (no hooks): every write carried forward through the
    mHC mixings, read out, scaled by the final stream's 1/RMS, dotted with W_U[:, t] - W_U[:, c]."""
    tokens = model.to_tokens(text)
    canonical = model.compression_table[tokens]
    m = model.cfg.n_branches
    x = model.embed(tokens)
    if m > 1:
        x = x.unsqueeze(2).expand(-1, -1, m, -1).clone()
    writes: dict[str, torch.Tensor] = {"embed": (x[0, -1] if m > 1 else x[0, -1:]).clone()}  # [M, d]

    def carry(h_res):
        for k in writes:
            writes[k] = h_res[0, -1] @ writes[k]

    for l, block in enumerate(model.blocks):
        if block.engram is not None:
            y = block.engram(x, canonical)
            x = x + y
            if m == 1:
                writes[f"L{l}.engram"] = y[0, -1:]
            else:
                for b in range(m):
                    part = torch.zeros_like(y[0, -1])
                    part[b] = y[0, -1, b]
                    writes[f"L{l}.engram.b{b}"] = part
        for sub, hc_name, norm, fn in (("attn", "hc_attn", block.ln1, block.attn), ("mlp", "hc_mlp", block.ln2, block.mlp)):
            if m == 1:
                inp, post = x, torch.ones(1, dtype=x.dtype)
            else:
                hc = getattr(block, hc_name)
                pre, post_all, res = hc.coefficients(x)
                inp, post = hc.read(x, pre), post_all[0, -1].to(x.dtype)
                carry(res.to(x.dtype))
            normed = norm(inp)
            out = fn(normed)
            if sub == "mlp" and per_expert and isinstance(fn, MoE):
                ids, outs, shared = _expert_outputs(fn, normed[0, -1])
                for e, o in zip(ids, outs):
                    writes[f"L{l}.expert{e}"] = post[:, None] * o
                writes[f"L{l}.shared"] = post[:, None] * shared
            else:
                writes[f"L{l}.{sub}"] = post[:, None] * out[0, -1]
            x = x + out if m == 1 else hc.write(x, res, post_all, out)
    r = model.readout_weights.double() if m > 1 else torch.ones(1, dtype=torch.float64)
    final = (r[:, None] * x[0, -1].reshape(m, -1)).sum(0)
    scale = torch.rsqrt(final.pow(2).mean() + model.ln_final.eps)
    direction = model.unembed.W_U[:, t] - (model.unembed.W_U[:, c] if c is not None else 0)
    return {k: float(((r[:, None] * v).sum(0) * scale * model.ln_final.w) @ direction) for k, v in writes.items()}


@pytest.mark.parametrize("kind, contrast", [("dense", None), ("dense", CONTRAST), ("moe", CONTRAST),
                                            ("engram", None), ("mhc", CONTRAST)])
def test_sum_rule_and_components_match_float64_reference(kind, contrast):
    model = _model(kind)
    per_expert = kind != "dense"
    a = direct_logit_attribution(model, TEXT, TARGET, contrast, per_expert=per_expert)
    t = resolve_token(model, TARGET)
    c = resolve_token(model, contrast) if contrast else None
    logits = model(model.to_tokens(TEXT))[0, -1].double()
    own = float(logits[t] - (logits[c] if c is not None else 0))
    assert abs(own) > 0.1  # a non-trivial logit to split
    assert a.logit == pytest.approx(own, abs=1e-9)
    assert sum(x.contribution for x in a.components) + a.remainder == pytest.approx(own, abs=1e-4)
    assert abs(a.remainder) < 1e-4  # bias-free model: the components explain everything
    ref = _reference(model, TEXT, t, c, per_expert)
    got = {x.name: x.contribution for x in a.components}
    assert got.keys() == ref.keys()
    for name in ref:
        assert got[name] == pytest.approx(ref[name], abs=1e-4), name
    assert sum(ref.values()) == pytest.approx(own, abs=1e-4)  # the reference obeys the rule on its own


def test_mhc_needs_the_mixing():
    """Without carrying writes through H_res the per-component numbers would be wrong: check that the
    mixing is far from the identity in the tiny mHC model, so the test above can tell."""
    model = _model("mhc")
    names = [f"blocks.{l}.hc_attn.hook_h_res" for l in range(model.info.n_layers)]
    _, cache = model.run_with_cache(model.to_tokens(TEXT), names_filter=lambda n: n in names)
    eye = torch.eye(model.info.n_branches, dtype=torch.float64)
    assert max(float((cache[n][0, -1].double() - eye).abs().max()) for n in names) > 0.05


def test_mlp_split_into_experts_adds_up_to_the_layer():
    model = _model("moe")
    whole = {c.name: c.contribution for c in direct_logit_attribution(model, TEXT, TARGET).components}
    split = direct_logit_attribution(model, TEXT, TARGET, per_expert=True)
    for l in model.info.moe_layers:
        parts = [c.contribution for c in split.components if c.layer == l and c.kind in ("expert", "shared")]
        assert len(parts) == 3  # top_k = 2 routed + shared
        assert sum(parts) == pytest.approx(whole[f"L{l}.mlp"], abs=1e-6)
    with pytest.raises(EngramInterpError, match="no MoE layers"):
        direct_logit_attribution(_model("dense"), TEXT, TARGET, per_expert=True)


def test_target_through_layers_ends_at_the_model_output():
    models = {"dense": _model("dense"), "engram": _model("engram")}
    traces = target_through_layers(models, TEXT, TARGET)
    assert [t.model for t in traces] == ["dense", "engram"]
    for tr, model in zip(traces, models.values()):
        assert tr.layers == list(range(model.info.n_layers + 1))
        logits = model(model.to_tokens(TEXT))[0, -1].double()
        probs = torch.softmax(logits, -1)
        assert tr.probability[-1] == pytest.approx(float(probs[tr.target_id]), abs=1e-6)
        assert tr.rank[-1] == int((logits > logits[tr.target_id]).sum()) + 1
        assert all(1 <= r <= model.info.vocab_size for r in tr.rank)


@pytest.mark.parametrize("target, message", [
    (" capital of", "2 tokens"), ("", "empty"), (" Paris", "3 tokens"),
])
def test_bad_targets_are_one_line_errors(target, message):
    with pytest.raises(EngramInterpError, match=message):
        direct_logit_attribution(_model("dense"), TEXT, target)


def test_same_target_and_contrast_and_empty_text():
    model = _model("dense")
    with pytest.raises(EngramInterpError, match="same token"):
        direct_logit_attribution(model, TEXT, TARGET, TARGET)
    with pytest.raises(EngramInterpError, match="empty"):
        direct_logit_attribution(model, "  ", TARGET)


def test_cli_attribute_json_and_errors(tiny_ckpts, capsys):
    rc = main(["attribute", str(tiny_ckpts["engram"]), "--text", TEXT, "--target", TARGET, "--contrast", CONTRAST,
               "--json", "--device", "cpu"])
    assert rc == 0
    d = json.loads(capsys.readouterr().out)
    assert {"target", "contrast", "logit", "components", "remainder", "source"} <= d.keys()
    assert d["source"].endswith("engram.ckpt")
    total = sum(c["contribution"] for c in d["components"]) + d["remainder"]
    assert total == pytest.approx(d["logit"], abs=1e-4)
    assert {"L1.engram", "L2.engram", "embed"} <= {c["name"] for c in d["components"]}
    assert len(d["through_layers"]["rank"]) == 5
    rc = main(["attribute", str(tiny_ckpts["engram"]), str(tiny_ckpts["moe"]), "--text", TEXT, "--target", TARGET,
               "--device", "cpu"])
    out = capsys.readouterr().out
    assert rc == 0 and "remainder" in out and "moe" in out
    assert main(["attribute", str(tiny_ckpts["dense"]), "--text", TEXT, "--target", " Paris", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "3 tokens" in err[0]


ITEMS = [  # prompts of different lengths: the batch is right-padded
    {"prompt": "The capital of France is", "answer": " the", "candidates": [" of", " the", " a"]},
    {"prompt": "The fox", "answer": " of", "candidates": [" of", " is"]},
    {"prompt": "Water boils at one hundred", "answer": " a", "candidates": [" the", " a"]},
    {"prompt": "no distractor here", "answer": " fox", "candidates": [" fox"]},  # skipped
]


def test_attribution_over_items_matches_one_prompt_at_a_time():
    from engram_interp.analysis.attribution_items import attribution_over_items

    model = _model("engram")
    s = attribution_over_items(model, ITEMS, suite="toy", batch_size=2, n_boot=200)
    assert (s.n_items, s.n_skipped) == (3, 1)
    singles = [direct_logit_attribution(model, it["prompt"], it["answer"], c)
               for it, c in zip(ITEMS[:3], [" of", " is", " the"])]
    assert s.metric.mean == pytest.approx(sum(a.logit for a in singles) / 3, abs=1e-6)
    engram = [sum(c.contribution for c in a.components if c.kind == "engram") for a in singles]
    kinds = {k.name: k for k in s.kinds}
    assert kinds["engram"].mean == pytest.approx(sum(engram) / 3, abs=1e-6)
    assert sum(k.mean for k in s.kinds) == pytest.approx(s.metric.mean, abs=1e-4)
    for stat in [s.metric, *s.kinds, *s.components]:
        assert stat.ci_low <= stat.mean + 1e-12 and stat.mean <= stat.ci_high + 1e-12
    assert s.remainder_max < 1e-4
    assert attribution_over_items(model, ITEMS[3:]) is None


def test_report_section_marks_intervals_that_cover_zero(tmp_path):
    from engram_interp.analysis.attribution_items import ComponentStat, ItemAttribution
    from engram_interp.figures import attribution_section, write_report

    stat = ComponentStat
    s = ItemAttribution(model="m", suite="entities", n_items=10, n_skipped=0, metric=stat("metric", 2.0, 1.0, 3.0),
                        kinds=[stat("embed", 0.1, -0.2, 0.4), stat("engram", 1.0, 0.5, 1.5),
                               stat("attn", 0.4, 0.1, 0.7), stat("mlp", 0.5, -0.1, 1.1)])
    html = attribution_section([s], include_plotlyjs=False)
    assert html.count("not established") == 2 and "entities" in html
    assert attribution_section([None]) == ""
    paths = write_report(tmp_path, attribution=[s])
    page = paths["html"].read_text()
    assert "Direct logit attribution on entities prompts" in page and "plotly" in page.lower()
    assert json.loads(paths["json"].read_text())["attribution"][0]["kinds"][1]["established"] is True


def test_target_that_maps_to_another_token_is_not_in_the_vocabulary(monkeypatch):
    """A tokenizer with an unknown-token id encodes an out-of-vocabulary string to one id that is not it."""
    model = _model("dense")
    unk = resolve_token(model, CONTRAST)
    monkeypatch.setattr(model, "encode", lambda text: [unk])
    with pytest.raises(EngramInterpError, match="not in the vocabulary"):
        resolve_token(model, " Zyzzyva")
    assert resolve_token(model, CONTRAST) == unk


def test_a_head_that_is_not_linear_in_the_stream_is_refused(monkeypatch):
    """If a backend's readout were not linear, per-component readouts would not add up: refused, not shown."""
    model = _model("dense")
    monkeypatch.setattr(model, "readout", lambda resid: resid.abs())  # the forward uses it too
    with pytest.raises(EngramInterpError, match="do not add up"):
        direct_logit_attribution(model, TEXT, TARGET, CONTRAST)
