"""engram-interp edit MODEL --facts F.jsonl --out NEW.ckpt: write facts into the Engram table rows, report what moved."""

from __future__ import annotations

import argparse

from engram_interp.commands._common import add_device, add_load, fmt, input_file, load_models, positive_float, positive_int

NAME = "edit"
HELP = "write facts into an Engram model by changing only its table rows; a new checkpoint plus efficacy, specificity and collateral"
DESCRIPTION = (
    "Changes only the Engram table rows the facts read (the rows `locate` names at the positions that predict each "
    "target), by a few steps of norm-bounded gradient descent, and writes the edited model to --out (a new .ckpt; the "
    "source is never touched, an existing file needs --force, the source itself is refused). Facts: --facts, JSON lines "
    "{prompt, target, candidates?, paraphrases?, neighbours?}, or --counterfactual N: N facts_world people each given a "
    "wrong candidate as their answer. Reports per fact and in total, with 95 percent bootstrap intervals over facts: efficacy "
    "(target ranked first among the candidates; p(target)), generalisation (paraphrases), specificity (neighbours, "
    "unrelated suite items, held-out text loss), collateral (held-out positions that read an edited row, i.e. the "
    "n-grams sharing the rows, and how their predictions moved) and the rows changed. See docs/EDIT.md. JSON: {model, "
    "out, config, trace, facts, total, unrelated, heldout, collateral, rows}."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from engram_interp.edit.method import EditConfig

    d = EditConfig()
    p.add_argument("model", metavar="MODEL", help="an Engram model (.ckpt)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--facts", type=input_file, help="JSON lines, one fact per line (see docs/EDIT.md)")
    src.add_argument("--counterfactual", type=positive_int, metavar="N",
                     help="N counterfactual facts from the facts_world suite (--suite), drawn with --seed")
    p.add_argument("--out", required=True, help="the edited model (.ckpt); an existing file needs --force")
    p.add_argument("--force", action="store_true", help="replace an existing --out (never the source model)")
    p.add_argument("--steps", type=positive_int, default=d.steps, help=f"most gradient steps (default {d.steps})")
    p.add_argument("--lr", type=positive_float, default=d.lr, help=f"Adam learning rate (default {d.lr})")
    p.add_argument("--bound", type=positive_float, default=d.bound,
                   help=f"largest change per row, in median row norms of its table (default {d.bound})")
    p.add_argument("--positions", choices=("last", "all"), default=d.positions,
                   help="edit the rows read where the target is predicted (last, default) or at every prompt position too")
    p.add_argument("--margin", type=positive_float, default=d.margin,
                   help=f"stop once each target leads every candidate by this many nats (default {d.margin})")
    p.add_argument("--preserve", type=float, default=d.preserve,
                   help=f"weight of keeping the neighbours' next-token distributions (default {d.preserve}; 0: off)")
    p.add_argument("--suite", type=input_file, default=None,
                   help="facts_world items for --counterfactual and the unrelated-facts check (default probes/facts_world.jsonl)")
    p.add_argument("--max-unrelated", type=int, default=200, help="unrelated suite items scored before / after (default 200; 0: none)")
    p.add_argument("--corpus", default=None, help="held-out text for the loss and collateral (default: as `memory`)")
    p.add_argument("--max-tokens", type=positive_int, default=4000, help="held-out tokens (default 4000)")
    p.add_argument("--seed", type=int, default=0, help="draws and bootstrap seed (default 0)")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_device(p)
    add_load(p)


def _ci(s: dict | None, spec: str = ".3f") -> str:
    if not s or s.get("mean") is None:
        return "-"
    ci = s.get("ci")
    return f"{s['mean']:{spec}}" + (f" [{ci[0]:{spec}}, {ci[1]:{spec}}]" if ci else "")


def _table(res: dict) -> str:
    t = res["total"]
    lines = [f"{res['model']} -> {res['out']}: {t['n_facts']} fact(s), {res['rows']['n_rows']} table rows changed "
             f"({100 * res['rows']['table_fraction']:.2f} % of the tables), {res['trace']['steps']} steps"
             f"{'' if res['trace']['converged'] else ' (stopping rule not met)'}",
             "", f"  {'fact':<52}{'target':<22}{'first':>12}{'p(target)':>22}{'paraphr.':>10}{'neighb.':>9}"]
    for r in res["facts"]:
        first = f"{'yes' if r['efficacy_before'] else 'no'} -> {'yes' if r['efficacy_after'] else 'no'}"
        p = f"{fmt(r['p_before'], '.2e')} -> {fmt(r['p_after'], '.2e')}"
        lines.append(f"  {r['prompt'][-50:]!r:<52}{r['target'][:20]!r:<22}{first:>12}{p:>22}"
                     f"{fmt(r['generalisation_after'], '.2f'):>10}{fmt(r['neighbours_kept'], '.2f'):>9}")
    lines += ["", "total (mean [95 % bootstrap interval over facts]):",
              f"  efficacy        {_ci(t['efficacy']['before'])} -> {_ci(t['efficacy']['after'])}",
              f"  p(target)       {_ci(t['p_target']['before'], '.2e')} -> {_ci(t['p_target']['after'], '.2e')}",
              f"  generalisation  {_ci(t['generalisation']['before'])} -> {_ci(t['generalisation']['after'])}",
              f"  neighbours kept {_ci(t['neighbours_kept'])}  (KL {_ci(t['neighbour_kl'], '.2e')} nats)"]
    u = res["unrelated"]
    if u:
        lines.append(f"  unrelated facts ({u['n']}): accuracy {_ci(u['accuracy_before'])} -> {_ci(u['accuracy_after'])}, "
                     f"kept {_ci(u['kept'])}")
    h = res["heldout"]
    if h:
        lines.append(f"  held-out loss ({h['tokens']} tokens): {h['loss_before']:.4f} -> {h['loss_after']:.4f} nats "
                     f"(change per window {_ci(h['change'], '+.4f')})")
    c = res["collateral"]
    if c:
        for k in ("touched", "untouched"):
            g = c[k]
            lines.append(f"  {k:<9} positions {g['positions']:>6}: change of log p {_ci(g['logprob_change'], '+.4f')}, "
                         f"KL {_ci(g['kl'], '.2e')}, top-1 changed {_ci(g['top1_changed'])}")
        lines.append("  most-read edited rows (layer.order.head:row  positions  change of log p  n-grams):")
        for r in c["rows"][:8]:
            grams = ", ".join(f"{g['text']!r}x{g['count']}" for g in r["ngrams"])
            lines.append(f"    L{r['layer']}.n{r['order']}.h{r['head']}:{r['row']:<6}{r['positions']:>5}"
                         f"{r['logprob_change']:>+12.4f}  {grams}")
    lines.append(f"  rows by layer / order: {res['rows']['by_layer_order']}; ||change|| / ||row||: mean "
                 f"{fmt(res['rows']['delta_over_row_norm']['mean'], '.2f')}, max {fmt(res['rows']['delta_over_row_norm']['max'], '.2f')}")
    return "\n".join(lines)


def _unrelated(items: list[dict], n: int, seed: int) -> list[dict]:
    import random

    picked = list(items)
    random.Random(f"unrelated:{seed}").shuffle(picked)
    return picked[:n]


def run(args: argparse.Namespace) -> int:
    import sys

    from engram_interp.analysis.common import default_texts, read_texts
    from engram_interp.data.suite_files import DEFAULT_SUITES, read_suites
    from engram_interp.edit import edit_and_evaluate
    from engram_interp.edit.facts import counterfactual_facts, read_facts
    from engram_interp.edit.method import EditConfig
    from engram_interp.edit.save import check_destination, check_editable, write_edited
    from engram_interp.io import dumps_strict

    check_destination(args.model, args.out, args.force)
    facts = read_facts(args.facts) if args.facts else None
    suite_path = args.suite or DEFAULT_SUITES / "facts_world.jsonl"
    needs_suite = args.counterfactual or args.max_unrelated > 0
    items = read_suites([suite_path]).get("facts_world", []) if needs_suite else []
    if args.counterfactual:
        facts = counterfactual_facts(items, args.counterfactual, args.seed)
    texts = read_texts(args.corpus) if args.corpus else default_texts()
    (model,) = load_models([args.model], args)
    check_editable(model)
    config = EditConfig(steps=args.steps, lr=args.lr, bound=args.bound, positions=args.positions, margin=args.margin,
                        preserve=args.preserve)
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=args.steps, desc="edit", unit="step", leave=False, dynamic_ncols=True)
    res = edit_and_evaluate(model, facts, config, progress=(lambda d, t: bar.update(d - bar.n)) if bar else None,
                            unrelated=_unrelated(items, args.max_unrelated, args.seed), texts=texts,
                            max_tokens=args.max_tokens, seed=args.seed)
    if bar is not None:
        bar.close()
    record, trace = res.pop("record"), res.pop("trace")
    record.apply(model)
    config_d = config.__dict__
    write_edited(model, args.out, {"method": "projected gradient descent on Engram rows (docs/EDIT.md)", "config": config_d,
                                   "facts": [{"prompt": f["prompt"], "target": f["target"]} for f in facts],
                                   "rows_changed": record.n_rows, "steps": trace["steps"]}, force=args.force)
    out = {"model": args.model, "out": args.out, "config": config_d, "trace": trace, **res}
    print(dumps_strict(out) if args.json else _table(out))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0
