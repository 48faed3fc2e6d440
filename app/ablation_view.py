"""The Ablation page's retained-performance view: the figure and the table per Engram model, drawn for
the cached models at once and again after each model computed (``results.ablation`` runs them)."""

from __future__ import annotations

from collections.abc import Sequence

from app import state
from app.results import ABLATION_DEFAULTS, _suites_key, ablation, ablation_result
from app.state import Entry


def ablation_table(entries: Sequence[Entry], suites: dict, per_layer: bool = False) -> None:
    """Per Engram model and suite: full and ablated accuracy (n, chance level), retained % with its
    bootstrap CI, and a chart, drawn for the cached models at once and then again after each model
    computed; models without Engram are named once (100% by construction).
    ``per_layer``: also each Engram layer suppressed alone (one more pass per layer and model)."""
    import streamlit as st

    from engram_interp.errors import EngramInterpError
    from engram_interp.figures import retained_figure

    params = dict(ABLATION_DEFAULTS, per_layer=per_layer)
    key = dict(params, suites=_suites_key(suites))
    chart, table, note = st.empty(), st.empty(), st.empty()
    tables = {e.label: hit for e in entries if (hit := state.cached_result("ablation", [e.sha], key)) is not None}

    def draw() -> None:
        shown = {e.label: tables[e.label] for e in entries if e.label in tables}  # in the order of ``entries``
        n = len(shown)
        chart.plotly_chart(retained_figure(ablation_result(shown, entries, params["mode"])), width="stretch",
                           key=f"abl-fig-{n}")
        table.dataframe(_ablation_rows(shown, suites), hide_index=True, width="stretch", key=f"abl-table-{n}",
                        column_config={"retained %": st.column_config.TextColumn(width="medium"),
                                       "full acc [95% CI]": st.column_config.TextColumn(width="medium")})
        note.caption(("" if n == len(entries) else f"{n} of {len(entries)} models so far. ")
                     + "Retained = 100 x ablated accuracy / full accuracy (not defined when the full model scores 0). "
                     "CI of retained: paired Poisson bootstrap over items; CI of full accuracy: Wilson interval. Chance: "
                     "1 / number of candidates for multiple-choice items, 0 for exact-match items. A retained % means "
                     "little while the full accuracy's interval reaches the chance level.")

    if tables:
        draw()
    for e in entries:
        if e.label in tables:
            continue
        try:
            tables[e.label] = ablation(e, suites, params)
        except EngramInterpError as exc:
            st.error(str(exc))
            return
        draw()


def _ablation_rows(tables: dict[str, dict], suites: dict):
    """The ablation table: one row per (model, suite)."""
    import pandas as pd

    from engram_interp.claims.sentences import chance_level, wilson_interval

    chance = {name: chance_level(items) for name, items in suites.items()}
    rows = []
    for label, table in tables.items():
        for suite, s in sorted(table.items()):
            ci = s.get("ci")
            lo, hi = wilson_interval(s["full"] * s["n"], s["n"])
            rows.append({"model": label, "suite": suite, "n": s["n"], "chance": round(chance.get(suite, float("nan")), 3),
                         "full acc [95% CI]": f"{s['full']:.3f} [{lo:.2f}, {hi:.2f}]",
                         "ablated acc": round(s["ablated"], 3),
                         "retained %": "n/a: full = 0" if s["retained"] is None else f"{s['retained']:.1f}",
                         "95% CI": "-" if not ci or None in ci else f"[{ci[0]:.1f}, {ci[1]:.1f}]",
                         **{f"retained % (layer {l} only)": None if v.get("retained") is None else round(v["retained"], 1)
                            for l, v in sorted(s.get("per_layer", {}).items())}})
    return pd.DataFrame(rows)
