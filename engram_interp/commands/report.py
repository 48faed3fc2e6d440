"""engram-interp report A.ckpt B.ckpt --out DIR: all four analyses in one offline HTML + JSON + CSV."""

from __future__ import annotations

import argparse
import sys

from engram_interp.commands._common import add_common, add_corpus, load_models, names_for, seed_all, texts_from
from engram_interp.errors import EngramInterpError

NAME = "report"
HELP = "run LogitLens, CKA, gate maps and ablation on a pair and write one self-contained HTML report"
DESCRIPTION = (
    "Runs the four analyses on an Engram model A and its baseline B and writes DIR/report.html (plotly.js "
    "inlined: opens offline), DIR/results.json and one CSV per analysis. Ablation runs when --suites is given."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ckpt_a", help="the Engram model")
    p.add_argument("ckpt_b", help="its baseline (e.g. the iso-parameter MoE)")
    add_corpus(p)
    p.add_argument("--suites", nargs="*", default=None, help="task suite .jsonl files/folders for the ablation")
    p.add_argument("--max-items", type=int, default=None,
                   help="ablation: at most N items per suite, a seeded subsample (default: every item)")
    p.add_argument("--probe-text", default="Alexander the Great visited the Milky Way. By the way, the Princess of Wales came too.",
                   help="text shown in the gate heatmap and the per-token LogitLens")
    p.add_argument("--cka-batch", type=int, default=256, help="examples per CKA minibatch")
    p.add_argument("--tokens", choices=["all", "entities"], default="all", help="CKA token selection")
    p.add_argument("--probes", default=None, help="entity probe set for --tokens entities")
    p.add_argument("--attribution", default=None, metavar="PROBES",
                   help="probe items with candidates (e.g. probes/entities.jsonl): add a direct-logit-attribution "
                        "section (at most --max-items items, default 100)")
    add_common(p, out_is_dir=True)


def run(args: argparse.Namespace) -> int:
    from engram_interp.analysis import (
        ablation_sensitivity, cka_analysis, gate_corpus, gate_map, logit_lens, logit_lens_tokens,
    )
    from engram_interp.data.suites import read_suites, subsample_suites
    from engram_interp.report import write_report

    seed_all(args.seed)
    a, b = load_models([args.ckpt_a, args.ckpt_b], args.device)
    na, nb = names_for([args.ckpt_a, args.ckpt_b])
    if not a.engram_layers:
        raise EngramInterpError(f"{args.ckpt_a} has no Engram layers; the report needs the Engram model first")
    texts = texts_from(args)
    prog = not args.quiet
    say = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr))
    say("logit lens ...")
    lens = logit_lens({na: a, nb: b}, texts, batch_size=args.batch_size, max_tokens=args.max_tokens, progress=prog)
    tl = [logit_lens_tokens(a, args.probe_text, name=na), logit_lens_tokens(b, args.probe_text, name=nb)]
    say("cka ...")
    cka = cka_analysis(a, b, None if args.tokens == "entities" else texts, tokens=args.tokens, probes=args.probes,
                       batch_size=args.cka_batch, max_tokens=args.max_tokens, text_batch_size=args.batch_size,
                       seed=args.seed, progress=prog, names=(na, nb))
    say("gates ...")
    gm = [gate_map(a, args.probe_text, name=na)]
    gc = gate_corpus(a, texts, batch_size=args.batch_size, max_tokens=args.max_tokens, progress=prog, name=na)
    abl = None
    if args.suites:
        say("ablation ...")
        abl = ablation_sensitivity({na: a, nb: b}, subsample_suites(read_suites(args.suites), args.max_items, args.seed),
                                   seed=args.seed, progress=prog)
    attr = []
    if args.attribution:
        from engram_interp.analysis.attribution_items import attribution_over_items

        say("attribution ...")
        suite, items = next(iter(read_suites(args.attribution).items()))
        attr = [attribution_over_items(m, items, suite=suite, max_items=args.max_items or 100, seed=args.seed,
                                       progress=prog, name=n) for n, m in ((na, a), (nb, b))]
    notes = [f"A = {args.ckpt_a}, B = {args.ckpt_b}; {lens.models[0].n_tokens} corpus tokens; "
             f"CKA on {cka.n_examples} {cka.tokens} tokens."]
    paths = write_report(args.out, title=f"engram-interp: {na} vs {nb}", lens=lens, token_lens=tl, cka=cka,
                         gate_maps=gm, gates=gc, ablation=abl, notes=notes,
                         attribution=attr)
    print(f"{'analysis':<12} result")
    print(f"{'logit-lens':<12} mean KL over layers: " + ", ".join(f"{m.name} {sum(m.kl) / len(m.kl):.4f}" for m in lens.models))
    print(f"{'cka':<12} diagonal mean {sum(cka.cka[i][i] for i in range(min(len(cka.cka), len(cka.cka[0])))) / min(len(cka.cka), len(cka.cka[0])):.3f}, n={cka.n_examples}")
    print(f"{'gates':<12} most selective layer.branch {gc.branch_ranking[0]}")
    if abl:
        for s, sc in abl.suites.items():
            print(f"{'ablate':<12} {s}: retained {'-' if sc.retained is None else f'{sc.retained:.1f}'}%")
    print(f"wrote {paths['html']}, {paths['json']} and {len(paths['csv'])} CSV files")
    return 0
