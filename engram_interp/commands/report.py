"""engram-interp report A.ckpt B.ckpt --out DIR: all four analyses in one offline HTML + JSON + CSV."""

from __future__ import annotations

import argparse
import sys

from engram_interp.commands._common import (add_common, add_corpus, check_text_fits, load_models, names_for, positive_int,
                                            seed_all, texts_from, warn_overlong)
from engram_interp.errors import EngramInterpError

NAME = "report"
HELP = "run LogitLens, CKA, gate maps and ablation on a pair and write one self-contained HTML report"
DESCRIPTION = (
    "Runs the four analyses on an Engram model A and its baseline B (and, given a third checkpoint, the "
    "Engram-null control C: the same analyses on it, and every finding stated against it) and writes "
    "DIR/report.html (plotly.js inlined: opens offline), DIR/results.json (with a 'source' field and the "
    "'findings' sentences) and one CSV per analysis. Ablation runs when --suites is given. "
    "Definitions: docs/ANALYSES.md."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ckpt_a", help="the Engram model")
    p.add_argument("ckpt_b", help="its baseline (e.g. the iso-parameter MoE)")
    p.add_argument("ckpt_control", nargs="?", default=None,
                   help="optional Engram-null control (same model, memory without content): every finding is "
                        "stated against it; without it no difference is called established")
    add_corpus(p)
    p.add_argument("--suites", nargs="*", default=None, help="task suite .jsonl files/folders for the ablation")
    p.add_argument("--max-items", type=positive_int, default=None,
                   help="ablation: at most N items per suite, a seeded subsample (default: every item)")
    p.add_argument("--probe-text", default="Alexander the Great visited the Milky Way. By the way, the Princess of Wales came too.",
                   help="text shown in the gate heatmap and the per-token LogitLens")
    p.add_argument("--cka-batch", type=positive_int, default=256, help="examples per CKA minibatch")
    p.add_argument("--tokens", choices=["all", "entities"], default="all", help="CKA token selection")
    p.add_argument("--probes", default=None, help="entity probe set for --tokens entities")
    add_common(p, out_is_dir=True)


def run(args: argparse.Namespace) -> int:
    from engram_interp.analysis import (
        ablation_sensitivity, cka_analysis, gate_corpus, gate_map, logit_lens, logit_lens_tokens,
    )
    from engram_interp.analysis.alignment import alignment_sentence, alignment_verdicts, reference_entry
    from engram_interp.commands._common import corpus_name
    from engram_interp.data.suites import read_suites, subsample_suites
    from engram_interp.findings import ablation_sentences, chance_level, gate_sentence, lens_sentences
    from engram_interp.io import check_output_dir
    from engram_interp.report import REPORT_FILES, write_report

    check_output_dir(args.out, REPORT_FILES, args.force)  # before the analyses, not after them
    texts = texts_from(args)
    suites = subsample_suites(read_suites(args.suites), args.max_items, args.seed) if args.suites else None
    seed_all(args.seed)
    paths = [args.ckpt_a, args.ckpt_b] + ([args.ckpt_control] if args.ckpt_control else [])
    models = load_models(paths, args.device, args.allow_nonfinite)
    names = names_for(paths)
    (a, b), (na, nb) = models[:2], names[:2]
    c, nc = (models[2], names[2]) if args.ckpt_control else (None, None)
    if not a.engram_layers:
        raise EngramInterpError(f"{args.ckpt_a} has no Engram layers; the report needs the Engram model first")
    if c is not None and not c.engram_layers:
        raise EngramInterpError(f"{args.ckpt_control} has no Engram layers; the third model must be the Engram-null control")
    check_text_fits(models, args.probe_text, "--probe-text")
    if suites:
        warn_overlong(models, suites)
    named = dict(zip(names, models))
    prog = not args.quiet
    say = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr))
    say("logit lens ...")
    lens = logit_lens(named, texts, batch_size=args.batch_size, max_tokens=args.max_tokens, progress=prog)
    tl = [logit_lens_tokens(m, args.probe_text, name=n) for n, m in named.items()]
    say("cka ...")
    cka_kw = dict(tokens=args.tokens, probes=args.probes, batch_size=args.cka_batch, max_tokens=args.max_tokens,
                  text_batch_size=args.batch_size, seed=args.seed, progress=prog)
    cka_texts = None if args.tokens == "entities" else texts
    cka = cka_analysis(a, b, cka_texts, names=(na, nb), **cka_kw)
    if c is not None:
        ref = cka_analysis(c, b, cka_texts, names=(nc, nb), k=cka.k, **cka_kw)
        cka.references["control"] = reference_entry(ref)
    say("gates ...")
    gm = [gate_map(a, args.probe_text, name=na)]
    gk = dict(batch_size=args.batch_size, max_tokens=args.max_tokens, progress=prog, seed=args.seed)
    gc = gate_corpus(a, texts, name=na, **gk)
    gc_control = gate_corpus(c, texts, name=nc, **gk) if c is not None else None
    abl = None
    if suites:
        say("ablation ...")
        abl = ablation_sensitivity(named, suites, seed=args.seed, progress=prog)
    findings = lens_sentences(lens.to_dict()["models"], na, nc, nb)
    findings += [f"CKA {na} vs {nb}: " + alignment_sentence(v, na, nb, cka.k) for v in alignment_verdicts(cka)]
    findings.append(gate_sentence(gc.to_dict(), na, None if gc_control is None else gc_control.to_dict(), nc))
    if abl is not None:
        tables = {m["name"]: {s: vars(sc) for s, sc in m["suites"].items()} for m in abl.models}
        findings += ablation_sentences(tables, {s: chance_level(items) for s, items in suites.items()}, [na], nc)
        findings.append(f"{nb}: no Engram layers, so it retains 100% by construction.")
    if c is None:
        findings.append("No Engram-null control was given (third checkpoint), so no difference above is established.")
    notes = [f"A = {args.ckpt_a}, B = {args.ckpt_b}" + (f", control C = {args.ckpt_control}" if c is not None else "")
             + f"; corpus {corpus_name(args)}, {lens.models[0].n_tokens} tokens; CKA on {cka.n_examples} {cka.tokens} "
             f"tokens; seed {args.seed}. Definitions: docs/ANALYSES.md."]
    source = {"corpus": corpus_name(args), "tokens": lens.models[0].n_tokens, "seed": args.seed}
    paths_out = write_report(args.out, title=f"engram-interp: {na} vs {nb}" + (f" (control {nc})" if c else ""),
                             lens=lens, token_lens=tl, cka=cka, gate_maps=gm, gates=gc, ablation=abl, notes=notes,
                             findings=findings, probe_text=args.probe_text, source=source,
                             extra_gates=[gc_control] if gc_control is not None else [], force=args.force)
    for line in findings:
        print("- " + line)
    print(f"wrote {paths_out['html']}, {paths_out['json']} and {len(paths_out['csv'])} CSV files")
    return 0
