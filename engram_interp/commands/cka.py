"""engram-interp cka A.ckpt [B.ckpt]: minibatch unbiased linear CKA between every pair of layers."""

from __future__ import annotations

import argparse

from engram_interp.commands._common import (
    add_common, add_corpus, check_out, corpus_name, emit, fmt, load_models, names_for, positive_int, seed_all,
    source_dict, texts_from,
)

NAME = "cka"
HELP = "minibatch unbiased linear CKA between the layers of two models (or one model with itself)"
DESCRIPTION = (
    "Hidden states (residual stream entering each block, then after the last block) of both models on the same "
    "tokens (BOS dropped, shuffled across sequences), minibatch unbiased linear CKA (Nguyen et al. 2021), "
    "bootstrap CIs over minibatches, the soft alignment index per layer of A (paper eq. 9) and the argmax. "
    "JSON keys: layers_a, layers_b, cka, soft_alignment, argmax, n_examples (+ ci_low, ci_high, noise_band)."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ckpt_a", help="model A (rows; the Engram model)")
    p.add_argument("ckpt_b", nargs="?", default=None, help="model B (columns; the baseline). Omit for A vs A")
    add_corpus(p)
    p.add_argument("--tokens", choices=["all", "entities"], default="all",
                   help="all tokens of the corpus, or the final token of each named entity of --probes")
    p.add_argument("--probes", default=None, help="entity probe set (default probes/entities_ner.jsonl)")
    p.add_argument("--cka-batch", type=positive_int, default=256, help="examples per CKA minibatch (default 256)")
    p.add_argument("--k", type=positive_int, default=None,
                   help="top-k of the soft alignment index (default: about 1/6 of B's layer points, at least 1)")
    p.add_argument("--noise", default=None, metavar="CKPT",
                   help="another seed of the baseline B: adds noise_band = diag CKA(B, noise) and the soft "
                        "alignment of noise vs B as a reference (references.noise)")
    p.add_argument("--control", default=None, metavar="CKPT",
                   help="the Engram-null control: its soft alignment vs B is the reference (references.control) "
                        "an Engram layer's shift must clear before it is called established (docs/ANALYSES.md s.2)")
    add_common(p)


def run(args: argparse.Namespace) -> int:
    from engram_interp.analysis import cka_analysis
    from engram_interp.analysis.alignment import alignment_sentence, alignment_verdicts, reference_entry

    check_out(args)
    seed_all(args.seed)
    extra = ([args.control] if args.control else []) + ([args.noise] if args.noise else [])
    paths = [args.ckpt_a] + ([args.ckpt_b] if args.ckpt_b else []) + extra
    texts = None if args.tokens == "entities" else texts_from(args)
    models = load_models(paths, args.device, args.allow_nonfinite)
    names = names_for(paths)
    a = models[0]
    b = models[1] if args.ckpt_b else None
    base, base_name = (b, names[1]) if b is not None else (a, names[0])
    kw = dict(tokens=args.tokens, probes=args.probes, batch_size=args.cka_batch, max_tokens=args.max_tokens,
              text_batch_size=args.batch_size, k=args.k, seed=args.seed, progress=not args.quiet)
    res = cka_analysis(a, b, texts, names=(names[0], names[1] if b is not None else names[0]), **kw)
    kw["k"] = res.k  # references use the same k
    if args.control:
        i = paths.index(args.control)
        res.references["control"] = reference_entry(cka_analysis(models[i], base, texts, names=(names[i], base_name), **kw))
    if args.noise:
        noise = cka_analysis(base, models[-1], texts, names=(base_name, names[-1]), **kw)
        res.noise_band = [noise.cka[i][i] for i in range(min(len(noise.cka), len(noise.cka[0])))]
        res.references["noise"] = reference_entry(cka_analysis(models[-1], base, texts, names=(names[-1], base_name), **kw))
    lines = [f"CKA {res.name_a} (rows) vs {res.name_b} (columns); {res.n_examples} {res.tokens} tokens of "
             f"{corpus_name(args)}, {res.n_batches} minibatches of <= {res.batch_size}; seed {args.seed}",
             "* = Engram layer of A; [low, high] = 95% bootstrap interval over minibatches; soft alignment with "
             f"k = {res.k} can only lie in {res.soft_alignment_range[0]:.1f}..{res.soft_alignment_range[1]:.1f} while CKA is flat"]
    lines.append("      " + "".join(f"{j:>6}" for j in res.layers_b) + "   soft alignment [95% CI]  argmax  CKA at diagonal [95% CI]")
    lo, hi = res.soft_alignment_ci
    for i, row in enumerate(res.cka):
        d = min(i, len(row) - 1)
        mark = "*" if i in res.engram_layers_a else " "
        soft = f"{fmt(res.soft_alignment[i], '.2f')} [{fmt(lo[i], '.2f')}, {fmt(hi[i], '.2f')}]"
        diag = f"{row[d]:.3f} [{res.ci_low[i][d]:.3f}, {res.ci_high[i][d]:.3f}]"
        lines.append(f"{i:>4}{mark} " + "".join(f"{v:>6.2f}" for v in row) + f"   {soft:<23} {res.argmax[i]:>6}  {diag}")
    for v in alignment_verdicts(res):
        lines.append(alignment_sentence(v, res.name_a, res.name_b, res.k))
    return emit(args, source_dict(res.to_dict(), args, res.n_examples), "\n".join(lines))
