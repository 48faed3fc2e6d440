"""engram-interp report A [B] --out DIR: all four analyses in one offline HTML + JSON + CSV."""

from __future__ import annotations

import argparse
import sys

from engram_interp.commands._common import (add_common, add_corpus, check_text_fits, load_models, names_for, positive_int,
                                            seed_all, texts_from, warn_overlong)
from engram_interp.errors import EngramInterpError

NAME = "report"
HELP = "run LogitLens, CKA, gate maps and ablation on a pair and write one self-contained HTML report"
DESCRIPTION = (
    "Runs the four analyses on an Engram model A and its baseline B and writes DIR/report.html (plotly.js "
    "inlined: opens offline), DIR/results.json and one CSV per analysis. Ablation runs when --suites is given. "
    "A and B are .ckpt files, Hugging Face folders, .gguf files or a known name (smollm2). With A alone "
    "(e.g. a pretrained model without Engram) the report holds LogitLens and A's layer-by-layer CKA; gates and "
    "ablation need Engram/PLE layers."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ckpt_a", help="the (Engram) model: a .ckpt, a Hugging Face folder, a .gguf file or smollm2")
    p.add_argument("ckpt_b", nargs="?", default=None,
                   help="its baseline (e.g. the iso-parameter MoE); without it CKA compares A's layers with each other")
    add_corpus(p)
    p.add_argument("--suites", nargs="*", default=None, help="task suite .jsonl files/folders for the ablation")
    p.add_argument("--max-items", type=positive_int, default=None,
                   help="ablation: at most N items per suite, a seeded subsample (default: every item)")
    p.add_argument("--probe-text", default="Alexander the Great visited the Milky Way. By the way, the Princess of Wales came too.",
                   help="text shown in the gate heatmap and the per-token LogitLens")
    p.add_argument("--cka-batch", type=positive_int, default=256, help="examples per CKA minibatch")
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
    from engram_interp.analysis.memory import memory_inspect
    from engram_interp.data.suites import read_suites, subsample_suites
    from engram_interp.io import check_output_dir
    from engram_interp.memory_tables import open_tables
    from engram_interp.report import REPORT_FILES, write_report

    check_output_dir(args.out, REPORT_FILES, args.force)  # before the analyses, not after them
    texts = texts_from(args)
    suites = subsample_suites(read_suites(args.suites), args.max_items, args.seed) if args.suites else None
    seed_all(args.seed)
    paths_in = [args.ckpt_a] + ([args.ckpt_b] if args.ckpt_b else [])
    models = load_models(paths_in, args.device, args.allow_nonfinite)
    names = names_for(paths_in)
    a, na = models[0], names[0]
    b, nb = (models[1], names[1]) if len(models) > 1 else (None, None)
    if not a.engram_layers and b is not None and b.engram_layers:
        raise EngramInterpError(f"{args.ckpt_a} has no Engram layers; the report needs the Engram model first")
    pair = {na: a} if b is None else {na: a, nb: b}
    check_text_fits(models, args.probe_text, "--probe-text")
    if suites:
        warn_overlong(models, suites)
    prog = not args.quiet
    say = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr))
    say("logit lens ...")
    lens = logit_lens(pair, texts, batch_size=args.batch_size, max_tokens=args.max_tokens, progress=prog)
    tl = [logit_lens_tokens(m, args.probe_text, name=n) for n, m in pair.items()]
    say("cka ...")
    cka = cka_analysis(a, b, None if args.tokens == "entities" else texts, tokens=args.tokens, probes=args.probes,
                       batch_size=args.cka_batch, max_tokens=args.max_tokens, text_batch_size=args.batch_size,
                       seed=args.seed, progress=prog, names=(na, nb or na))
    gm, gc, abl = [], None, None
    if a.engram_layers:
        say("gates ...")
        gm = [gate_map(a, args.probe_text, name=na)]
        gc = gate_corpus(a, texts, batch_size=args.batch_size, max_tokens=args.max_tokens, progress=prog, name=na)
    if suites and a.engram_layers:
        say("ablation ...")
        abl = ablation_sensitivity(pair, suites, seed=args.seed, progress=prog)
    mem = None
    if a.engram_layers:
        say("memory ...")
        mem = memory_inspect(open_tables(args.ckpt_a), texts, max_tokens=args.max_tokens, seed=args.seed, progress=prog)
    attr = []
    if args.attribution:
        from engram_interp.analysis.attribution_items import attribution_over_items

        say("attribution ...")
        suite, items = next(iter(read_suites(args.attribution).items()))
        attr = [attribution_over_items(m, items, suite=suite, max_items=args.max_items or 100, seed=args.seed,
                                       progress=prog, name=n) for n, m in pair.items()]
    notes = [f"A = {args.ckpt_a}" + (f", B = {args.ckpt_b}" if b is not None else " (CKA: A's layers against each other)")
             + f"; {lens.models[0].n_tokens} corpus tokens; CKA on {cka.n_examples} {cka.tokens} tokens."]
    if not a.engram_layers:
        notes.append(f"{na} has no Engram/PLE layers: no gate statistics, no Engram ablation and no memory section.")
    paths = write_report(args.out, title=f"engram-interp: {na}" + (f" vs {nb}" if b is not None else ""), lens=lens,
                         token_lens=tl, cka=cka, gate_maps=gm, gates=gc, ablation=abl, notes=notes, force=args.force,
                         memory=mem, attribution=attr)
    print(f"{'analysis':<12} result")
    print(f"{'logit-lens':<12} mean KL over layers: " + ", ".join(f"{m.name} {sum(m.kl) / len(m.kl):.4f}" for m in lens.models))
    print(f"{'cka':<12} diagonal mean {sum(cka.cka[i][i] for i in range(min(len(cka.cka), len(cka.cka[0])))) / min(len(cka.cka), len(cka.cka[0])):.3f}, n={cka.n_examples}")
    if gc is not None:
        print(f"{'gates':<12} most selective layer.branch {gc.branch_ranking[0]}")
    if abl:
        for s, sc in abl.suites.items():
            print(f"{'ablate':<12} {s}: retained {'-' if sc.retained is None else f'{sc.retained:.1f}'}%")
    if mem is not None:
        top = max((h for L in mem.layers for h in L.heads), key=lambda h: h.collision_share)
        print(f"{'memory':<12} rows touched {sum(h.touched for L in mem.layers for h in L.heads):,}; highest collision"
              f" share {top.collision_share:.3f} (uniform hash {top.uniform_collision_share:.3f})")
    print(f"wrote {paths['html']}, {paths['json']} and {len(paths['csv'])} CSV files")
    return 0
