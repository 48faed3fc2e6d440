"""engram-interp cka A.ckpt [B.ckpt]: minibatch unbiased linear CKA between every pair of layers."""

from __future__ import annotations

import argparse

from engram_interp.commands._common import (add_common, add_corpus, check_out, emit, load_models, names_for, positive_int,
                                            seed_all, texts_from)

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
    p.add_argument("--k", type=positive_int, default=None, help="top-k of the soft alignment index (default min(5, layers))")
    p.add_argument("--noise", default=None, metavar="CKPT",
                   help="another seed of the baseline B: adds noise_band = diag CKA(B, noise) as a reference")
    add_common(p)


def run(args: argparse.Namespace) -> int:
    from engram_interp.analysis import cka_analysis

    check_out(args)
    seed_all(args.seed)
    paths = [args.ckpt_a] + ([args.ckpt_b] if args.ckpt_b else []) + ([args.noise] if args.noise else [])
    texts = None if args.tokens == "entities" else texts_from(args)
    models = load_models(paths, args.device, args.allow_nonfinite)
    names = names_for(paths)
    a = models[0]
    b = models[1] if args.ckpt_b else None
    kw = dict(tokens=args.tokens, probes=args.probes, batch_size=args.cka_batch, max_tokens=args.max_tokens,
              text_batch_size=args.batch_size, k=args.k, seed=args.seed, progress=not args.quiet)
    res = cka_analysis(a, b, texts, names=(names[0], names[1] if b is not None else names[0]), **kw)
    if args.noise:
        base = b if b is not None else a
        noise = cka_analysis(base, models[-1], texts, names=(names[1] if b is not None else names[0], names[-1]), **kw)
        res.noise_band = [noise.cka[i][i] for i in range(min(len(noise.cka), len(noise.cka[0])))]
    lines = [f"CKA {res.name_a} (rows) vs {res.name_b} (columns); {res.n_examples} {res.tokens} tokens, "
             f"{res.n_batches} minibatches of <= {res.batch_size}"]
    lines.append("     " + "".join(f"{j:>6}" for j in res.layers_b) + "   soft  argmax")
    for i, row in enumerate(res.cka):
        sa = res.soft_alignment[i]
        lines.append(f"{i:>4} " + "".join(f"{v:>6.2f}" for v in row) + f"  {sa if sa == sa else float('nan'):>5.2f}  {res.argmax[i]:>5}")
    return emit(args, res.to_dict(), "\n".join(lines))
