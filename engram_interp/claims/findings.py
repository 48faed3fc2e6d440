"""The paper's four findings, measured: effect, across-seed band, controls, verdict.

Input: the measurement JSON that ``checkpoints/measure.sh`` writes (one file per analysis, the
commands' own ``--json`` output). Output: a list of :class:`Finding` (for the app's Overview and
for ``engram-interp findings``) and the Markdown of ``checkpoints/FINDINGS.md``. No number is
typed by hand: every figure printed is read from those files or computed here from them.

Arms are recognised by checkpoint name: ``engram``, ``moe``, ``engram-null`` and their seeds
``ARM-seedN`` (:func:`engram_interp.analysis.seeds.arm_of`); the untrained twin of ``engram`` is
``engram~twin`` (measured with ``--twin``). Each finding reduces every seed (or seed pair) to one
number, summarises the seeds with a :class:`~engram_interp.analysis.seeds.Band` (min..max over
seeds) and asks the one verdict function (:func:`engram_interp.claims.verdict.verdict`):

- **reproduced**: at least ``MIN_SEEDS`` seeds of every arm involved, and the Engram band lies
  entirely on the paper's side of the MoE band (where the finding compares with MoE), of the
  Engram-null control band, of the untrained twin's value (every finding but the held-out loss,
  which compares trained arms) and of zero for a sign test;
- **not reproduced**: the same on the other side of every control;
- **not testable**: the measurement cannot speak (e.g. the full models score near chance on the
  suite the contrast needs);
- **not established**: everything else (bands overlap, a control is missing or covers it, one seed).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from engram_interp.analysis.seeds import Band, arm_of, band, early_mean
from engram_interp.claims.sentences import TWIN, twin_name
from engram_interp.claims.verdict import MIN_SEEDS, Control, verdict
from engram_interp.errors import EngramInterpError

__all__ = ["Finding", "MIN_SEEDS", "IN_CONTEXT_TARGET", "compute_findings", "format_band", "load_measurements",
           "render_markdown"]

IN_CONTEXT_TARGET = 0.8  # full-model accuracy (Engram and MoE) an in-context suite needs for the contrast
FACT_TARGET = 0.5  # full Engram accuracy on a closed-book fact suite for the other extreme
IN_CONTEXT_SUITES = ("reading", "open_book", "kv_recall", "name_copy")  # the answer is in the prompt; order of preference
FACT_SUITES = ("facts_world", "facts_real")  # closed book: the answer must come from the weights
ARMS = ("engram", "moe", "engram-null")
FILES = {"lens": "logit_lens.json", "cka": "cka_all_tokens.json", "cka_null": "cka_null_vs_moe.json",
         "gates": "gates_entities_engram.json", "gates_null": "gates_entities_null.json", "ablate": "ablate_zero.json"}


@dataclass
class Finding:
    """One paper finding: ``title``, ``claim`` (the paper's statement), ``metric`` (what one seed is
    reduced to, with units), ``bands`` (arm -> Band dict of that metric), ``verdict`` (one of the
    four in the module doc), ``reason`` (one sentence) and ``source`` (the measurement files)."""

    key: str
    title: str
    claim: str
    metric: str
    bands: dict[str, dict | None]
    verdict: str
    reason: str
    source: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def load_measurements(folder: str | Path) -> dict[str, Any]:
    """The measurement files of ``folder`` that exist: ``{key: parsed JSON}`` (keys of ``FILES``,
    plus ``cards``: ``{checkpoint name: card JSON}`` from ``card-*.json``). User error if none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EngramInterpError(f"no measurement folder {folder} (run `bash checkpoints/measure.sh`)")
    out: dict[str, Any] = {k: _read(folder / f) for k, f in FILES.items() if (folder / f).is_file()}
    out["cards"] = {p.stem[len("card-"):]: _read(p) for p in sorted(folder.glob("card-*.json"))}
    if not any(v for v in out.values()):
        raise EngramInterpError(f"{folder} holds no measurement JSON (run `bash checkpoints/measure.sh`)")
    return out


def _read(path: Path) -> Any:
    """One measurement file's JSON; a user error naming the file when it is not JSON (e.g. empty while
    measure.sh is still writing it)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise EngramInterpError(f"{path} is not a measurement JSON ({type(exc).__name__}); re-run "
                                "`bash checkpoints/measure.sh`") from None


def _bands_by_arm(values: dict[str, float | None]) -> dict[str, Band | None]:
    grouped: dict[str, list[float | None]] = {}
    for name, v in values.items():
        grouped.setdefault(arm_of(name), []).append(v)
    order = sorted(grouped, key=lambda a: (ARMS.index(a) if a in ARMS else len(ARMS), a))
    return {arm: band(grouped[arm]) for arm in order}


def _n(b: Band | None) -> int:
    return 0 if b is None else b.n


def _few(bs: dict[str, Band | None], arms: tuple[str, ...], counts: dict[str, int] | None = None) -> str | None:
    n = {a: (counts or {}).get(a, _n(bs.get(a))) for a in arms}
    few = [f"{a} ({n[a]})" for a in arms if n[a] < MIN_SEEDS]
    return None if not few else "fewer than %d seeds: %s" % (MIN_SEEDS, ", ".join(few))


def _dicts(bs: dict[str, Band | None]) -> dict[str, dict | None]:
    return {k: (None if v is None else v.to_dict()) for k, v in bs.items()}


def _compare(bs: dict[str, Band | None], sign: int, vs: tuple[str, ...], zero_test: bool,
             counts: dict[str, int] | None = None, twin: float | None = None,
             twin_required: bool = True) -> tuple[str, str]:
    """Verdict of the Engram band against the bands of ``vs``, the untrained twin's value ``twin`` (one
    number: the twin has no seeds) and 0 when ``zero_test``, through the one verdict function
    (:func:`engram_interp.claims.verdict.verdict`); ``sign`` = +1 when the paper expects Engram higher,
    -1 lower; ``counts`` overrides the number of independent seeds of an arm (default: the band's n)."""
    e = bs.get("engram")
    few = _few(bs, ("engram", *vs), counts)
    controls = [Control(a, b.mean, [b.low, b.high]) for a in vs if (b := bs.get(a)) is not None]
    if twin is not None:
        controls.append(Control(TWIN, twin, None))
    if zero_test:
        controls.append(Control("zero", 0.0, None))
    required = tuple(vs) + ((TWIN,) if twin_required else ())
    if e is None:
        return "not established", "no Engram seed was measured"
    n = min([(counts or {}).get(a, _n(bs.get(a))) for a in ("engram", *vs)])
    v, why = verdict(e.mean, [e.low, e.high], controls, direction=sign, n_seeds=n, required=required,
                     across_seeds=True)
    if few:  # name the arms short of seeds, and where the measured bands lie
        paper, wrong = [], []
        for c in controls:
            lo, hi = c.bounds() or (None, None)
            if lo is None:
                continue
            above, below = e.low > hi, e.high < lo
            (paper if (above if sign > 0 else below) else wrong if (below if sign > 0 else above) else []).append(c.name)
        seen = "; as measured, Engram lies " + ", ".join(
            x for x in ((f"on the paper's side of {', '.join(paper)}" if paper else ""),
                        (f"on the wrong side of {', '.join(wrong)}" if wrong else "")) if x) if paper or wrong else ""
        return "not established", few + seen
    if v == "not established" and why.startswith("no spread measured"):
        why = "every seed gives the same value (no spread measured), so the band cannot carry a claim"
    return v, why


def _lens(m: dict[str, Any]) -> Finding | None:
    if "lens" not in m:
        return None
    twin = next((c for c in m["lens"]["models"] if c["name"] == twin_name("engram")), None)
    curves = [c for c in m["lens"]["models"] if c is not twin]
    n_points = len(curves[0]["kl"])
    last = max(1, (n_points - 1) // 2)  # layer points 1 .. L/2: the early half of the stack
    per_seed = {c["name"]: early_mean(c["kl"], 1, last) for c in curves}
    bs = _bands_by_arm(per_seed)
    tv = None if twin is None else early_mean(twin["kl"], 1, last)
    if tv is not None:
        bs[TWIN] = band([tv])
    verdict, reason = _compare({k: v for k, v in bs.items() if k != TWIN}, -1, ("moe", "engram-null"), zero_test=False,
                               twin=tv)
    return Finding("logit_lens", "LogitLens: early-layer KL to the final prediction",
                   "Engram's early layers have lower KL(p_final || q_l) than the MoE baseline's",
                   f"mean KL over layer points 1..{last}, nats (lower = closer to the final distribution)",
                   _dicts(bs), verdict, reason, [FILES["lens"]])


def _seeds_in_pairs(cka: dict) -> int:
    """Independent seeds behind a CKA measurement: the fewer of distinct A and distinct B checkpoints."""
    pairs = cka.get("seed_pairs") or [{"a": cka["name_a"], "b": cka["name_b"]}]
    return min(len({p["a"] for p in pairs}), len({p["b"] for p in pairs}))


def _shift(cka: dict) -> dict[str, float | None]:
    """Per A-vs-B pair: mean over A's Engram layers of a_j - j (layer points), keyed by the pair."""
    layers = cka.get("engram_layers_a") or []
    pairs = cka.get("seed_pairs") or [{"a": cka["name_a"], "b": cka["name_b"], "soft_alignment": cka["soft_alignment"]}]
    out: dict[str, float | None] = {}
    for i, p in enumerate(pairs):
        vals = [p["soft_alignment"][j] - j for j in layers if p["soft_alignment"][j] is not None]
        out[f"{p['a']}|{p['b']}|{i}"] = sum(vals) / len(vals) if vals else None
    return out


def _cka(m: dict[str, Any]) -> Finding | None:
    if "cka" not in m:
        return None
    groups = {"engram": _shift(m["cka"])}
    if "cka_null" in m:
        groups["engram-null"] = _shift(m["cka_null"])
    bs = {arm: band(v.values()) for arm, v in groups.items()}
    counts = {"engram": _seeds_in_pairs(m["cka"])} | ({"engram-null": _seeds_in_pairs(m["cka_null"])} if "cka_null" in m else {})
    ref = (m["cka"].get("references") or {}).get("twin")
    tv = None
    if ref:
        vals = [ref["soft_alignment"][j] - j for j in (m["cka"].get("engram_layers_a") or []) if ref["soft_alignment"][j] is not None]
        tv = sum(vals) / len(vals) if vals else None
    verdict, reason = _compare(bs, +1, ("engram-null",) if "engram-null" in bs else (), zero_test=True, counts=counts,
                               twin=tv)
    if tv is not None:
        bs[TWIN] = band([tv])
    layers = m["cka"].get("engram_layers_a") or []
    return Finding("cka", "CKA: soft alignment of the Engram layers",
                   "the soft alignment index a_j of an Engram layer j exceeds j (an upward shift)",
                   f"mean of a_j - j over Engram layers {layers}, layer points; one value per Engram-vs-MoE seed pair "
                   "(control: Engram-null vs MoE)", _dicts(bs), verdict, reason, [FILES["cka"], FILES["cka_null"]])


def _contrast_values(g: dict) -> dict[str, float]:
    sb = g.get("seed_bands")
    if sb:
        rows = {name: v for name, v in zip(sb["seeds"], zip(*[b["values"] for b in sb["contrast"]]))}
    else:
        rows = {g["name"]: g["contrast"]}
    return {name: sum(v) / len(v) for name, v in rows.items()}


def _gates(m: dict[str, Any]) -> Finding | None:
    if "gates" not in m:
        return None
    values = _contrast_values(m["gates"])
    if "gates_null" in m:
        values |= _contrast_values(m["gates_null"])
    bs = _bands_by_arm(values)
    t = m["gates"].get("twin")
    tv = None if not t else sum(t["contrast"]) / len(t["contrast"])
    verdict, reason = _compare(bs, +1, ("engram-null",) if "engram-null" in bs else (), zero_test=True, twin=tv)
    if tv is not None:
        bs[TWIN] = band([tv])
    g = m["gates"]
    return Finding("gates", "Gates at entity-final tokens",
                   "the Engram gate is high at the last token of named entities and set phrases",
                   f"mean gate at entity-final tokens minus at other tokens ({g['n_entity']} / {g['n_other']} tokens of "
                   "the entity probe set), averaged over Engram layers, gate units", _dicts(bs), verdict, reason,
                   [FILES["gates"], FILES["gates_null"]])


def _ablation(m: dict[str, Any]) -> Finding | None:
    if "ablate" not in m:
        return None
    models = m["ablate"]["models"]

    def suite_band(suite: str, key: str, arm: str) -> Band | None:
        return band(x["suites"][suite][key] for x in models if arm_of(x["name"]) == arm and suite in x["suites"])

    in_context = {s: {a: suite_band(s, "full", a) for a in ("engram", "moe")} for s in IN_CONTEXT_SUITES}
    in_context = {s: bs for s, bs in in_context.items() if all(b is not None for b in bs.values())}
    facts = {s: suite_band(s, "full", "engram") for s in FACT_SUITES}
    facts = {s: b for s, b in facts.items() if b is not None}
    shown = {**{f"{a} {s} full": b for s, bs in in_context.items() for a, b in bs.items()},
             **{f"engram {s} full": b for s, b in facts.items()},
             **{f"engram {s} retained %": suite_band(s, "retained", "engram") for s in (*in_context, *facts)}}
    passed = [s for s, bs in in_context.items() if all(b.mean >= IN_CONTEXT_TARGET for b in bs.values())]
    known = [s for s, b in facts.items() if b.mean >= FACT_TARGET]
    if not in_context:
        verdict, reason = "not testable", "no in-context suite was scored for both Engram and MoE"
    elif not passed or not known:
        parts = []
        if not passed:
            best = ", ".join(f"{s} " + " / ".join(f"{a} {b.mean:.2f}" for a, b in bs.items()) for s, bs in in_context.items())
            parts.append(f"no in-context suite reaches {IN_CONTEXT_TARGET:.0%} with both full models ({best}), so "
                         "'reading survives' cannot be seen")
        if not known:
            best = ", ".join(f"{s} {b.mean:.2f}" for s, b in facts.items())
            parts.append(f"no closed-book fact suite reaches {FACT_TARGET:.0%} with the full Engram model ({best})")
        verdict, reason = "not testable", "; ".join(parts)
    else:
        ctx, fact = passed[0], known[0]
        def diff(x: dict) -> float | None:  # retained is None for a seed whose full model scored 0
            r, f = x["suites"][ctx]["retained"], x["suites"][fact]["retained"]
            return None if r is None or f is None else r - f

        diffs = {x["name"]: diff(x) for x in models
                 if ctx in x["suites"] and fact in x["suites"] and arm_of(x["name"]) in ("engram", "engram-null")}
        bs = _bands_by_arm(diffs)
        twin = [x for x in (m["ablate"].get("twin") or {}).get("models", []) if ctx in x["suites"] and fact in x["suites"]]
        tv = diff(twin[0]) if twin else None
        verdict, reason = _compare(bs, +1, ("engram-null",) if bs.get("engram-null") else (), zero_test=True, twin=tv)
        reason = f"{ctx} (in context) against {fact} (closed book): {reason}"
        shown |= {f"{a} retained % {ctx} - {fact}, points": b for a, b in bs.items()}
    return Finding("ablation", "Ablation: closed-book facts vs in-context answers",
                   "suppressing Engram destroys closed-book facts but keeps open-book reading",
                   f"accuracy of the full models (0..1) on the in-context suites ({', '.join(IN_CONTEXT_SUITES)}) and the "
                   f"closed-book fact suites ({', '.join(FACT_SUITES)}); the contrast: retained % of the first in-context "
                   f"suite both full models pass at >= {IN_CONTEXT_TARGET:.0%} minus that of the first fact suite the full "
                   f"Engram model passes at >= {FACT_TARGET:.0%}, under zero-ablation of every Engram layer",
                   _dicts(shown), verdict, reason, [FILES["ablate"]])


def _val_loss(m: dict[str, Any]) -> Finding | None:
    cards = m.get("cards") or {}
    if not cards:
        return None
    values = {name: (c.get("val_loss") or {}).get("real") for name, c in cards.items()}
    bs = _bands_by_arm(values)
    verdict, reason = _compare(bs, -1, ("moe", "engram-null"), zero_test=False, twin_required=False)
    return Finding("val_loss", "Language modelling: held-out loss",
                   "at equal total parameters, Engram reaches a lower loss than the MoE baseline",
                   "validation loss on held-out real text, nats/token", _dicts(bs), verdict, reason, ["card-*.json"])


def compute_findings(measurements: dict[str, Any]) -> list[Finding]:
    """The findings that the given measurements (:func:`load_measurements`) allow, in a fixed order:
    held-out loss, LogitLens, CKA, gates, ablation."""
    out = [f(measurements) for f in (_val_loss, _lens, _cka, _gates, _ablation)]
    return [f for f in out if f is not None]


def format_band(b: dict | None, digits: int) -> str:
    """A Band dict as ``mean [min, max], t95 [lo, hi] (n=N)`` (just ``mean (n=1)`` for one seed)."""
    if b is None:
        return "-"
    s = f"{b['mean']:.{digits}f}"
    if b["n"] > 1:
        s += f" [{b['low']:.{digits}f}, {b['high']:.{digits}f}]"
        s += f", t95 [{b['ci'][0]:.{digits}f}, {b['ci'][1]:.{digits}f}]"
    return s + f" (n={b['n']})"


def render_markdown(findings: list[Finding], header: str = "") -> str:
    """FINDINGS.md: one section per finding with its band table (mean [min, max over seeds], the 95%
    t interval of the mean, n seeds) and the verdict. Deterministic for given findings."""
    lines = ["# Findings on the bundled set", "", "Generated by `bash checkpoints/measure.sh` "
             "(`engram-interp findings`) from the JSON in `checkpoints/measurements/`; do not edit by hand.", ""]
    if header:
        lines += [header, ""]
    lines += [f"Verdict rule (engram_interp.claims.verdict, the same function as the report and the app): a band is "
              f"the min..max of one number over seeds (seed = its own init and data order). **reproduced** needs >= "
              f"{MIN_SEEDS} seeds per arm and the Engram band entirely beyond the MoE band, the Engram-null control band, "
              "the untrained twin (same architecture, random weights; all but the held-out loss) and zero where the "
              "paper states a sign; **not reproduced** the same on the other side; **not testable** when the "
              "measurement cannot speak; otherwise **not established**.", "", "| finding | verdict |", "|---|---|"]
    lines += [f"| {f.title} | **{f.verdict}** |" for f in findings]
    for f in findings:
        digits = 1 if f.key == "ablation" else 3
        lines += ["", f"## {f.title}", "", f"Paper: {f.claim}.", "", f"Measured: {f.metric}.", "",
                  "| arm | mean [min, max], t95 (n seeds) |", "|---|---|"]
        for arm, b in f.bands.items():
            d = 3 if (f.key == "ablation" and "full" in arm) else digits
            lines.append(f"| {arm} | {format_band(b, d)} |")
        lines += ["", f"**Verdict: {f.verdict}.** {f.reason[0].upper() + f.reason[1:]}.",
                  "", f"Source: {', '.join(f'`{s}`' for s in f.source)}."]
    return "\n".join(lines) + "\n"
