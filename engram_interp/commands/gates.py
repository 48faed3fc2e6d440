"""engram-interp gates CKPT --text "..." | --corpus FILE: Engram gate values per token, layer and branch."""

from __future__ import annotations

import argparse

from engram_interp.commands._checks import check_models
from engram_interp.defaults import DEFAULTS
from engram_interp.commands._common import (
    add_common, add_corpus, add_seeds, add_twin, arm_groups, check_out, emit, findings_json, fmt, load_models, names_for,
    positive_int, seed_all, source_dict, texts_from, twin_of,
)

NAME = "gates"
DATA_PARALLEL = True  # under torchrun: token batches split across processes, n-gram tables merged
HELP = "Engram gate values per token/layer/branch for a text, or per suffix n-gram over a corpus"
DESCRIPTION = (
    "With --text: the gate alpha_t of every token at every Engram layer and branch "
    "(JSON: tokens, gates: {layer: [[per-branch values] per token]}). With --corpus (or the default corpus): "
    "count/mean/max per suffix 2- and 3-gram, the top and bottom n-grams seen at least --min-count times, "
    "and the branches' selectivity: eta^2 of the gate explained by 3-gram identity, next to a permutation "
    "baseline (n-gram labels shuffled, --perms shuffles) and omega^2 (bias-adjusted); channels ranked by omega^2. "
    "A channel tracks n-grams only when eta^2 beats every shuffle (docs/ANALYSES.md section 3). With --entities: "
    "the mean gate at the final token of each named entity of the probe set vs at the other tokens, per layer "
    "(JSON: layers, entity, other, contrast, n_entity, n_other). With several seeds (--seeds DIR or a,a-seed1) "
    "the corpus and --entities views add seed_bands (mean, min..max, t CI over seeds); the rest is the first seed's. "
    "Corpus view: JSON 'findings' holds the selectivity finding (verdict, sentence, controls); --twin computes the "
    "untrained twin's selectivity (JSON 'twin') and states the finding against it: a gate computed from the n-gram's "
    "own embedding tracks n-gram identity even untrained, so the label shuffle alone is no null."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ckpt", help="an Engram model .ckpt (comma-separated: its seeds)")
    add_corpus(p)
    p.add_argument("--min-count", type=positive_int, default=3, help="minimum count of an n-gram in the top/bottom lists")
    p.add_argument("--top", type=positive_int, default=20, help="length of the top/bottom lists")
    p.add_argument("--perms", type=positive_int, default=DEFAULTS.permutations,
                   help=f"label shuffles of the selectivity's permutation test (default {DEFAULTS.permutations}: p resolves "
                        f"1/{DEFAULTS.permutations + 1}; every relabelling instead when there are no more)")
    p.add_argument("--entities", action="store_true", help="entity-final vs other tokens of the entity probe set")
    p.add_argument("--probes", default=None, help="entity probe set for --entities (default probes/entities_ner.jsonl)")
    add_seeds(p)
    add_twin(p)
    add_common(p)


def run(args: argparse.Namespace) -> int:
    from engram_interp.analysis import gate_corpus, gate_map

    check_out(args)
    seed_all(args.seed)
    [(arm, paths)] = arm_groups([args.ckpt], args.seeds)
    if args.entities:
        return _entities(args, arm, paths)
    texts = None if args.text is not None else texts_from(args)
    (model,) = load_models(paths[:1], args)
    name = names_for(paths)[0]
    check_models([model], [name], what="gate statistics", engram="all")
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
    d = source_dict(r.to_dict(), args, r.n_tokens)
    twin = None
    if args.twin:
        tn, tw = twin_of(model, name, args.seed)
        twin = gate_corpus(tw, texts, batch_size=args.batch_size, max_tokens=args.max_tokens, min_count=args.min_count,
                           top_n=args.top, progress=not args.quiet, name=tn, n_perm=args.perms, seed=args.seed).to_dict()
        d["twin"] = twin
    from engram_interp.claims.sentences import gate_sentence

    found = [gate_sentence(r.to_dict(), name, twin=twin)]
    d["findings"] = findings_json(found)
    if len(paths) > 1:
        from engram_interp.analysis.seeds import bands

        runs = [r]
        for p, n in zip(paths[1:], names_for(paths)[1:]):
            (m,) = load_models([p], args)
            runs.append(gate_corpus(m, texts, batch_size=args.batch_size, max_tokens=args.max_tokens,
                                    min_count=args.min_count, top_n=args.top, progress=not args.quiet, name=n,
                                    n_perm=args.perms, seed=args.seed))
        d["seed_bands"] = {"arm": arm, "seeds": [x.name for x in runs], "channels": r.channels,
                           "mean_gate": [x and x.to_dict() for x in bands([x.mean_gate for x in runs])],
                           "selectivity": [x and x.to_dict() for x in bands([x.selectivity for x in runs])]}
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
        lines.append(f"highest omega^2: layer {best[0]} branch {best[1]} (permutation p = {fmt(r.selectivity_p[r.channels.index(best)], '.3g')} "
                     f"<= {DEFAULTS.alpha} over {r.n_perm} {'relabellings, exact' if r.selectivity_exact else 'shuffles'}); top n-grams there:")
    elif r.too_few:
        lines.append(f"selectivity: {r.too_few}; top n-grams of layer {best[0]} branch {best[1]} (highest omega^2):")
    else:
        lines.append(f"no channel's eta^2 is established above its permutation baseline; top n-grams of layer {best[0]} "
                     f"branch {best[1]} (highest omega^2):")
    for s in r.top.get(key, [])[:10]:
        lines.append(f"  {s.text!r:<30} count {s.count:>5}  mean {s.mean:.3f}  max {s.max:.3f}")
    lines += [f.sentence for f in found]
    return emit(args, d, "\n".join(lines))


def _entities(args, arm: str, paths: list[str]) -> int:
    from engram_interp.analysis.gate_contrast import entity_gate_contrast
    from engram_interp.analysis.seeds import bands

    runs = []
    for p, n in zip(paths, names_for(paths)):
        (m,) = load_models([p], args)
        runs.append(entity_gate_contrast(m, args.probes, batch_size=args.batch_size, max_tokens=args.max_tokens, name=n))
    r = runs[0]
    d = source_dict(r.to_dict(), args, r.n_entity + r.n_other)
    if args.twin:
        (m,) = load_models(paths[:1], args)
        tn, tw = twin_of(m, r.name, args.seed)
        d["twin"] = entity_gate_contrast(tw, args.probes, batch_size=args.batch_size, max_tokens=args.max_tokens,
                                         name=tn).to_dict()
        del m, tw
    lines = [f"gate at entity-final tokens vs other tokens ({r.n_entity} / {r.n_other} tokens), gate units",
             f"{'seed':<20}{'layer':>6}{'entity':>9}{'other':>9}{'contrast':>10}"]
    for x in runs:
        for l, e, o, c in zip(x.layers, x.entity, x.other, x.contrast):
            lines.append(f"{x.name[:19]:<20}{l:>6}{e:>9.3f}{o:>9.3f}{c:>10.3f}")
    if len(runs) > 1:
        cb = bands([x.contrast for x in runs])
        d["seed_bands"] = {"arm": arm, "seeds": [x.name for x in runs], "layers": r.layers,
                           "contrast": [x and x.to_dict() for x in cb],
                           "entity": [x and x.to_dict() for x in bands([x.entity for x in runs])],
                           "other": [x and x.to_dict() for x in bands([x.other for x in runs])]}
        lines += [f"across {len(runs)} seeds, contrast layer {l}: {b.mean:.3f} [{b.low:.3f}, {b.high:.3f}]"
                  for l, b in zip(r.layers, cb) if b]
    return emit(args, d, "\n".join(lines))
