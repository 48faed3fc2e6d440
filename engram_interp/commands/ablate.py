"""engram-interp ablate CKPT [CKPT ...] --suites FILE...: task scores with Engram suppressed."""

from __future__ import annotations

import argparse

from engram_interp.commands._checks import check_models
from engram_interp.commands._common import (add_common, add_seeds, add_twin, arm_groups, check_out, emit, findings_json, fmt,
                                            load_models, names_for, non_negative_int, positive_int, seed_all, twin_of,
                                            warn_overlong)
from engram_interp.data.suite_files import DEFAULT_SUITES

NAME = "ablate"
DATA_PARALLEL = True  # under torchrun every process runs its share of the forward passes (analysis/scoring.py)
HELP = "Engram-ablation sensitivity: task-suite scores with Engram suppressed (retained %%, bootstrap CIs)"
DESCRIPTION = (
    "Scores every suite (JSONL items {id, suite, prompt, answer, candidates?}: greedy exact match, or rank 1 "
    "among candidates by summed log-prob) with the full model and with the Engram output suppressed at all "
    "Engram layers and at each alone. Retained % = ablated / full with a 95% bootstrap CI over items. "
    "Models without Engram retain exactly 100%. --mode mean replaces Y by its mean over --reference. "
    "JSON: {suites: {name: {full, ablated, retained, ci, n, per_layer}}, models: [...]}; with several seeds of an arm "
    "(--seeds DIR or a.ckpt,a-seed1.ckpt) also seed_bands: {arm: {seeds, suites: {name: {full, retained}}}} "
    "(mean, min..max, t CI over seeds). When the first model has Engram layers, JSON 'findings' holds one finding per "
    "suite (retained %% against no change, the third model as Engram-null control, and with --twin the untrained "
    "twin), with chance measured: the uniform guess, the twin's full accuracy and the candidate prior (candidates "
    "ranked with the prompt removed, JSON 'candidate_prior'); JSON 'chance' holds each suite's measured chance line and "
    "'prior_flagged' (the candidates can be ranked above the uniform guess without the prompt). --balanced scores each "
    "multiple-choice suite as a balanced design: every item with its candidate-swapped mirrors (items of the same suite "
    "whose gold is one of its distractors, asked with its candidates), so a model that ranks by its prior alone "
    "scores at most the uniform guess; suites that allow no such design are scored as they are (JSON 'balanced')."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ckpts", nargs="+", help=".ckpt files (Engram and baseline; comma-separated: the seeds of one arm)")
    p.add_argument("--suites", nargs="+", default=[str(DEFAULT_SUITES)],
                   help="suite .jsonl files or folders of them (default: the bundled probes/)")
    p.add_argument("--mode", choices=["zero", "mean"], default="zero", help="Y = 0 (default) or Y = its corpus mean")
    p.add_argument("--reference", default=None, help="reference corpus for --mode mean (default: the default corpus)")
    p.add_argument("--boot", type=non_negative_int, default=1000, help="bootstrap replicates (default 1000)")
    p.add_argument("--max-items", type=positive_int, default=None,
                   help="score at most N items per suite, a seeded subsample (default: every item)")
    p.add_argument("--balanced", action="store_true",
                   help="score each multiple-choice suite as a balanced design (every item with its candidate-swapped "
                        "mirrors: each candidate the gold once per group), removing the candidates' prior bias")
    add_seeds(p)
    add_twin(p)
    add_common(p, batch_default=16)


def run(args: argparse.Namespace) -> int:
    from engram_interp.analysis import ablation_sensitivity
    from engram_interp.analysis.common import default_texts, read_texts
    from engram_interp.claims.verdict import degenerate
    from engram_interp.data.suite_files import read_suites, subsample_suites

    check_out(args)
    seed_all(args.seed)
    full_suites = read_suites(args.suites)
    suites = subsample_suites(full_suites, args.max_items, args.seed)
    design = None
    if args.balanced:
        from engram_interp.data.balanced import balanced_suites

        suites, design = balanced_suites(suites, full_suites)
    groups = arm_groups(args.ckpts, args.seeds)
    paths = [p for _, ps in groups for p in ps]
    ref = None
    if args.mode == "mean":
        ref = read_texts(args.reference) if args.reference else default_texts()
    models = load_models(paths, args)
    names = names_for(paths)
    check_models(models, names, what="an Engram ablation", engram="any")
    warn_overlong(models, suites)
    res = ablation_sensitivity(dict(zip(names, models)), suites, mode=args.mode, reference_texts=ref,
                               batch_size=args.batch_size, max_tokens=args.max_tokens, n_boot=args.boot,
                               seed=args.seed, progress=not args.quiet)
    lines = [f"Engram ablation ({args.mode}): accuracy full -> ablated, retained % [95% CI]"]
    lines.append(f"{'model':<16}{'suite':<16}{'n':>5}{'full':>8}{'ablated':>9}{'retained':>10}  CI / per layer")
    for m in res.models:
        for suite, s in m["suites"].items():
            ci = ("-" if s.ci is None else "point (no spread measured)" if degenerate(s.ci, s.retained)
                  else f"[{s.ci[0]:.1f}, {s.ci[1]:.1f}]")
            per = " ".join(f"L{l}:{fmt(r['retained'], '.1f')}" for l, r in s.per_layer.items())
            lines.append(f"{m['name'][:15]:<16}{suite[:15]:<16}{s.n:>5}{s.full:>8.3f}{s.ablated:>9.3f}"
                         f"{fmt(s.retained, '.1f'):>10}  {ci} {per}")
    d = res.to_dict()
    if design is not None:
        d["balanced"] = design
        lines.append("balanced design: " + "; ".join(
            f"{k}: {v['groups']} groups ({v['items']} items)" if v["balanced"] else f"{k}: none ({v['reason']})"
            for k, v in design.items()))
    if any(len(ps) > 1 for _, ps in groups):
        from engram_interp.analysis.seeds import ablation_bands

        it = iter(names)
        d["seed_bands"] = ablation_bands(res, {arm: [next(it) for _ in ps] for arm, ps in groups})
        lines.append("across seeds: full accuracy and retained %, mean [min, max]")
        for arm, b in d["seed_bands"].items():
            for suite, x in b["suites"].items():
                f, r = x["full"], x["retained"]
                lines.append(f"{arm[:15]:<16}{suite[:15]:<16}n={len(b['seeds'])} full {f['mean']:.3f} [{f['low']:.3f}, "
                             f"{f['high']:.3f}]" + ("" if r is None else f"  retained {r['mean']:.1f} [{r['low']:.1f}, {r['high']:.1f}]"))
    if models[0].engram_layers:
        _findings(args, d, res, models, names, groups, suites, paths, ref, design)
        lines.append("chance measured (" + names[0] + "): " + "; ".join(
            f"{s}: " + ", ".join(f"{k} {c[k]:.2f}" for k in ("uniform guess", "untrained twin", "candidate prior") if k in c)
            + (" FLAGGED: candidates ranked above the uniform guess without the prompt" if c["prior_flagged"] else "")
            for s, c in d["chance"].items()))
        lines += [f["sentence"] for f in d["findings"]]
    d["source"] = {"corpus": " ".join(map(str, args.suites)), "tokens": sum(len(v) for v in suites.values()),
                   "seed": args.seed, "unit": "items"}
    return emit(args, d, "\n".join(lines))


def _findings(args, d: dict, res, models: list, names: list[str], groups, suites: dict, paths: list[str], ref,
              design: dict | None = None) -> None:
    """The per-suite findings of the first model (A; the third, C, is the Engram-null control) with measured chance:
    the untrained twin's scores (``--twin``), the first model's candidate prior and its chance line (``chance``,
    ``prior_flagged``) go into ``d``."""
    from engram_interp.analysis import ablation_sensitivity
    from engram_interp.analysis.ablation import candidate_prior_accuracy
    from engram_interp.claims.sentences import ablation_sentences, chance_level, measured_chance, twin_name

    roles = [names[paths.index(ps[0])] for _, ps in groups]
    tables = {m["name"]: {s: vars(sc) for s, sc in m["suites"].items()} for m in res.models}
    if args.twin:
        tn, tw = twin_of(models[0], roles[0], args.seed)
        t = ablation_sensitivity({tn: tw}, suites, mode=args.mode, reference_texts=ref, batch_size=args.batch_size,
                                 max_tokens=args.max_tokens, n_boot=args.boot, seed=args.seed, progress=not args.quiet)
        d["twin"] = t.to_dict()
        tables |= {m["name"]: {s: vars(sc) for s, sc in m["suites"].items()} for m in t.models}
    by_name = dict(zip(names, models))
    prior = {n: {s: candidate_prior_accuracy(by_name[n], items, args.batch_size) for s, items in suites.items()}
             for n in roles[:1]}
    d["candidate_prior"] = prior
    uniform = {s: chance_level(v) for s, v in suites.items()}
    twin = tables.get(twin_name(roles[0])) or {}
    d["chance"] = {s: measured_chance(uniform[s], sc["n"], (twin.get(s) or {}).get("full"), prior[roles[0]].get(s))
                   for s, sc in tables[roles[0]].items()}
    d["prior_flagged"] = [s for s, c in d["chance"].items() if c["prior_flagged"]]
    control = roles[2] if len(roles) > 2 and by_name[roles[2]].engram_layers else None
    d["findings"] = findings_json(ablation_sentences(tables, uniform, roles[:1], control, prior=prior, design=design))
