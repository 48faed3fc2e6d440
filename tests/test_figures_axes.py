"""Figures read at 1400 px (issue 22 item 2), checked on the plotly figure objects: log axes with ticks
only at powers of 10 (1-2-5 over short ranges) and no minor labels, integer layer axes, one x range for
charts compared side by side, the whole legend on screen, bar labels clear of the error bars."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from engram_interp.analysis.ablation import AblationResult, SuiteScore
from engram_interp.analysis.attribution import Attribution, Component, TargetTrace
from engram_interp.figures.attribution import dla_figure, dla_range, trace_figure
from engram_interp.figures.axes import int_axis, log_axis, log_ticks, shared_range
from engram_interp.figures.memory import memory_norm_figure, memory_usage_figure
from engram_interp.figures import retained_figure


def _is_125_decade(t: float) -> bool:
    mant = t / 10 ** math.floor(math.log10(t) + 1e-9)
    return any(abs(mant - m) < 1e-9 for m in (1, 2, 5))


def test_log_ticks_hand_computed():
    assert log_ticks([3, 40]) == [2, 5, 10, 20, 50]  # under 2 decades: 1-2-5, just around the data
    assert log_ticks([1, 2500]) == [1, 10, 100, 1000, 10000]  # 3.4 decades: powers of 10 only
    assert log_ticks([1e-6, 0.3]) == pytest.approx([1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1])
    assert log_ticks([0, None, -1, 7]) == [5, 10]  # non-positive values ignored; two ticks at least
    assert log_ticks([]) == [1, 10]


def test_log_axis_labels_are_plain_numbers_and_cover_the_data():
    ax = log_axis([0.002, 0.06], "p")
    assert ax["type"] == "log" and ax["tickmode"] == "array" and ax["title"] == "p"
    assert ax["ticktext"] == ["0.002", "0.005", "0.01", "0.02", "0.05", "0.1"]
    assert 10 ** ax["range"][0] <= 0.002 and 10 ** ax["range"][1] >= 0.06
    assert log_axis([1, 5000])["ticktext"] == ["1", "10", "100", "1,000", "10,000"]
    assert log_axis([1e-7, 1])["ticktext"][0] == "1e-7"


def test_shared_range_holds_every_value_and_zero():
    lo, hi = shared_range([1.0, -2.0], [6.0, 0.5], pad=0.1)
    assert lo == pytest.approx(-2.8) and hi == pytest.approx(6.8)
    assert shared_range([1.0, 3.0]) [0] == 0.0  # bars start at 0
    assert int_axis("layer", 6)["dtick"] == 1 and int_axis(n=6)["tickformat"] == "d"


def _memory_result(n_layers=2, n_heads=8):
    heads = [SimpleNamespace(order=2 + h // 4, head=h % 4, zipf_exponent=0.9, norm_untouched=0.5,
                             rank_curve={"rank": [1, 2, 5, 30, 300], "load": [900, 400, 80, 7, 1]})
             for h in range(n_heads)]
    layers = [SimpleNamespace(layer=l, heads=heads, norm_by_load=[
        {"load_min": 1, "load_max": 1, "mean_norm": 0.6, "n_rows": 10},
        {"load_min": 2, "load_max": 3, "mean_norm": 0.7, "n_rows": 5},
        {"load_min": 64, "load_max": 127, "mean_norm": 0.9, "n_rows": 1}]) for l in (1, 3)[:n_layers]]
    return SimpleNamespace(name="engram", n_positions=4000, layers=layers)


def test_row_usage_log_axes_with_decade_ticks_and_the_whole_legend():
    fig = memory_usage_figure(_memory_result())
    for axis, values in ((fig.layout.xaxis, [1, 300]), (fig.layout.yaxis, [1, 900])):
        assert axis.type == "log" and axis.tickmode == "array"
        assert all(_is_125_decade(t) for t in axis.tickvals)
        assert min(axis.tickvals) <= min(values) and max(axis.tickvals) >= max(values)
    assert list(fig.layout.xaxis.tickvals) == [1, 10, 100, 1000]  # 3 decades: no 2 / 5 labels
    plot_area = fig.layout.height - fig.layout.margin.t - fig.layout.margin.b
    assert len(fig.data) == 16 and plot_area >= 21 * 16  # 16 legend lines fit the plot area: no scroll box


def test_row_norm_log_x_axis_with_readable_ticks():
    fig = memory_norm_figure(_memory_result())
    ax = fig.layout.xaxis
    assert ax.type == "log" and list(ax.tickvals) == [1, 10, 100, 1000]
    assert list(ax.ticktext) == ["1", "10", "100", "1,000"]
    assert not fig.layout.annotations  # labels on the plot overlapped the lines: the controls are legend entries
    for layer, line in zip((1, 3), [t for t in fig.data if t.name.startswith("layer")]):
        control = next(t for t in fig.data if t.name == f"untouched rows, layer {layer}")
        assert control.line.dash == "dot" and control.line.color == line.line.color and list(control.y) == [0.5, 0.5]


def _attribution(model: str, values: list[float]) -> Attribution:
    comps = [Component(name=f"c{i}", kind="attn", contribution=v, layer=i) for i, v in enumerate(values)]
    return Attribution(model=model, source="", text="x", tokens=["x"], target=" y", target_id=1, contrast=None,
                       contrast_id=None, logit=sum(values), probability=0.5, components=comps, remainder=0.0)


def test_side_by_side_attribution_charts_share_one_x_range_holding_every_bar():
    a, b = _attribution("engram", [1.0, 6.0, -0.5]), _attribution("moe", [2.0, 8.0, -1.5])
    rng = dla_range([a, b])
    figs = [dla_figure(x, rng) for x in (a, b)]
    assert list(figs[0].layout.xaxis.range) == list(figs[1].layout.xaxis.range) == rng
    assert rng[0] < -1.5 and rng[1] > 8.0  # no bar runs past the axis
    alone = dla_figure(a).layout.xaxis.range  # one chart alone: its own bars
    assert alone[0] < -0.5 and 6.0 < alone[1] < 8.0


def test_target_through_layers_log_probability_ticks_and_integer_layers():
    t = TargetTrace(model="engram", target=" States", target_id=3, layers=[0, 1, 2, 3, 4],
                    probability=[1e-5, 3e-4, 0.01, 0.2, 0.7], rank=[900, 60, 8, 2, 1], logit=[0.0] * 5)
    fig = trace_figure([t])
    y = fig.layout.yaxis
    assert y.type == "log" and list(y.tickvals) == pytest.approx([1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1])
    assert list(y.ticktext) == ["1e-5", "0.0001", "0.001", "0.01", "0.1", "1"]
    assert fig.layout.xaxis.dtick == 1 and fig.layout.xaxis.tickformat == "d"


def test_ablation_labels_sit_inside_the_bar_foot_clear_of_error_bars_and_the_100_line():
    s = {"facts": SuiteScore(full=0.5, ablated=0.25, retained=50.0, ci=[30.0, 112.0], n=40),
         "copying": SuiteScore(full=0.0, ablated=0.0, retained=None, ci=None, n=40)}
    res = AblationResult(models=[{"name": n, "engram_layers": [1], "mode": "zero", "suites": s} for n in ("a", "b")],
                         mode="zero")
    fig = retained_figure(res)
    for bar in fig.data:
        assert list(bar.text) == ["50%", "full = 0"]
        assert list(bar.textposition) == ["inside", "outside"] and bar.insidetextanchor == "start"
    assert fig.layout.yaxis.range[1] >= 112.0  # the highest whisker is on screen
    assert fig.layout.legend.orientation == "h"


def test_layer_axes_are_integers():
    from engram_interp.analysis.logit_lens import LensCurve, LogitLensResult
    from engram_interp.figures import cka_figure, kl_figure, token_lens_figure
    from tests.test_report_figures import _cka, _lens

    fig = cka_figure(_cka())
    for ax in (fig.layout.xaxis, fig.layout.yaxis):
        assert ax.dtick == 1 and ax.tickformat == "d"  # 0, 1, 2: never 0.5
    assert token_lens_figure(_lens("engram", 1.0)).layout.yaxis.dtick == 1
    curve = LensCurve(name="engram", layers=[0, 1, 2, 3], kl=[3.0, 2.0, 1.0, 0.0], kl_sem=[0.1] * 4,
                      entropy=[1.0] * 4, n_tokens=10)
    assert kl_figure(LogitLensResult(models=[curve])).layout.xaxis.dtick == 1
