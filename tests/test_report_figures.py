"""Figure fixes of issue 9, item 7 (and the ablation figure of item 6), checked on the figure objects."""

from __future__ import annotations

from engram_interp.analysis.ablation import AblationResult, SuiteScore
from engram_interp.analysis.cka_models import CKAResult
from engram_interp.analysis.logit_lens import TokenLens
from engram_interp.figures import cka_figure, retained_figure, shared_kl_max, token_lens_figure


def _cka() -> CKAResult:
    m = [[0.9, 0.5, 0.1], [0.4, 0.8, 0.6], [0.2, 0.5, 0.9]]
    return CKAResult(name_a="engram", name_b="moe", layers_a=[0, 1, 2], layers_b=[0, 1, 2], cka=m, ci_low=m, ci_high=m,
                     soft_alignment=[0.0, 1.5, 2.0], soft_alignment_ci=[[0.0, 1.4, 2.0], [0.1, 1.6, 2.0]], argmax=[0, 1, 2],
                     k=1, n_examples=10, n_batches=2, batch_size=5, tokens="all", engram_layers_a=[1],
                     soft_alignment_range=[0.0, 2.0],
                     references={"control": {"name": "engram-null", "soft_alignment": [0.0, 1.0, 2.0],
                                             "soft_alignment_ci": [[0.0, 0.9, 2.0], [0.1, 1.1, 2.0]], "k": 1}})


def test_cka_legend_clear_of_the_colourbar_and_diagonal_visible_in_it():
    fig = cka_figure(_cka())
    assert fig.layout.legend.orientation == "h" and fig.layout.legend.y < 0  # below the plot, away from the colourbar
    diag = next(t for t in fig.data if (t.name or "").startswith("diagonal"))
    assert diag.line.color.lower() not in ("white", "#fff", "#ffffff")
    assert any("Engram-null control" in (t.name or "") for t in fig.data)


def _lens(name: str, scale: float) -> TokenLens:
    toks = ["<|bos|>", " Alexander", " the", " Great", "\n", "\u00e9"]
    kl = [[scale * (i + l) for i in range(len(toks))] for l in range(3)]
    return TokenLens(name=name, tokens=toks, layers=[0, 1, 2], kl=kl, entropy=kl,
                     top_tokens=[[[(" x", 0.5)] for _ in toks] for _ in range(3)])


def test_token_lens_in_nats_on_one_scale_with_readable_labels_and_the_text():
    a, b = _lens("engram", 1.0), _lens("moe", 0.1)
    zmax = shared_kl_max([a, b])
    assert zmax == max(max(r) for r in a.kl)
    figs = [token_lens_figure(t, zmax=zmax, text="Alexander the Great") for t in (a, b)]
    for fig in figs:
        hm = fig.data[0]
        assert hm.colorbar.title.text == "KL (nats)" and hm.zmax == zmax and hm.zmin == 0
        assert list(hm.x)[1] == "1 ' Alexander'" and list(hm.x)[4] == "4 '\\n'"  # whole token, whitespace visible
        assert "Alexander the Great" in fig.layout.title.text


def test_retained_figure_skips_models_without_engram_and_marks_full_zero():
    s = {"facts": SuiteScore(full=0.5, ablated=0.25, retained=50.0, ci=[30.0, 70.0], n=40),
         "copying": SuiteScore(full=0.0, ablated=0.0, retained=None, ci=None, n=40)}
    res = AblationResult(models=[{"name": "engram", "engram_layers": [1], "mode": "zero", "suites": s},
                                 {"name": "moe", "engram_layers": [], "mode": "zero", "suites": s}], mode="zero")
    fig = retained_figure(res)
    assert [t.name for t in fig.data] == ["engram"]
    assert "moe: no Engram layers, retains 100% by construction" in fig.layout.title.text
    text = list(fig.data[0].text)
    assert text == ["50%", "full = 0"]  # full and ablated accuracy and n are in the hover and the table
