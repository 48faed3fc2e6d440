"""engram-interp gates CKPT --text "..." | --corpus FILE: Engram gate values per token, layer and branch."""

from __future__ import annotations

import argparse

from engram_interp.commands._common import (
    add_common, add_corpus, check_out, emit, fmt, load_models, names_for, positive_int, seed_all, source_dict,
    texts_from,
)

NAME = "gates"
HELP = "Engram gate values per token/layer/branch for a text, or per suffix n-gram over a corpus"
DESCRIPTION = (
    "With --text: the gate alpha_t of every token at every Engram layer and branch "
    "(JSON: tokens, gates: {layer: [[per-branch values] per token]}). With --corpus (or the default corpus): "
    "count/mean/max per suffix 2- and 3-gram, the top and bottom n-grams seen at least --min-count times, "
    "and the branches' selectivity: eta^2 of the gate explained by 3-gram identity, next to a permutation "
    "baseline (n-gram labels shuffled, --perms shuffles) and omega^2 (bias-adjusted); channels ranked by omega^2. "
    "A channel tracks n-grams only when eta^2 beats every shuffle (docs/ANALYSES.md section 3)."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ckpt", help="an Engram model .ckpt")
    add_corpus(p)
    p.add_argument("--min-count", type=positive_int, default=3, help="minimum count of an n-gram in the top/bottom lists")
    p.add_argument("--top", type=positive_int, default=20, help="length of the top/bottom lists")
    p.add_argument("--perms", type=positive_int, default=19,
                   help="label shuffles of the selectivity's permutation baseline (default 19: p >= 0.05)")
    add_common(p)


def run(args: argparse.Namespace) -> int:
    from engram_interp.analysis import gate_corpus, gate_map

    check_out(args)
    texts = None if args.text is not None else texts_from(args)
    seed_all(args.seed)
    (model,) = load_models([args.ckpt], args.device, args.allow_nonfinite)
    name = names_for([args.ckpt])[0]
    if args.text is not None:
        g = gate_map(model, args.text, name=name)
        lines = [f"gates of {name} (layer.branch)", f"{'pos':>4} {'token':<16}" + "".join(
            f"{f'{l}.{b}':>8}" for l in g.layers for b in range(g.n_branches))]
        for i, t in enumerate(g.tokens):
            lines.append(f"{i:>4} {t!r:<16}" + "".join(f"{g.gates[l][i][b]:>8.3f}" for l in g.layers for b in range(g.n_branches)))
        return emit(args, source_dict(g.to_dict(), args, len(g.tokens)), "\n".join(lines))
    r = gate_corpus(model, texts, batch_size=args.batch_size, max_tokens=args.max_tokens,
                    min_count=args.min_count, top_n=args.top, progress=not args.quiet, name=name,
                    n_perm=args.perms, seed=args.seed)
    lines = [f"gates of {name} over {r.n_tokens} tokens, {r.n_ngrams} distinct n-grams (min count {r.min_count}); "
             f"selectivity over {r.selectivity_groups} 3-grams covering {r.selectivity_tokens} tokens",
             f"{'layer.branch':>12}{'mean gate':>11}{'eta^2':>8}{'shuffled mean/max':>19}{'p':>7}{'omega^2':>9}"]
    for c, ((l, b), m) in enumerate(zip(r.channels, r.mean_gate)):
        f = lambda xs: fmt(xs[c], ".3f") if xs else "-"  # noqa: E731
        lines.append(f"{f'{l}.{b}':>12}{m:>11.3f}{f(r.selectivity):>8}{f(r.selectivity_perm_mean) + '/' + f(r.selectivity_perm_max):>19}"
                     f"{f(r.selectivity_p):>7}{f(r.selectivity_omega2):>9}")
    best = r.branch_ranking[0]
    key = f"{best[0]}.{best[1]}"
    if r.tracks_ngrams[r.channels.index(best)]:
        lines.append(f"highest omega^2: layer {best[0]} branch {best[1]} (eta^2 beats all {r.n_perm} shuffles); top n-grams there:")
    else:
        lines.append(f"no channel's eta^2 is established above its permutation baseline; top n-grams of layer {best[0]} "
                     f"branch {best[1]} (highest omega^2):")
    for s in r.top.get(key, [])[:10]:
        lines.append(f"  {s.text!r:<30} count {s.count:>5}  mean {s.mean:.3f}  max {s.max:.3f}")
    return emit(args, source_dict(r.to_dict(), args, r.n_tokens), "\n".join(lines))
