"""engram-interp logit-lens CKPT [CKPT ...]: KL(p_final || q_layer) per layer for each model."""

from __future__ import annotations

import argparse

from engram_interp.commands._common import (
    add_common, add_corpus, add_seeds, add_twin, arm_groups, check_out, check_text_fits, emit, findings_json, fmt,
    load_models, names_for, positive_int, seed_all, source_dict, texts_from, twin_of,
)

NAME = "logit-lens"
DATA_PARALLEL = True  # under torchrun: token batches split across processes, accumulators all-reduced
HELP = "LogitLens KL(p_final || q_layer) per layer of one or more models (nats)"
DESCRIPTION = (
    "For every layer point (residual stream entering each block, then the stream after the last block) "
    "decode with the model's own final norm (statistics recomputed) and unembedding and report the mean "
    "KL(p_final || q_layer) in nats over the corpus tokens (BOS excluded). The last layer must be ~0. "
    "JSON: {models: [{name, layers, kl, kl_sem, entropy, n_tokens}]}; --per-token adds a layer x position view of --text; "
    "with several seeds of an arm (--seeds DIR or a.ckpt,a-seed1.ckpt) it adds seed_bands: "
    "{arm: {seeds, layers, kl: [{mean, low, high, sd, ci, n, values}]}}. --twin adds the untrained twin of the first "
    "model (NAME~twin). When the first model has Engram layers, JSON 'findings' states its early-layer KL against the "
    "twin and the third model (the Engram-null control; the second is the baseline), as the report does."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ckpts", nargs="+", help=".ckpt files (comma-separated paths: the seeds of one arm)")
    add_corpus(p)
    p.add_argument("--per-token", action="store_true", help="also compute the per-token view of --text (or the first text)")
    p.add_argument("--top-k", type=positive_int, default=5, help="top tokens per cell in the per-token view")
    add_seeds(p)
    add_twin(p)
    add_common(p)


def run(args: argparse.Namespace) -> int:
    from engram_interp.analysis import logit_lens, logit_lens_tokens
    from engram_interp.analysis.seeds import lens_bands

    check_out(args)
    texts = texts_from(args)
    seed_all(args.seed)
    groups = arm_groups(args.ckpts, args.seeds)
    paths = [p for _, ps in groups for p in ps]
    models = load_models(paths, args)
    names = names_for(paths)
    if args.per_token:
        check_text_fits(models, texts[0], "--per-token text")
    analysed = dict(zip(names, models))
    if args.twin:
        analysed.update([twin_of(models[0], names[0], args.seed)])
        names = list(analysed)
    res = logit_lens(analysed, texts, batch_size=args.batch_size, max_tokens=args.max_tokens,
                     progress=not args.quiet)
    d = res.to_dict()
    if args.per_token:
        d["per_token"] = [logit_lens_tokens(m, texts[0], args.top_k, name=n).to_dict() for n, m in zip(names, models)]
    head = f"{'layer':>5}" + "".join(f"{n[:18]:>20}" for n in names)
    rows = [f"{l:>5}" + "".join(f"{fmt(m.kl[l]):>20}" for m in res.models) for l in range(max(len(m.kl) for m in res.models))
            if all(l < len(m.kl) for m in res.models)]
    foot = "tokens" + "".join(f"{m.n_tokens:>20}" for m in res.models)
    table = "KL(p_final || q_layer), nats\n" + "\n".join([head, *rows, foot])
    if any(len(ps) > 1 for _, ps in groups):
        it = iter(names)
        bands = lens_bands(res, {arm: [next(it) for _ in ps] for arm, ps in groups})
        d["seed_bands"] = bands
        lines = ["across seeds: mean [min, max] (n seeds)"]
        for arm, b in bands.items():
            lines.append(f"{arm:<18}" + "  ".join(f"L{l} {x['mean']:.3f} [{x['low']:.3f}, {x['high']:.3f}]"
                                                    for l, x in zip(b["layers"], b["kl"]) if x) + f"  (n={len(b['seeds'])})")
        table += "\n" + "\n".join(lines)
    if models[0].engram_layers:
        from engram_interp.claims.sentences import lens_sentences

        roles = [names[paths.index(ps[0])] for _, ps in groups]  # the first seed of each arm: A, B, C
        found = lens_sentences(d["models"], roles[0], roles[2] if len(roles) > 2 else None,
                               roles[1] if len(roles) > 1 else None)
        d["findings"] = findings_json(found)
        table += "\n" + "\n".join(f.sentence for f in found)
    d = source_dict(d, args, res.models[0].n_tokens if res.models else 0)
    return emit(args, d, table)
