"""engram-interp logit-lens CKPT [CKPT ...]: KL(p_final || q_layer) per layer for each model."""

from __future__ import annotations

import argparse

from engram_interp.commands._common import (
    add_common, add_corpus, check_out, check_text_fits, emit, fmt, load_models, names_for, positive_int, seed_all,
    source_dict, texts_from,
)

NAME = "logit-lens"
HELP = "LogitLens KL(p_final || q_layer) per layer of one or more models (nats)"
DESCRIPTION = (
    "For every layer point (residual stream entering each block, then the stream after the last block) "
    "decode with the model's own final norm (statistics recomputed) and unembedding and report the mean "
    "KL(p_final || q_layer) in nats over the corpus tokens (BOS excluded). The last layer must be ~0. "
    "JSON: {models: [{name, layers, kl, kl_sem, entropy, n_tokens}]}; --per-token adds a layer x position view of --text."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ckpts", nargs="+", help=".ckpt files")
    add_corpus(p)
    p.add_argument("--per-token", action="store_true", help="also compute the per-token view of --text (or the first text)")
    p.add_argument("--top-k", type=positive_int, default=5, help="top tokens per cell in the per-token view")
    add_common(p)


def run(args: argparse.Namespace) -> int:
    from engram_interp.analysis import logit_lens, logit_lens_tokens

    check_out(args)
    texts = texts_from(args)
    seed_all(args.seed)
    models = load_models(args.ckpts, args.device, args.allow_nonfinite)
    names = names_for(args.ckpts)
    if args.per_token:
        check_text_fits(models, texts[0], "--per-token text")
    res = logit_lens(dict(zip(names, models)), texts, batch_size=args.batch_size, max_tokens=args.max_tokens,
                     progress=not args.quiet)
    d = res.to_dict()
    if args.per_token:
        d["per_token"] = [logit_lens_tokens(m, texts[0], args.top_k, name=n).to_dict() for n, m in zip(names, models)]
    head = f"{'layer':>5}" + "".join(f"{n[:18]:>20}" for n in names)
    rows = [f"{l:>5}" + "".join(f"{fmt(m.kl[l]):>20}" for m in res.models) for l in range(max(len(m.kl) for m in res.models))
            if all(l < len(m.kl) for m in res.models)]
    foot = "tokens" + "".join(f"{m.n_tokens:>20}" for m in res.models)
    d = source_dict(d, args, res.models[0].n_tokens if res.models else 0)
    return emit(args, d, "KL(p_final || q_layer), nats\n" + "\n".join([head, *rows, foot]))
